"""``tfree encode`` end to end against a tiktoken + uint32 script, wall clock from outside, alternated run by run.

    python bench/encode_shards.py                         # 31 MB of English lines (english_prose, then again)
    python bench/encode_shards.py --corpus /tmp/other.txt --mb 8 --repeat 3
    python bench/encode_shards.py --size-only --mb 100   # only the on-disk size, every corpus whole

The input is the first --mb million bytes of lines of the corpus (a corpus shorter than that is repeated from its
start; english_prose is 23.7 MB, so the default 31 MB holds 7.3 MB of it twice: tfree's lexicon has seen those
words, tiktoken has no such state). Each command runs as a subprocess, timed from outside (interpreter start and
imports included), in rounds: every command once per round, in a new random order each round (seeded), so load
elsewhere, and whatever a command leaves the next one (page cache writeback, deleted files), hit them alike; best
and median of --repeat rounds are printed, and every run.

* ``tfree encode --split lines --num-proc 1`` and with the default ``--num-proc`` (``auto_num_proc``);
* ``bench/tiktoken_encode.py`` in each of its modes (a loop of ``encode_ordinary``, ``encode_ordinary_batch``,
  a thread pool): the gate compares with the fastest.

Gates (issue 23): ``--num-proc 1`` >= 2x the fastest tiktoken script; the default ``--num-proc`` >= 1x one process.
With --size-only: shards + shard lexicons + lexicon.arrow + manifest + codec.json against the UTF-8 input (issue 17:
<= 1.2x).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alternate import LANGUAGES, load, tiktoken_encoding, versions  # noqa: E402


def slice_corpus(name: str, mb: float, scratch: str) -> str:
    """A file of the corpus's first ``mb`` million bytes, cut at a line end (repeated from the start if short)."""
    data = load(name).encode("utf-8")
    want = int(mb * 1e6)
    out = data * (want // max(len(data), 1) + 1)
    out = out[:out.rfind(b"\n", 0, want) + 1] if len(out) > want else out
    path = os.path.join(scratch, os.path.basename(name).split(".")[0] + ".txt")
    with open(path, "wb") as f:
        f.write(out)
    return path


def tfree(path: str, out: str, num_proc: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "tfree_cli", "encode", path, "-o", out, "--split", "lines", "-q"]
    return cmd + (["--num-proc", str(num_proc)] if num_proc else [])


def tiktoken_script(path: str, out: str, mode: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "bench", "tiktoken_encode.py"), path, "-o", out, "--mode", mode]


def timed(cmd: list[str]) -> float:
    """Seconds the command takes (after removing the output directory a previous run left)."""
    out = cmd[cmd.index("-o") + 1]
    if os.path.isdir(out):
        shutil.rmtree(out)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return time.perf_counter() - t0


def disk_bytes(out: str) -> int:
    return sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="english_prose", help="a name in ../shared/data or a text file")
    ap.add_argument("--mb", type=float, default=31.0)
    ap.add_argument("--repeat", type=int, default=5, help="rounds (every command once per round)")
    ap.add_argument("--modes", nargs="+", default=["loop", "threads", "batch"], help="tiktoken_encode.py modes")
    ap.add_argument("--size-only", action="store_true", help="only the on-disk gate, on every corpus")
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="tfree-bench-")
    try:
        if args.size_only:
            for name in LANGUAGES:
                path = slice_corpus(name, min(args.mb, len(load(name).encode()) / 1e6), scratch)
                out = os.path.join(scratch, "out")
                timed(tfree(path, out, 1))
                ratio = disk_bytes(out) / os.path.getsize(path)
                print(f"{name}: {os.path.getsize(path) / 1e6:.1f} MB, on disk {ratio:.2f}x the text "
                      f"({'met' if ratio <= 1.2 else 'NOT MET'}: <= 1.2x)", flush=True)
            return
        tiktoken_encoding()  # the offline rank files, and TIKTOKEN_CACHE_DIR for the subprocesses
        path = slice_corpus(args.corpus, args.mb, scratch)
        mb = os.path.getsize(path) / 1e6
        cmds = {"tfree --num-proc 1": tfree(path, os.path.join(scratch, "one"), 1),
                "tfree (default --num-proc)": tfree(path, os.path.join(scratch, "auto"), None)}
        cmds.update({f"tiktoken script ({m})": tiktoken_script(path, os.path.join(scratch, f"{m}.u32"), m)
                     for m in args.modes})
        print(f"# {versions()}")
        print(f"# {mb:.1f} MB of lines of {args.corpus}, {args.repeat} rounds, wall clock from outside")
        timed(cmds["tfree --num-proc 1"])  # a first run loads numba's cache into the page cache
        times = {k: [] for k in cmds}
        rng = random.Random(0)
        for _ in range(args.repeat):
            for k in rng.sample(list(cmds), len(cmds)):
                times[k].append(timed(cmds[k]))
        print("\n| command | best s | median s | MB/s (best) | runs |")
        print("|---|---:|---:|---:|---|")
        for k, ts in times.items():
            print(f"| {k} | {min(ts):.2f} | {statistics.median(ts):.2f} | {mb / min(ts):.1f} | "
                  f"{', '.join(f'{t:.2f}' for t in ts)} |")
        tik = min((k for k in times if k.startswith("tiktoken")), key=lambda k: min(times[k]))
        one, auto = min(times["tfree --num-proc 1"]), min(times["tfree (default --num-proc)"])
        med = statistics.median
        print("\ngates:")
        for what, ratio, need, mratio in (
                (f"tfree encode --num-proc 1 >= 2x {tik}", min(times[tik]) / one, 2.0,
                 med(times[tik]) / med(times["tfree --num-proc 1"])),
                ("default --num-proc >= 1x one process", one / auto, 1.0,
                 med(times["tfree --num-proc 1"]) / med(times["tfree (default --num-proc)"]))):
            print(f"  {'met' if ratio >= need else 'NOT MET':7} {what}: {ratio:.2f}x best, {mratio:.2f}x median")
        print(f"# load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
