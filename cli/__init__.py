"""The ``tfree`` command line: a thin click layer over ``tfree_codec``. Installed as the ``tfree_cli`` package."""
import os as _os
import signal as _signal


def _interrupted_while_starting(signum, frame):
    # Ctrl-C while Python imports the CLI (a second or more on a busy machine: numba, pyarrow) would print a
    # KeyboardInterrupt traceback from deep inside an import: one line instead. Nothing has been written yet.
    _os.write(2, b"interrupted\n")
    _os._exit(130)


def _started() -> None:
    """The CLI is imported (end of ``main.py``): Python's own Ctrl-C handling again, which ``friendly`` builds on."""
    try:
        if _signal.getsignal(_signal.SIGINT) is _interrupted_while_starting:
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    except ValueError:  # not the main thread
        pass


try:
    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:  # left alone where ignored (nohup, &)
        _signal.signal(_signal.SIGINT, _interrupted_while_starting)
except ValueError:  # imported outside the main thread
    pass
