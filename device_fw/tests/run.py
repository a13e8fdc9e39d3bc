# Test runner for the firmware tests, under MicroPython: `micropython run.py test_module [test]`.
# Each test runs with fresh hardware stand-ins. Prints "ok <name>" / "FAIL <name>" + traceback.

import os
import sys

import bluetooth
import esp32
import machine


def clean_files():
    for name in ("counter.dat", "counter.dat.tmp", "error.log"):
        try:
            os.remove(name)
        except OSError:
            pass


def main():
    mod_name = sys.argv[1]
    only = sys.argv[2] if len(sys.argv) > 2 else None
    mod = __import__(mod_name)
    names = [n for n in dir(mod) if n.startswith("test_") and (only is None or n == only)]
    if not names:
        print("no tests matched")
        sys.exit(2)
    failed = 0
    for name in sorted(names):
        machine.SIM.reset()
        del bluetooth.ADVERTS[:]
        del esp32.WAKE[:]
        del esp32.ARMED[:]
        clean_files()
        try:
            getattr(mod, name)()
            print("ok", name)
        except Exception as e:
            failed += 1
            print("FAIL", name)
            sys.print_exception(e)
    sys.exit(1 if failed else 0)


main()
