"""Pilot for the paper table: T-FREE validation bits per byte against the BCE positive weight, 1 MB of training.

    python experiments/pos_weight_sweep.py --weights 30,100,300,1000      # ~4 min a run on 2 idle CPU cores

Same data preparation and body as experiments/paper_table.py (a 2.1 MB training pool); each run is one
`tfree train ... --pos-weight W`; the figure is the final validation bits per byte (calibrated score, and the plain
SPEC score beside it).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

from paper_table import encode, make_documents, tfree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/tmp/english_prose.txt")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tfree_pos_weight"))
    ap.add_argument("--weights", default="30,100,300,1000")
    ap.add_argument("--max-bytes", type=float, default=1e6)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    train_jsonl, _, _ = make_documents(args.corpus, args.work, int(2.1e6))
    shards = encode(train_jsonl, os.path.join(args.work, "train-v8192"), 8192)
    rows = []
    for w in args.weights.split(","):
        out = os.path.join(args.work, f"pw{w}")
        if not os.path.isfile(os.path.join(out, "final", "checkpoint.json")):
            tfree("train", shards, "-o", out, "--preset", "tiny", "--n-layer", 2, "--n-embd", 128, "--n-head", 4,
                  "--seq-len", 128, "--batch-size", 16, "--lr", 2e-3, "--warmup", 50, "--seed", 1, "--device", "cpu",
                  "--max-bytes", int(args.max_bytes), "--log-every", 50, "--pos-weight", w, "-q")
        with open(os.path.join(out, "log.jsonl")) as f:
            final = [json.loads(line) for line in f][-1]
        rows.append((w, final["val_bpb"], final["val_bpb_plain"], final["temperature"], final["prior_weight"]))
    print("| pos_weight | val bpb | val bpb (plain score) | temperature | prior weight |\n|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.4f} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.3f} |")


if __name__ == "__main__":
    main()
