"""The gates of shard format 2 (issue 17), measured in one run against tiktoken cl100k on the same documents.

    python bench/encode_shards.py                          # every corpus in ../shared/data, first 4M characters
    python bench/encode_shards.py --mb 8 --corpora english_prose mono_de

For each corpus, a slice (the first --mb million characters, cut at a line end) is written to a scratch file and cut into lines
(``--split lines``), and:

* on disk: ``tfree encode --num-proc 1`` output (shards + shard lexicons + lexicon.arrow + manifest + codec.json)
  against the UTF-8 input bytes (gate <= 1.2x), and tiktoken's uint32 token file beside it;
* end to end: ``tfree encode --num-proc 1`` MB/s against ``bench/tiktoken_encode.py`` (``encode_ordinary`` per
  document, uint32 ids into one file), both as subprocesses, both timed by themselves after imports ("cmd") and
  from outside ("wall", interpreter start included) (gate >= 2x); ``--num-proc 2`` against 1 (gate >= 1.6x) on
  the corpora given to --num-proc-2;
* in memory, one thread: ``Lexicon.add`` (text -> word ids) against a loop of tiktoken ``encode_ordinary``
  (gate >= 4x on english_prose, >= 1x on every mono_*). Best of --repeat.
"""
from __future__ import annotations

import argparse
import lzma
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("TFREE_DATA", os.path.join(ROOT, "..", "shared", "data"))  # ../shared beside the clone
sys.path.insert(0, ROOT)

from tfree_codec import Codec  # noqa: E402
from tfree_codec.shards.sources import iter_documents  # noqa: E402


def tiktoken_cache() -> str:
    cache = os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(ROOT, "bench", ".cache", "tiktoken"))
    if not os.path.isdir(cache) or not os.listdir(cache):
        subprocess.run(["bash", os.path.join(ROOT, "..", "shared", "tools", "tiktoken_offline.sh"), cache], check=True,
                       env={**os.environ, "PYTHON": sys.executable})
    return cache


def slice_corpus(name: str, mb: float, scratch: str) -> str:
    with lzma.open(os.path.join(DATA, f"{name}.txt.xz"), "rt", encoding="utf-8", newline="") as f:
        text = f.read(int(mb * 1e6))
    cut = text.rfind("\n") + 1 or len(text)
    path = os.path.join(scratch, f"{name}.txt")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text[:cut])
    return path


def run(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return time.perf_counter() - t0, r.stdout + r.stderr


def tfree_encode(path: str, out: str, num_proc: int) -> tuple[float, float, int]:
    """(wall s, cmd s, bytes on disk) of ``tfree encode --split lines``."""
    shutil.rmtree(out, ignore_errors=True)
    wall, log = run([sys.executable, "-c", "from cli.main import main; main()", "encode", path, "-o", out,
                     "--split", "lines", "--num-proc", str(num_proc), "-q"])
    cmd = float(re.search(r": ([\d.]+) s,", log).group(1))
    size = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    return wall, cmd, size


def tiktoken_script(path: str, out: str) -> tuple[float, float, int]:
    wall, log = run([sys.executable, os.path.join(ROOT, "bench", "tiktoken_encode.py"), path, "--split", "lines",
                     "-o", out])
    return wall, float(log.split()[0]), os.path.getsize(out)


def in_memory(docs: list[str], repeat: int) -> tuple[float, float]:
    """(tfree s, tiktoken s): text -> ids on one thread, best of ``repeat``; a fresh lexicon per pass."""
    import tiktoken

    codec = Codec()
    codec.lexicon().add(["Load the kernels first: Grüße, 日本語."])
    enc = tiktoken.get_encoding("cl100k_base")
    enc.encode_ordinary("load the ranks first")
    best_t = best_k = float("inf")
    for _ in range(repeat):
        lex = codec.lexicon()
        t0 = time.perf_counter()
        for i in range(0, len(docs), 4096):  # as tfree encode feeds it: batches of documents
            lex.add(docs[i:i + 4096])
        best_t = min(best_t, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for d in docs:
            enc.encode_ordinary(d)
        best_k = min(best_k, time.perf_counter() - t0)
    return best_t, best_k


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main() -> None:
    names = sorted(n[:-len(".txt.xz")] for n in os.listdir(DATA) if n.endswith(".txt.xz")) if os.path.isdir(DATA) else []
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", nargs="+", default=names)
    ap.add_argument("--mb", type=float, default=4.0, help="million characters of each corpus (its first lines)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--num-proc-2", nargs="*", default=["english_prose"], help="corpora also run with --num-proc 2")
    ap.add_argument("--size-only", action="store_true", help="only the on-disk gate (e.g. whole corpora: --mb 100)")
    args = ap.parse_args()
    if not args.size_only:
        tiktoken_cache()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f} at start; first {args.mb:g}M characters of each corpus, --split lines")
    scratch = tempfile.mkdtemp(prefix="tfree-bench-")
    print(f"{'corpus':14} {'MB':>5} {'disk/text':>9} {'tiktoken':>8} | {'encode MB/s':>11} {'tiktoken':>8} "
          f"{'ratio':>6} {'(wall)':>6} | {'ids MB/s':>8} {'tiktoken':>8} {'ratio':>6}")
    gates = []
    try:
        for name in args.corpora:
            path = slice_corpus(name, args.mb, scratch)
            mb = os.path.getsize(path) / 1e6
            e_wall, e_cmd, size = tfree_encode(path, os.path.join(scratch, "out"), 1)
            if args.size_only:
                print(f"{name:14} {mb:5.1f} {size / (mb * 1e6):8.2f}x  ({mb / e_cmd:.2f} MB/s)", flush=True)
                gates.append((f"{name}: shards + lexicon <= 1.2x text", size / (mb * 1e6) <= 1.2,
                              f"{size / (mb * 1e6):.2f}x"))
                continue
            k_wall, k_cmd, k_size = tiktoken_script(path, os.path.join(scratch, "tokens.u32"))
            docs = list(iter_documents(path, split="lines"))
            t_mem, k_mem = in_memory(docs, args.repeat)
            print(f"{name:14} {mb:5.1f} {size / (mb * 1e6):8.2f}x {k_size / (mb * 1e6):7.2f}x | {mb / e_cmd:11.2f} "
                  f"{mb / k_cmd:8.2f} {k_cmd / e_cmd:5.2f}x {k_wall / e_wall:5.2f}x | {mb / t_mem:8.2f} "
                  f"{mb / k_mem:8.2f} {k_mem / t_mem:5.2f}x", flush=True)
            gates.append((f"{name}: shards + lexicon <= 1.2x text", size / (mb * 1e6) <= 1.2, f"{size / (mb * 1e6):.2f}x"))
            gates.append((f"{name}: tfree encode 1 process >= 2x tiktoken script", k_cmd / e_cmd >= 2,
                          f"{k_cmd / e_cmd:.2f}x cmd, {k_wall / e_wall:.2f}x wall"))
            need = 4.0 if name == "english_prose" else 1.0
            gates.append((f"{name}: in-memory ids >= {need:g}x tiktoken", k_mem / t_mem >= need, f"{k_mem / t_mem:.2f}x"))
            if name in args.num_proc_2:
                w2, c2, _ = tfree_encode(path, os.path.join(scratch, "out"), 2)
                print(f"{'':14} --num-proc 2: {mb / c2:.2f} MB/s cmd ({e_cmd / c2:.2f}x one process), "
                      f"{mb / w2:.2f} MB/s wall ({e_wall / w2:.2f}x)")
                gates.append((f"{name}: --num-proc 2 >= 1.6x one process", e_cmd / c2 >= 1.6,
                              f"{e_cmd / c2:.2f}x cmd, {e_wall / w2:.2f}x wall"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\ngates:")
    for what, ok, figure in gates:
        print(f"  {verdict(ok):7} {what}: {figure}")
    print(f"# load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
