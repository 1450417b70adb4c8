"""Ctrl-C while modules load: importing numba, torch or the codec takes a second or more on a busy machine, and a
KeyboardInterrupt raised inside an import would print a long traceback. Until the command itself runs (from then
on ``common.friendly`` handles Ctrl-C), it ends the process with one line."""
from __future__ import annotations

import contextlib
import os
import signal


def _while_loading(signum, frame):
    os.write(2, b"interrupted\n")
    os._exit(130)


@contextlib.contextmanager
def interrupts_end_quietly():
    """Inside the block Ctrl-C ends the process with one line (exit 130), where Ctrl-C has its default handler
    (not where it is ignored on purpose, nor in another thread)."""
    try:
        ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if ours:
            signal.signal(signal.SIGINT, _while_loading)
    except ValueError:  # not the main thread
        ours = False
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)
