"""What a user would run instead of ``tfree encode --split lines``: tiktoken cl100k token ids of every non-blank line,
as uint32 in one file, written as plainly and as fast as a user would write it.

    TIKTOKEN_CACHE_DIR=DIR python bench/tiktoken_encode.py INPUT -o tokens.u32 [--mode loop|batch|threads]

Reads the file in one go, keeps the lines that hold more than whitespace (the documents ``tfree encode --split
lines`` makes), encodes them, and writes the ids with ``np.fromiter`` as uint32. ``--mode loop``: a loop of
``encode_ordinary`` (one thread); ``batch``: ``encode_ordinary_batch`` (its default 8 threads, one task per line);
``threads``: a pool of ``--threads`` threads, each running that loop over a slice of 4,096 lines (tiktoken releases
the GIL while it encodes). bench/encode_shards.py runs them all and compares with the fastest. Prints "<seconds>
<tokens>": the time after imports and loading the ranks.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import numpy as np
import tiktoken


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--mode", choices=["loop", "batch", "threads"], default="loop")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    enc = tiktoken.get_encoding("cl100k_base")
    enc.encode_ordinary("load the ranks first")
    t0 = time.perf_counter()
    with open(args.input, encoding="utf-8", newline="") as f:
        docs = [p[:-1] if p[-1] == "\r" else p for p in f.read().split("\n") if p.strip()]
    if args.mode == "loop":
        tokens = map(enc.encode_ordinary, docs)
    elif args.mode == "batch":
        tokens = enc.encode_ordinary_batch(docs)
    else:
        with ThreadPoolExecutor(args.threads) as pool:
            parts = pool.map(lambda s: [enc.encode_ordinary(d) for d in s],
                             [docs[i:i + 4096] for i in range(0, len(docs), 4096)])
            tokens = list(chain.from_iterable(parts))
    ids = np.fromiter(chain.from_iterable(tokens), np.uint32)
    ids.tofile(args.out)
    print(f"{time.perf_counter() - t0:.4f} {len(ids)}")


if __name__ == "__main__":
    main()
