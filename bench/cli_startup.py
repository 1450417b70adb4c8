"""How long `tfree --help` and `tfree --version` take, warm (the files in the page cache): the installed console
script, run N times each in turn, median and best. The gate: --help <= 0.25 s.

    python bench/cli_startup.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    exe = shutil.which("tfree") or sys.exit("no tfree on PATH: pip install -e .")
    cmds = {"tfree --help": [exe, "--help"], "tfree --version": [exe, "--version"]}
    for cmd in cmds.values():
        subprocess.run(cmd, capture_output=True, check=True)  # warm the page cache
    times = {name: [] for name in cmds}
    for _ in range(a.repeats):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t0)
    print(f"{exe}, python {sys.version.split()[0]}, {a.repeats} runs each")
    for name, t in times.items():
        print(f"  {name:<16} median {statistics.median(t):.3f} s   best {min(t):.3f} s")


if __name__ == "__main__":
    main()
