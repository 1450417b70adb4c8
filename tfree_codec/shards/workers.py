"""The worker processes of ``tfree encode``.

They are spawned with Ctrl-C blocked and with stdout and stderr pointed at /dev/null, so a Ctrl-C at the terminal reaches only the main process, which stops them
itself (no worker prints a traceback); they die with the main process (``PR_SET_PDEATHSIG`` on Linux, and a thread
that watches the parent everywhere), so a killed ``tfree encode`` leaves nothing behind that holds the caller's
stdout and stderr (``tfree encode ... | cat`` ends); and a job that stops early kills them mid-shard rather than
waiting for their shards (their temporary files go; finished shards are whole and are kept).
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from ..config import CodecConfig
from ..text.markers import MARKERS
from .lexicon import Merger, encode_documents
from ..codec import codec_for

PARENT_POLL_S = 0.2


def _init(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C; finished shards stay valid
    if sys.platform.startswith("linux"):
        try:
            import ctypes  # noqa: PLC0415

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl: the watcher below still ends the worker
            pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def warm_up(config: CodecConfig) -> None:
    """Load the kernels a shard needs: numba loads each from its on-disk cache (or compiles it, on the first run
    after install) on its first call, so make those calls before real work arrives."""
    encode_documents(codec_for(config), ["Warm-up text, long enough for the kernels: Grüße, naïve café. " * 6])
    Merger().add(list(MARKERS) + ["warm", "up"])


def start_pool(n: int, config: CodecConfig) -> ProcessPoolExecutor:
    """``n`` spawned workers, all started now (each warms up its kernels) with SIGINT blocked: a blocked signal
    stays blocked across exec, so a Ctrl-C never lands in a worker's interpreter start-up. A Ctrl-C that arrives
    meanwhile is delivered to this process when the mask is restored."""
    block = hasattr(signal, "pthread_sigmask")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if block else None
    try:
        with _quiet_stdio():
            pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                                       initargs=(os.getpid(),))
            for _ in range(n):  # a spawn pool starts one process per submit while none is idle: all n start here
                pool.submit(warm_up, config)
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return pool


@contextlib.contextmanager
def _quiet_stdio():
    """Point fds 1 and 2 at /dev/null while the workers (and multiprocessing's resource tracker) are spawned: they
    inherit them, and a child that holds the caller's stdout or stderr keeps a pipeline (``tfree encode ... |
    cat``) waiting after this process is killed. Workers print nothing (errors travel back as exceptions)."""
    try:
        for f in (sys.stdout, sys.stderr):
            f.flush()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError, AttributeError):  # no real descriptors: nothing to hide
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (null, *saved):
            os.close(fd)


def stop_pool(pool: ProcessPoolExecutor, finished: bool) -> list[int]:
    """Shut the pool down: after a finished job, let the idle workers exit; otherwise (an error, Ctrl-C) kill them
    now. Returns the workers' pids (their temporary files are theirs to remove)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pids = [p.pid for p in procs if p.pid]
    if finished:
        pool.shutdown(wait=True)
        return pids
    for p in procs:
        try:
            p.kill()
        except (OSError, ValueError):  # already gone
            pass
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        try:
            p.join(1.0)
        except (OSError, ValueError, AssertionError):
            pass
    return pids
