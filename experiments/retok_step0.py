"""Step 0 of ``tfree retok`` under other least-squares settings (issue 18's first gate): the validation bits per byte
of the converted model before any training, for each ``--alpha`` / ``--ridge`` / ``--head-fit`` arm.

    python experiments/retok_step0.py --work DIR base:1:1e-3:sum a05:0.5:1e-3:sum r1e-2:1:1e-2:sum meanfit:1:1e-3:mean

DIR is experiments/retok.py's work folder (its ``bpe-8k`` source and ``train-v8192`` shards); each arm is
``name:alpha:ridge:head_fit`` with the mean-of-pieces input target and the first piece's head target. Each arm writes
DIR/step0/NAME (a checkpoint, as ``RUN/init``) and NAME.json (its retok.json record) and is reused when present;
about 3 minutes per arm on one core.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from tfree_codec.train.retok import RetokConfig, build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="experiments/retok.py's --work folder")
    ap.add_argument("--pos-weight", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("arms", nargs="+", help="name:alpha:ridge:head_fit")
    args = ap.parse_args()
    print("| arm | alpha | ridge | head fit | step-0 validation bpb | input R^2 by count bucket | head R^2 by count bucket |")
    print("|---|---:|---:|---|---:|---|---|")
    for arm in args.arms:
        name, alpha, ridge, fit = arm.split(":")
        out = os.path.join(args.work, "step0", name)
        if os.path.isfile(out + ".json"):
            with open(out + ".json") as f:
                rec = json.load(f)
        else:
            t0 = time.time()
            cfg = RetokConfig(init="mean", head_target="first", head_fit=fit, alpha=float(alpha), ridge=float(ridge),
                              pos_weight=args.pos_weight, seed=args.seed)
            rec = build(os.path.join(args.work, "bpe-8k", "final"), os.path.join(args.work, "train-v8192"), out, cfg,
                        log=lambda *a: None)
            rec["seconds"] = time.time() - t0
            with open(out + ".json.tmp", "w") as f:
                json.dump(rec, f)
            os.replace(out + ".json.tmp", out + ".json")
        r2 = lambda fit_: ", ".join(f"{b['counts']}: {b['r2']:.2f}" for b in fit_)  # noqa: E731
        print(f"| {name} | {alpha} | {ridge} | {fit} | {rec['val_bpb_step0']:.4f} | {r2(rec['fit_input'])} | "
              f"{r2(rec['fit_head'])} |", flush=True)


if __name__ == "__main__":
    main()
