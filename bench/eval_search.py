"""``tfree eval`` with a big dictionary: the pruned search against full scoring (and against the torch product of
every word that evaluation used before), on the same checkpoint and text, alternated in one process.

    python bench/eval_search.py [--words 100000] [--kb 100] [--repeats 3] [--model CHECKPOINT] [--no-torch]

The checkpoint is the bundled model (or ``--model``) with the N most frequent words of the corpora as its
dictionary (written to a temporary directory with the model's calibration; bench/common_dict.py); the text is the first ``--kb`` kB of
/tmp/english_prose.txt after its first MB. Reported: seconds per evaluation (median of the repeats) and bits per
byte of each, and how far they differ.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from common_dict import dictionary, dictionary_path, machine

from tfree_codec.generate import LanguageModel
from tfree_codec.model import checkpoint as ckpt
from tfree_codec.generate.score import evaluate_checkpoint
from tfree_codec.model.checkpoint import DICT_FILE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--words", type=int, default=100_000)
    ap.add_argument("--kb", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (numba runs one)")
    ap.add_argument("--model", help="checkpoint or run directory (default: the bundled model)")
    ap.add_argument("--no-torch", action="store_true", help="leave out the torch product (the slowest)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    d = dictionary(args.words)
    lm = LanguageModel.load(args.model, "cpu")
    work = tempfile.mkdtemp(prefix="tfree-eval-search-")
    path = ckpt.save_checkpoint(os.path.join(work, "final"), lm.model, lm.codec,
                                files={DICT_FILE: dictionary_path(args.words)}, json_files=lm.vocabulary.checkpoint_json)
    with open("/tmp/english_prose.txt", encoding="utf-8") as f:
        f.seek(1 << 20)
        f.readline()
        text = f.read(args.kb * 1000)
    data = os.path.join(work, "text.txt")
    with open(data, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"checkpoint: {lm.path} ({lm.vocabulary.calibration.score}) with a {len(d):,}-word dictionary; text: "
          f"{len(text.encode()):,} bytes")
    searches = {"pruned": "pruned", "full": "full", "torch product (before)": None}
    if args.no_torch:
        del searches["torch product (before)"]
    for search in searches.values():
        evaluate_checkpoint(path, data, "cpu", search=search)  # warm-up: kernels, index
    times, bpb = {k: [] for k in searches}, {}
    for _ in range(args.repeats):
        for name, search in searches.items():
            t0 = time.perf_counter()
            r = evaluate_checkpoint(path, data, "cpu", search=search)
            times[name].append(time.perf_counter() - t0)
            bpb[name] = (r["bpb"], r["bpb_plain_score"])
    print("\n| evaluation | seconds | bits per byte | plain-score bits per byte |\n|---|---|---|---|")
    for name in searches:
        print(f"| {name} | {statistics.median(times[name]):.2f} | {bpb[name][0]:.6f} | {bpb[name][1]:.6f} |")
    t = {k: statistics.median(v) for k, v in times.items()}
    torch_x = (f", {t['torch product (before)'] / t['pruned']:.2f}x the torch product's"
               if "torch product (before)" in t else "")
    print(f"\npruned: {t['full'] / t['pruned']:.2f}x full scoring's speed{torch_x} (gate: >= 3x full); bits per byte differ by "
          f"{abs(bpb['pruned'][0] - bpb['full'][0]):.2e} (gate: <= 1e-4)")


if __name__ == "__main__":
    sys.exit(main())
