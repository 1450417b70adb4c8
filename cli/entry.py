"""The ``tfree`` executable. Loading the click group is quick (the commands' modules load when one runs, see
``main``); a Ctrl-C meanwhile ends the process with one line (``loading``)."""
from __future__ import annotations

from .loading import interrupts_end_quietly


def run() -> None:
    with interrupts_end_quietly():
        from .main import main  # noqa: PLC0415
    main(prog_name="tfree")
