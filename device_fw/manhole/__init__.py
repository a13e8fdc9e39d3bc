# CityNerve manhole-cover node firmware (MicroPython, ESP32 class).
# Shares the BTHome v2 wire format with the gateway's drivers/bthome, never its code.
