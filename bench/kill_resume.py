"""Kill ``tfree encode`` with SIGKILL at random moments, rerun it, and compare with an uninterrupted run.

    python bench/kill_resume.py [--input /tmp/english_prose.txt] [--mb 2] [--kills 10] [--num-proc 2] [--seed 0]

The first --mb MB of the input (cut at a line) are encoded with --split lines into small shards, twice cleanly;
then --kills times into a fresh directory: start, SIGKILL the main process after a random delay drawn uniformly
from [0, the shorter of two clean run times], rerun the same command to completion, and require every file (shards, shard lexicons,
lexicon.arrow, codec.json, manifest.json, nothing else) to be byte-identical to the clean run. Workers of the killed run die
with it (as after a real crash); the rerun keeps only shards whose sha256 matches the record of finished shards.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def dir_bytes(path: str) -> dict[str, bytes]:
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default="/tmp/english_prose.txt")
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    scratch = tempfile.mkdtemp(prefix="tfree-kill-")
    try:
        data = open(args.input, "rb").read(int(args.mb * 1e6))
        src = os.path.join(scratch, "input.txt")
        with open(src, "wb") as f:
            f.write(data[:data.rfind(b"\n") + 1])
        cmd = [sys.executable, "-c", "from tfree_cli.main import main; main()", "encode", src, "--split", "lines",
               "--shard-bytes", "100kB", "--num-proc", str(args.num_proc), "-q", "-o"]
        times = []
        for name in ("clean", "clean2"):  # twice: the shorter time bounds the kill moments, the files must agree
            t0 = time.perf_counter()
            subprocess.run(cmd + [os.path.join(scratch, name)], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        clean_s = min(times)
        clean = dir_bytes(os.path.join(scratch, "clean"))
        assert dir_bytes(os.path.join(scratch, "clean2")) == clean, "two clean runs differ"
        n_shards = sum(n.startswith("shard-") for n in clean)
        print(f"clean run: {clean_s:.2f} s, {n_shards} shards, {sum(map(len, clean.values())) / 1e6:.1f} MB")
        ok = 0
        for k in range(args.kills):
            out = os.path.join(scratch, f"run{k}")
            delay = rng.uniform(0, clean_s)
            proc = subprocess.Popen(cmd + [out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            left = sorted(os.listdir(out)) if os.path.isdir(out) else []
            state = (f"{sum(n.startswith('shard-') for n in left)} shards, "
                     f"{sum(n.startswith('.tmp-') for n in left)} temporary, "
                     f"{'plan' if '.plan.json' in left else 'no plan'}, "
                     f"{'manifest' if 'manifest.json' in left else 'no manifest'}")
            r = subprocess.run(cmd + [out], capture_output=True, text=True)
            same = r.returncode == 0 and dir_bytes(out) == clean
            ok += same
            last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
            print(f"kill {k + 1:2d} at {delay:5.2f} s ({state}) -> rerun exit {r.returncode}: "
                  f"{'identical' if same else 'DIFFERENT'} | {last}")
            shutil.rmtree(out)
        print(f"{ok}/{args.kills} reruns byte-identical to the clean run")
        sys.exit(0 if ok == args.kills else 1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
