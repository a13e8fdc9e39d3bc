import math

from manhole.tilt import tilt_deg


def close(a, b, tol=0.05):
    assert abs(a - b) <= tol, "%r != %r" % (a, b)


def test_level_is_zero():
    close(tilt_deg((0.0, 0.0, 1.0)), 0.0)


def test_known_angles():
    for deg in (1, 5, 10, 30, 45, 60, 89, 90, 120, 179):
        r = deg * math.pi / 180
        close(tilt_deg((math.sin(r), 0.0, math.cos(r))), deg)
        close(tilt_deg((0.0, -math.sin(r), math.cos(r))), deg)


def test_upside_down_is_180():
    close(tilt_deg((0.0, 0.0, -1.0)), 180.0)


def test_magnitude_does_not_matter():
    close(tilt_deg((0.5, 0.0, 0.5)), 45.0)
    close(tilt_deg((1.3, 0.0, 1.3)), 45.0)


def test_reference_vector_from_installation():
    # Cover installed 3 deg off level: that is its zero.
    r = 3 * math.pi / 180
    ref = (math.sin(r), 0.0, math.cos(r))
    close(tilt_deg(ref, ref), 0.0)
    r2 = 13 * math.pi / 180
    close(tilt_deg((math.sin(r2), 0.0, math.cos(r2)), ref), 10.0)


def test_free_fall_gives_no_angle():
    assert tilt_deg((0.01, 0.02, 0.05)) is None


def test_small_angles_keep_precision():
    # acos would lose this near 1.0; atan2 does not.
    r = 0.05 * math.pi / 180
    close(tilt_deg((math.sin(r), 0.0, math.cos(r))), 0.05, 0.001)
