# Tilt of the cover from the accelerometer: the angle between gravity now and gravity when the
# cover was installed closed (the reference), so a cover set slightly off level reads 0.

import math

MIN_G = 0.3  # below this |a| the reading is not gravity (free fall, sensor fault): no angle


def magnitude(v):
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def tilt_deg(accel, reference=(0.0, 0.0, 1.0)):
    """Angle in degrees (0..180) between `accel` and `reference` (any units, same for both).

    Returns None when the acceleration is too small to be gravity.
    """
    ma = magnitude(accel)
    mr = magnitude(reference)
    if ma < MIN_G or mr < MIN_G:
        return None
    dot = accel[0] * reference[0] + accel[1] * reference[1] + accel[2] * reference[2]
    # atan2(|a x r|, a.r) keeps precision near 0 and 180 degrees, where acos does not.
    cx = accel[1] * reference[2] - accel[2] * reference[1]
    cy = accel[2] * reference[0] - accel[0] * reference[2]
    cz = accel[0] * reference[1] - accel[1] * reference[0]
    return math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), dot) * 180.0 / math.pi
