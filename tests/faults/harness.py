"""The fault suite's one check: a command that meets a fault exits non-zero with exactly one line on stderr, no
traceback, and leaves the user's files as they were and no temporary or half-written file behind."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

from conftest import cli  # noqa: F401  (run tfree ARGS in this process: torch and numba are already loaded)

LEFTOVERS = (".tmp-", ".old-", ".tfree-partial")


# A test's child starts with SIGINT at its default, as from a terminal: when the suite runs as a background job
# (`(pytest &)`), SIGINT is inherited as ignored, and tfree rightly leaves it ignored, so a test's Ctrl-C would
# never arrive. The child resets it and execs the command (same pid: signals sent to it reach the command).
_SIGINT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
_children: list = []


def spawn(*args, cwd=None, python=False, stdout=subprocess.PIPE) -> subprocess.Popen:
    """Start ``tfree ARGS`` (or ``python ARGS`` with ``python=True``) with SIGINT at its default; stdout (unless
    given: a file) and stderr piped as text. Every child still running when its test ends is killed (conftest.py:
    ``reap_children``)."""
    argv = [*map(str, args)] if python else ["-m", "tfree_cli", *map(str, args)]
    p = subprocess.Popen([sys.executable, "-c", _SIGINT_DEFAULT, *argv], cwd=cwd,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=stdout, stderr=subprocess.PIPE,
                         text=True)
    _children.append(p)
    return p


def reap() -> None:
    """Kill the children a test left running (one that missed its deadline, or a failed assertion before its
    end): a leaked ``tfree eval`` once ran on for 11 minutes."""
    while _children:
        p = _children.pop()
        if p.poll() is None:
            p.kill()
        try:
            p.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass


def tfree(*args, timeout=60, cwd=None, sigint_after=None):
    """Run ``tfree ARGS`` in a subprocess; with ``sigint_after`` seconds (or a function that says when), send it
    SIGINT then and time how long it takes to exit. -> (returncode, stdout, stderr, seconds from the SIGINT to the
    exit). A child that misses its deadline is killed."""
    p = spawn(*args, cwd=cwd)
    lag = None
    try:
        if callable(sigint_after):  # wait for a moment the test names (e.g. a checkpoint exists), then a little more
            t_end = time.monotonic() + timeout
            while not sigint_after() and p.poll() is None and time.monotonic() < t_end:
                time.sleep(0.05)
            sigint_after = 0.3
        if sigint_after is not None:
            try:
                p.wait(sigint_after)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)
                t0 = time.monotonic()
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
                lag = time.monotonic() - t0
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return p.returncode, out, err, lag
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def stderr_of(r) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a CliRunner result or a ``tfree`` tuple; a library exception that escaped
    the CLI counts as a traceback."""
    if isinstance(r, tuple):
        return r[0], r[1], r[2]
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback  # noqa: PLC0415

        return r.exit_code, r.stdout, "Traceback (escaped the CLI):\n" + "".join(
            traceback.format_exception(type(r.exception), r.exception, r.exception.__traceback__))
    return r.exit_code, r.stdout, r.stderr


def assert_refused(r, *words):
    """Non-zero exit, exactly one line on stderr (naming each of ``words``), no traceback anywhere."""
    code, out, err = stderr_of(r)
    assert "Traceback" not in err + out, err
    # click's usage errors (exit 2) put "Usage: ..." and "Try '... --help'" above their one Error: line
    lines = [ln for ln in err.splitlines() if ln.strip() and not (code == 2 and ln.startswith(("Usage:", "Try ")))]
    assert code not in (0, None), (code, out, err)
    assert len(lines) == 1, err
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


def snapshot(root) -> dict:
    """sha256 of every file under root (the user's files, to compare after)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def assert_kept(before: dict, root):
    """Every file of ``before`` is still there, byte for byte."""
    now = snapshot(root)
    lost = sorted(f for f in before if f not in now)
    changed = sorted(f for f in before if f in now and now[f] != before[f])
    assert not lost and not changed, f"lost {lost}, changed {changed}"


def assert_no_leftovers(root):
    """No temporary or half-written file or folder anywhere under root."""
    left = [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files
            if n.startswith(LEFTOVERS)]
    assert not left, left


def flip_bit(path, rng) -> tuple[int, int]:
    """Flip one random bit of the file; -> (offset, bit)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    off, bit = rng.randrange(len(data)), rng.randrange(8)
    data[off] ^= 1 << bit
    with open(path, "wb") as f:
        f.write(data)
    return off, bit


def truncate(path, frac: float) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * frac))
