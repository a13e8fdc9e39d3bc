# Error log of a node that cannot run (bad config, sensor missing, BLE failure), shared by every
# build's main.py: the traceback goes to error.log, which never grows past ERROR_LOG_MAX plus one
# traceback, so a node retrying every 10 minutes for months cannot fill its flash.

import sys

ERROR_LOG = "error.log"
ERROR_LOG_MAX = 4096


def log_error(exc, path=ERROR_LOG, max_bytes=ERROR_LOG_MAX):
    _append(lambda f: sys.print_exception(exc, f), path, max_bytes)


def log_message(text, path=ERROR_LOG, max_bytes=ERROR_LOG_MAX):
    """One line about something the node went on despite (a sensor fault, its counter file
    missing), under the same cap."""
    _append(lambda f: f.write(text[:512] + "\n"), path, max_bytes)


def _append(write, path, max_bytes):
    import os

    try:
        if os.stat(path)[6] > max_bytes:
            os.remove(path)  # start afresh: the newest failure is the one worth reading
    except OSError:
        pass
    try:
        with open(path, "a") as f:
            write(f)
    except OSError:
        pass  # flash full or read-only: nothing more to do
