"""How far a head fitted to data would take ``tfree retok``'s step 0 (issue 18's first gate; not a training-free init).

    python experiments/retok_probe.py --work DIR [--words 200000] [--ridge 1e-2]

Takes experiments/retok.py's converted checkpoint DIR/retok-mean-first/init (least-squares embedding, body of the
BPE source) and replaces its head with a closed-form probe: the frozen trunk reads the first ``--words`` training
words, and the head solves ``min |X H^T - Y|^2 + rho |H|^2`` where X are the final-norm hidden states and Y each next
word's multi-hot pattern (one ``d x d`` solve). It prints the step-0 validation bits per byte of the least-squares
head and of the probe head, each calibrated on the validation slice as ``tfree eval`` would. The probe uses training
text, so it is not what the gate asks for (no training); it measures how much of the gap a head that reads the body's
actual hidden states can close.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from tfree_codec.decode.dictionary import Dictionary
from tfree_codec.model.checkpoint import load_model
from tfree_codec.model.transformer import Patterns
from tfree_codec.generate.bits import unit_items, windows
from tfree_codec.shards.corpus import Corpus
from tfree_codec.train.retok import calibrated, training_words


@torch.no_grad()
def hidden_and_targets(model, corpus, units, max_words: int):
    """(X (N, d) float64 final-norm states, rows of each next word's pattern as CSR (ptr, idx)) over the first
    ``max_words`` training positions, windows of the model's seq_len, each unit from <|endoftext|>."""
    T = model.config.seq_len
    xs, ptr, idx, n = [], [0], [], 0
    for u in range(len(units)):
        _, lens, flat = unit_items(corpus, units, u)
        offs = np.concatenate([[0], np.cumsum(lens)])
        for s, e in windows(len(lens), T):
            pats = [flat[offs[i]:offs[i + 1]] for i in range(s, e)]
            h = model.trunk(Patterns.from_lists(pats[:-1]))[0].double()          # (t, d)
            xs.append(h)
            for p in pats[1:]:
                idx.append(np.asarray(p, np.int64))
                ptr.append(ptr[-1] + len(p))
            n += len(pats) - 1
        if n >= max_words:
            break
    return torch.cat(xs), np.asarray(ptr, np.int64), np.concatenate(idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="experiments/retok.py's --work folder")
    ap.add_argument("--words", type=int, default=200_000)
    ap.add_argument("--ridge", type=float, default=1e-2, help="relative to the mean diagonal of X^T X")
    args = ap.parse_args()
    init = os.path.join(args.work, "retok-mean-first", "init")
    shards = os.path.join(args.work, "train-v8192")
    model, codec, _ = load_model(init)
    model.eval()
    corpus = Corpus.from_path(shards)
    _, train_units, val_units = training_words(corpus, 65536, 1024)
    dictionary = Dictionary.load(os.path.join(init, "dictionary.arrow"), codec)
    _, before = calibrated(model, corpus, val_units, dictionary)
    t0 = time.time()
    X, ptr, idx = hidden_and_targets(model, corpus, train_units, args.words)
    v, d = model.config.vocab_size, X.shape[1]
    rows = torch.from_numpy(np.repeat(np.arange(len(ptr) - 1), np.diff(ptr)))
    xty = torch.zeros(v, d, dtype=torch.float64).index_add_(0, torch.from_numpy(idx), X[rows])   # (Y^T X)
    g = X.T @ X
    g.diagonal().add_(args.ridge * float(g.diagonal().mean()))
    H = torch.linalg.solve(g, xty.T).T                                                           # (v, d)
    with torch.no_grad():
        model.head.weight.copy_(H.float())
    _, after = calibrated(model, corpus, val_units, dictionary)
    print(f"| head | step-0 validation bpb |\n|---|---:|\n| least squares on the BPE rows (tfree retok) | {before:.4f} |\n"
          f"| probe on {len(X):,} training positions (ridge {args.ridge:g}; {time.time() - t0:.0f}s) | {after:.4f} |")


if __name__ == "__main__":
    main()
