"""The benchmark dictionary: the 100k most frequent words of all the corpora (built once, then cached)."""
from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfree_codec import Codec  # noqa: E402
from tfree_codec.decode.dictionary import Dictionary  # noqa: E402

CORPORA = ["english_prose", "mono_de", "mono_es", "mono_fr", "mono_ja", "mono_ru", "mono_zh"]
DEFAULT_PATHS = [f"/tmp/{c}.txt" for c in CORPORA]
DEFAULT_DICT = "/tmp/tfree-bench-dict-100k.arrow"


def add_args(ap) -> None:
    ap.add_argument("--corpora", nargs="+", default=DEFAULT_PATHS, help="UTF-8 text files (decompressed corpora)")
    ap.add_argument("--dict", default=DEFAULT_DICT, help="cached dictionary (built from --corpora if missing)")
    ap.add_argument("--max-words", type=int, default=100_000)


def load_dictionary(args) -> Dictionary:
    codec = Codec()
    if os.path.exists(args.dict):
        d = Dictionary.load(args.dict, codec)
        if len(d) - 16 == args.max_words:
            print(f"dictionary: {args.dict} ({len(d):,} words)")
            return d
    t0 = time.perf_counter()
    d = Dictionary.from_files(args.corpora, codec, max_words=args.max_words, progress=True)
    d.save(args.dict)
    print(f"dictionary: built {args.dict} from {len(args.corpora)} corpora in {time.perf_counter() - t0:.0f} s")
    return d


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores (load average {load:.1f} at start)"
