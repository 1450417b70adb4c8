"""What every speed bench here shares: the competitor set up as a user would (newest tiktoken, its fastest path), the
two sides alternated in small chunks in one process, and the versions printed beside the figures.

Alternating chunk by chunk (tfree on chunk 1, tiktoken on chunk 1, tiktoken on chunk 2, tfree on chunk 2, ...)
means a moment of load elsewhere on the machine hits both sides about equally, which timing one side after the other
does not. Times are the sum over a pass of each side's chunks, measured with the wall clock; the best of the
passes is reported.
"""
from __future__ import annotations

import lzma
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared beside the clone (or beside the folder of worktrees it is in), or $TFREE_DATA
SHARED = next((p for p in (os.path.join(ROOT, "..", "shared"), os.path.join(ROOT, "..", "..", "shared"))
               if os.path.isdir(p)), os.path.join(ROOT, "..", "shared"))
DATA = os.environ.get("TFREE_DATA", os.path.join(SHARED, "data"))
LANGUAGES = ["english_prose", "mono_de", "mono_es", "mono_fr", "mono_ja", "mono_ru", "mono_zh"]


def load(name: str) -> str:
    """A corpus of ``DATA`` by name (``english_prose``), or any text file by path."""
    path = name if os.path.isfile(name) else os.path.join(DATA, f"{name}.txt.xz")
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return f.read()


def lines(text: str) -> list[str]:
    """The documents of ``--split lines``: non-blank lines, without a trailing CR."""
    return [p[:-1] if p[-1] == "\r" else p for p in text.split("\n") if p.strip()]


def tiktoken_encoding(name: str = "cl100k_base"):
    """A tiktoken encoding with no network: rank files from ../shared/tools/tiktoken_offline.sh, cached in
    bench/.cache (TIKTOKEN_CACHE_DIR) the first time."""
    cache = os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(ROOT, "bench", ".cache", "tiktoken"))
    if not os.path.isdir(cache) or not os.listdir(cache):
        subprocess.run(["bash", os.path.join(SHARED, "tools", "tiktoken_offline.sh"), cache], check=True,
                       env={**os.environ, "PYTHON": sys.executable})
    import tiktoken

    enc = tiktoken.get_encoding(name)
    enc.encode_ordinary("load the ranks first")
    return enc


def tiktoken_paths(enc) -> dict:
    """tiktoken's ways to encode a list of texts on one thread: a loop of ``encode_ordinary``, and
    ``encode_ordinary_batch(num_threads=1)``."""
    return {"encode_ordinary loop": lambda texts: [enc.encode_ordinary(t) for t in texts],
            "encode_ordinary_batch(num_threads=1)": lambda texts: enc.encode_ordinary_batch(texts, num_threads=1)}


def fastest(paths: dict, texts: list[str], rounds: int = 3) -> tuple[str, object]:
    """The (name, function) of ``paths`` that is fastest on ``texts`` (alternated, best of ``rounds``)."""
    best = alternate({k: (lambda f=f: f) for k, f in paths.items()}, chunks(texts, 1 << 17), rounds)
    name = min(best, key=best.get)
    return name, paths[name]


def chunks(texts: list[str], size: int = 1 << 18) -> list[list[str]]:
    """``texts`` cut into consecutive chunks of about ``size`` characters."""
    out, cur, n = [], [], 0
    for t in texts:
        cur.append(t)
        n += len(t)
        if n >= size:
            out.append(cur)
            cur, n = [], 0
    return out + ([cur] if cur else [])


def alternate(makers: dict, parts: list, passes: int = 3) -> dict[str, float]:
    """Seconds per side: ``makers[name]()`` gives a function that is called on every part in turn (a fresh one each
    pass, e.g. a new lexicon); the sides take turns on each part, the order flipping from part to part. Returns
    the best pass of each side."""
    best = {k: float("inf") for k in makers}
    for _ in range(passes):
        fns = {k: make() for k, make in makers.items()}
        spent = dict.fromkeys(makers, 0.0)
        order = list(makers)
        for part in parts:
            for k in order:
                t0 = time.perf_counter()
                fns[k](part)
                spent[k] += time.perf_counter() - t0
            order.reverse()
        for k in makers:
            best[k] = min(best[k], spent[k])
    return best


def versions() -> str:
    """One line: the machine and the versions of everything compared."""
    from importlib.metadata import PackageNotFoundError, version

    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "absent"

    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "?"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"tfree {v('tfree-codec')} (git {rev}), tiktoken {v('tiktoken')}, numba {v('numba')}, numpy {v('numpy')}, "
            f"pyarrow {v('pyarrow')}; load average {os.getloadavg()[0]:.2f}")
