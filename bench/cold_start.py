"""The first run after install: commands timed from outside with an empty numba cache, and again with it filled.

    python bench/cold_start.py                 # 3 rounds
    python bench/cold_start.py --repeat 5

Each round gives numba a new empty cache directory (NUMBA_CACHE_DIR), as a fresh install has, and runs
``tfree inspect "hello world"``, ``tfree stats`` of a 30 kB file, then ``tfree encode`` of 1 MB of English lines
(first 1 MB of english_prose; it compiles what it needs), and the same encode again with the cache it filled
(warm). Gates (issue 23): ``inspect`` <= 1.5 s and ``encode`` of 1 MB <= 5 s with the empty cache.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alternate import load, versions  # noqa: E402


def timed(cmd: list[str], cache: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NUMBA_CACHE_DIR": cache})
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="tfree-cold-")
    try:
        text = load("english_prose").encode("utf-8")
        mb1, kb30 = os.path.join(scratch, "1mb.txt"), os.path.join(scratch, "30kb.txt")
        with open(mb1, "wb") as f:
            f.write(text[:text.rfind(b"\n", 0, 1_000_000) + 1])
        with open(kb30, "wb") as f:
            f.write(text[:text.rfind(b"\n", 0, 30_000) + 1])
        tfree = [sys.executable, "-m", "tfree_cli"]
        out = os.path.join(scratch, "out")
        runs = {"tfree inspect 'hello world' (empty cache)": tfree + ["inspect", "hello world"],
                "tfree stats 30 kB (empty cache)": tfree + ["stats", kb30],
                "tfree encode 1 MB of lines (empty cache)": tfree + ["encode", mb1, "-o", out, "--split", "lines", "-q"],
                "tfree encode 1 MB of lines (cache filled)": tfree + ["encode", mb1, "-o", out, "--split", "lines",
                                                                      "-q"]}
        times = {k: [] for k in runs}
        print(f"# {versions()}")
        for _ in range(args.repeat):
            cache = tempfile.mkdtemp(dir=scratch)  # empty: a fresh install's numba cache
            for k, cmd in runs.items():
                shutil.rmtree(out, ignore_errors=True)
                times[k].append(timed(cmd, cache))
        print("\n| command | best s | median s | runs |")
        print("|---|---:|---:|---|")
        for k, ts in times.items():
            print(f"| {k} | {min(ts):.2f} | {statistics.median(ts):.2f} | {', '.join(f'{t:.2f}' for t in ts)} |")
        ins, enc = times["tfree inspect 'hello world' (empty cache)"], times["tfree encode 1 MB of lines (empty cache)"]
        print("\ngates:")
        print(f"  {'met' if statistics.median(ins) <= 1.5 else 'NOT MET':7} inspect with an empty cache <= 1.5 s: "
              f"{statistics.median(ins):.2f} s median")
        print(f"  {'met' if statistics.median(enc) <= 5 else 'NOT MET':7} encode of 1 MB with an empty cache <= 5 s: "
              f"{statistics.median(enc):.2f} s median")
        print(f"# load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
