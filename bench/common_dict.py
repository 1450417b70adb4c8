"""The benchmark dictionaries: the N most frequent words of all the corpora (counted once, then cached), for any N.

The corpora (../shared/data/*.txt.xz, decompressed into /tmp) hold 345,250 distinct words: a size above that gives
all of them."""
from __future__ import annotations

import os
import pathlib
import pickle
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfree_codec import Codec  # noqa: E402
from tfree_codec.config import atomic_write  # noqa: E402
from tfree_codec.decode.dictionary import Dictionary, count_words  # noqa: E402

CORPORA = ["english_prose", "mono_de", "mono_es", "mono_fr", "mono_ja", "mono_ru", "mono_zh"]
DEFAULT_PATHS = [f"/tmp/{c}.txt" for c in CORPORA]
DEFAULT_DICT = "/tmp/tfree-bench-dict-all-100k.arrow"


def add_args(ap) -> None:
    ap.add_argument("--corpora", nargs="+", default=DEFAULT_PATHS, help="UTF-8 text files (decompressed corpora)")
    ap.add_argument("--dict", default=DEFAULT_DICT, help="cached dictionary (built from --corpora if missing)")
    ap.add_argument("--max-words", type=int, default=100_000)


def load_dictionary(args) -> Dictionary:
    return dictionary(args.max_words, args.corpora, args.dict)


def dictionary(max_words: int, corpora=DEFAULT_PATHS, path: str | None = None) -> Dictionary:
    """The ``max_words`` most frequent words of ``corpora`` (and the markers), cached at ``path``."""
    path = path or dictionary_path(max_words, corpora)
    codec = Codec()
    if os.path.exists(path):
        d = Dictionary.load(path, codec)
        if len(d) - 16 <= max_words:  # built here for this size (fewer: the corpora hold no more words)
            print(f"dictionary: {path} ({len(d):,} words)")
            return d
    t0 = time.perf_counter()
    d = Dictionary.from_counts(codec, counts(corpora), max_words=max_words)
    d.save(path)
    print(f"dictionary: built {path} ({len(d):,} words) from {len(corpora)} corpora in {time.perf_counter() - t0:.0f} s")
    return d


def dictionary_path(max_words: int, corpora=DEFAULT_PATHS) -> str:
    return f"/tmp/tfree-bench-dict-{_key(corpora)}-{max_words // 1000}k.arrow"


def counts(corpora):
    """Word counts of the corpora, counted once (cached in /tmp)."""
    path = f"/tmp/tfree-bench-counts-{_key(corpora)}.pkl"
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    c = count_words(Codec(), [pathlib.Path(p) for p in corpora], progress=True)
    atomic_write(path, pickle.dumps(c))
    return c


def _key(corpora) -> str:
    """A short name for a list of corpora (the file stems joined, or "all" for the default seven)."""
    stems = [os.path.basename(p).split(".")[0] for p in corpora]
    return "all" if list(corpora) == DEFAULT_PATHS else "+".join(stems)


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import numba  # noqa: PLC0415
    import numpy  # noqa: PLC0415

    from tfree_codec import __version__  # noqa: PLC0415
    return (f"{model}, {os.cpu_count()} cores (load average {load:.1f} at start); numba {numba.__version__}, numpy "
            f"{numpy.__version__}, tfree_codec {__version__} ({_head()})")


def _head() -> str:
    """The git commit of the code measured (and whether it has uncommitted changes)."""
    import subprocess  # noqa: PLC0415

    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git"
    return f"commit {head}" + (", with uncommitted changes" if dirty else "")
