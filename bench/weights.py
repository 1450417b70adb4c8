"""Reading model.safetensors: the safetensors package's memory map (what ``load_weights_file`` uses where the
package is installed) against reading the file whole and checking it in Python (the fallback without it), and
the package's own ``load_file``, on the bundled model unless a file is given. The readers run in turn, one call
each, so that other jobs on the machine slow them alike; median and best per call, and the same tensors checked.

    python bench/weights.py [FILE] [--repeats 30]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import safetensors
import torch
from safetensors.torch import load_file

from tfree_codec import assets
from tfree_codec.model import weights


def whole(path):
    saved = sys.modules.get("safetensors")
    sys.modules["safetensors"] = None  # the fallback: `from safetensors import ...` fails
    try:
        return weights.load_weights_file(path)
    finally:
        sys.modules["safetensors"] = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default=os.path.join(os.path.dirname(assets.__file__), "model", weights.WEIGHTS_FILE))
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    fns = {"load_weights_file (safetensors mmap)": lambda: weights.load_weights_file(a.file),
           "read whole + checks (no safetensors)": lambda: whole(a.file),
           f"safetensors {safetensors.__version__} load_file": lambda: load_file(a.file)}
    ref = whole(a.file)
    for name, fn in fns.items():
        got = fn()
        assert list(got) == list(ref) or sorted(got) == sorted(ref), name
        assert all(torch.equal(got[k], ref[k]) for k in ref), name
    times = {name: [] for name in fns}
    for _ in range(a.repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    size = os.path.getsize(a.file)
    print(f"{a.file}: {size / 1e6:.1f} MB, {len(ref)} tensors, torch {torch.__version__}, {a.repeats} calls each")
    for name, t in times.items():
        print(f"  {name:<40} median {statistics.median(t) * 1e3:8.2f} ms   best {min(t) * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
