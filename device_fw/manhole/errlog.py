# Error log of a node that cannot run (bad config, sensor missing, BLE failure), shared by every
# build's main.py: the traceback goes to error.log, which never grows past ERROR_LOG_MAX plus one
# traceback, so a node retrying every 10 minutes for months cannot fill its flash.

import sys

ERROR_LOG = "error.log"
ERROR_LOG_MAX = 4096


def _cap(path, max_bytes):
    import os

    try:
        if os.stat(path)[6] > max_bytes:
            os.remove(path)  # start afresh: the newest failure is the one worth reading
    except OSError:
        pass


def log_error(exc, path=ERROR_LOG, max_bytes=ERROR_LOG_MAX):
    _cap(path, max_bytes)
    try:
        with open(path, "a") as f:
            sys.print_exception(exc, f)
    except OSError:
        pass  # flash full or read-only: nothing more to do


def log_line(text, path=ERROR_LOG, max_bytes=ERROR_LOG_MAX):
    """One line about something the node went on despite (its counter file missing), same cap."""
    _cap(path, max_bytes)
    try:
        with open(path, "a") as f:
            f.write(text + "\n")
    except OSError:
        pass
