# Bed-foot node: a pressure strip under the foot of the mattress, BTHome v2 occupancy (0x23).
