"""The ``tfree`` executable. Importing the commands loads numba and, for some, torch: a second or more on a busy
machine. A Ctrl-C in that window would print a long import traceback, so until the commands are loaded it ends
the process with one line; from then on ``common.friendly`` handles it."""
from __future__ import annotations

import os
import signal


def _while_loading(signum, frame):
    os.write(2, b"interrupted\n")
    os._exit(130)


def run() -> None:
    ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not where Ctrl-C is ignored on purpose
    if ours:
        signal.signal(signal.SIGINT, _while_loading)
    from .main import main  # noqa: PLC0415

    if ours:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    main(prog_name="tfree")
