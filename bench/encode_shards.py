"""End-to-end ``tfree encode`` throughput against in-memory ``codec.encode_batch`` on the same documents.

    python bench/encode_shards.py [--input /tmp/english_prose.txt] [--split lines paragraphs] [--repeat 1]

For each split: the documents are encoded in memory on one thread, each in a fresh process (a fresh Codec,
kernels loaded first; the clock starts after reading): all at once (``encode_batch(docs)``, the reference) and
4096 at a time with results dropped. Then ``tfree encode`` runs as a subprocess with --num-proc 1 and 2 into a
scratch directory.
"wall" is the subprocess from start to exit (interpreter start, imports, plan pass, shards, fsync, manifest);
"cmd" is the time the command itself reports (everything after imports); "cpu" is the CPU time (user + sys) of
the command and its workers, which other jobs on a shared machine disturb far less than wall time. A parallel
speedup bound from CPU time is num_proc x cpu(1) / cpu(n). Best of --repeat runs.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from tfree_codec import Codec
from tfree_codec.shards.sources import iter_documents


def in_memory(docs: list[str], chunk: int | None = None) -> tuple[float, float]:
    """(wall, cpu) seconds of encode_batch on one thread: all documents at once (results kept, as the call
    returns them), or ``chunk`` at a time with each chunk's results dropped (the memory pattern of a writer)."""
    codec = Codec()
    codec.encode("Load the kernels first.")
    t0, c0 = time.perf_counter(), time.process_time()
    if chunk is None:
        codec.encode_batch(docs, num_threads=1)
    else:
        for i in range(0, len(docs), chunk):
            codec.encode_batch(docs[i:i + chunk], num_threads=1)
    return time.perf_counter() - t0, time.process_time() - c0


def in_memory_fresh(path: str, split: str, chunk: int | None) -> tuple[float, float]:
    """``in_memory`` in a fresh process, as a one-shot user (and ``tfree encode``) would run it: a process that
    already encoded reuses warm memory and is faster."""
    cmd = [sys.executable, __file__, "--in-memory", path, split] + ([str(chunk)] if chunk else [])
    wall, cpu = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return float(wall), float(cpu)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def end_to_end(path: str, split: str, num_proc: int, scratch: str) -> tuple[float, float, float, int]:
    out = os.path.join(scratch, f"out-{split}-{num_proc}")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", "from tfree_cli.main import main; main()", "encode", path, "-o", out,
           "--split", split, "--num-proc", str(num_proc), "-q"]
    t0, c0 = time.perf_counter(), children_cpu()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - c0
    if r.returncode:
        sys.exit(r.stderr)
    cmd_s = float(re.search(r": ([\d.]+) s,", r.stderr).group(1))
    size = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    shutil.rmtree(out)
    return wall, cmd_s, cpu, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default="/tmp/english_prose.txt")
    ap.add_argument("--split", nargs="+", default=["lines", "paragraphs"], choices=["lines", "paragraphs", "none"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--scratch", default=None, help="directory for the shards (default: a temporary one)")
    ap.add_argument("--in-memory", nargs="+", help=argparse.SUPPRESS)  # PATH SPLIT [CHUNK]: the child mode
    args = ap.parse_args()
    if args.in_memory:
        docs = list(iter_documents(args.in_memory[0], split=args.in_memory[1]))
        print(*in_memory(docs, int(args.in_memory[2]) if len(args.in_memory) > 2 else None))
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    scratch = tempfile.mkdtemp(prefix="tfree-bench-", dir=args.scratch)
    try:
        for split in args.split:
            docs = list(iter_documents(args.input, split=split))
            mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
            mem = min(in_memory_fresh(args.input, split, None) for _ in range(args.repeat))
            chunked = min(in_memory_fresh(args.input, split, 4096) for _ in range(args.repeat))
            print(f"\n{args.input} --split {split}: {len(docs):,} documents, {mb:.1f} MB")
            print(f"  in-memory encode_batch, 1 thread : {mb / mem[0]:6.2f} MB/s wall ({mem[0]:.1f} s), "
                  f"{mb / mem[1]:6.2f} MB/s cpu")
            print(f"  same, 4096 docs at a time        : {mb / chunked[0]:6.2f} MB/s wall ({chunked[0]:.1f} s), "
                  f"{mb / chunked[1]:6.2f} MB/s cpu")
            r = {}
            for n in (1, 2):
                runs = [end_to_end(args.input, split, n, scratch) for _ in range(args.repeat)]
                r[n] = [min(x[i] for x in runs) for i in range(3)]
                wall, cmd_s, cpu = r[n]
                print(f"  tfree encode --num-proc {n}        : {mb / wall:6.2f} MB/s wall ({wall:.1f} s), "
                      f"{mb / cmd_s:6.2f} MB/s cmd ({cmd_s:.1f} s), {cpu:.1f} cpu-s; {runs[0][3] / 1e6:,.0f} MB written")
            print(f"  1 process / in-memory  : {mem[0] / r[1][0]:.2f} wall, {mem[0] / r[1][1]:.2f} cmd, "
                  f"{mem[1] / r[1][2]:.2f} cpu   (vs 4096 at a time: {chunked[0] / r[1][0]:.2f} wall, "
                  f"{chunked[0] / r[1][1]:.2f} cmd, {chunked[1] / r[1][2]:.2f} cpu)")
            print(f"  2 processes / 1 process: {r[1][0] / r[2][0]:.2f} wall, {r[1][1] / r[2][1]:.2f} cmd, "
                  f"{2 * r[1][2] / r[2][2]:.2f} cpu bound (2 x cpu1 / cpu2)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n# load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
