# Fire hydrant node: pressure (BTHome 0x04), outlet opened (0x11), tamper (0x2B), tilt (0x3F).
