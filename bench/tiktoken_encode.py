"""What a user would run instead of ``tfree encode``: tiktoken cl100k token ids of every document, as uint32 in one
file.

    TIKTOKEN_CACHE_DIR=DIR python bench/tiktoken_encode.py INPUT --split lines -o tokens.u32

Documents are read exactly as ``tfree encode`` reads them (``iter_documents``) and encoded one by one with
``encode_ordinary``, tiktoken's fastest one-thread path (a loop of it ran 3x faster here than
``encode_ordinary_batch(..., num_threads=1)``). Prints "<seconds> <tokens>": the time after imports, as
``tfree encode`` reports its own.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import tiktoken

from tfree_codec.shards.sources import iter_documents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("--split", default="lines", choices=["none", "lines", "paragraphs"])
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()
    enc = tiktoken.get_encoding("cl100k_base")
    enc.encode_ordinary("load the ranks first")
    t0 = time.perf_counter()
    n = 0
    with open(args.out, "wb") as f:
        buf = []
        for doc in iter_documents(args.input, split=args.split):
            buf.extend(enc.encode_ordinary(doc))
            if len(buf) >= 1 << 20:
                f.write(np.asarray(buf, np.uint32).tobytes())
                n += len(buf)
                buf = []
        f.write(np.asarray(buf, np.uint32).tobytes())
        n += len(buf)
    print(f"{time.perf_counter() - t0:.4f} {n}")


if __name__ == "__main__":
    main()
