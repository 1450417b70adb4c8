"""How much of a dictionary an exact decoder must score, at best: the oracle bound behind docs/decoding.md's
"what pruning cannot do".

    python bench/mass_oracle.py [--model CHECKPOINT] [--words 92000] [--positions 200]

A model reads the bundled sample text a word at a time, and at each position every dictionary word is scored (full
scoring, under the model's calibration). Knowing every score, an oracle keeps the fewest words, the best ones, whose left-out rest carries at most ``eps`` of the softmax's mass
at temperature T. No pruned search can score fewer: its bounds only prove what the oracle knows. Reported per
setting: the median and 90th percentile of that count as a share of the dictionary, and the size of the top-p 0.95
nucleus (the words a top-p draw can pick). Sampling with top-p and evaluation's log-probabilities need the mass
within such an eps (the normaliser); greedy and top-k need only the best words, which the pruned search finds.
``--words``: the N most frequent words of the corpora in /tmp (bench/common_dict.py) instead of the model's own.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from common_dict import dictionary, machine

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tfree_codec.assets import sample_text  # noqa: E402
from tfree_codec.decode.decoder import Decoder  # noqa: E402
from tfree_codec.decode.wordscore import Ranking  # noqa: E402
from tfree_codec.generate import LanguageModel  # noqa: E402
from tfree_codec.generate.vocab import Words  # noqa: E402

EPS = (1e-6, 1e-4)


def needed(z: np.ndarray, t: float) -> tuple[list[int], int]:
    """([fewest best words leaving out <= eps of the mass, for each eps], the top-p 0.95 nucleus's size)."""
    p = np.sort(np.exp((z - z.max()) / t))[::-1]
    p /= p.sum()
    rest = np.concatenate([np.cumsum(p[::-1])[::-1], [0.0]])  # rest[j]: the mass of the words from j on
    return [int(np.argmax(rest <= e)) for e in EPS], int(np.searchsorted(np.cumsum(p), 0.95)) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint or run directory (default: the bundled model)")
    ap.add_argument("--words", type=int, default=0, help="a dictionary of this many corpus words (0: the model's)")
    ap.add_argument("--positions", type=int, default=200)
    ap.add_argument("--temperatures", default="0.8,1.0")
    args = ap.parse_args()
    lm = LanguageModel.load(args.model, "cpu")
    c = lm.vocabulary.calibration
    d = dictionary(args.words) if args.words else lm.vocab
    words = Words(d, c)
    ids, _ = words.begin(sample_text(50_000))
    window = words.window(lm.model, ids[:1], True)
    dec = Decoder(d, rank=Ranking(c.score, 1.0 / c.temperature, (c.prior_weight, c.zero_count_weight)),
                  search="full")
    temps = [float(t) for t in args.temperatures.split(",")]
    got = {t: [] for t in temps}
    for i in range(1, min(args.positions, len(ids) - 1) + 1):
        s = dec.scores(window.next_logits()[None])[0].astype(np.float64)
        b = dec.bias_by_id()
        z = s * dec.scale + (0.0 if b is None else b)
        for t in temps:
            got[t].append(needed(z, t))
        window.append(ids[i])
    print(f"machine: {machine()}")
    print(f"model: {lm.path} ({c.score}, scale {dec.scale:.3f}, prior {c.prior_weight:.3f}); dictionary "
          f"{len(d):,} words; {len(got[temps[0]])} positions of the bundled sample")
    print("| T | words to score, <= 1e-6 of the mass left out (median, p90) | <= 1e-4 | top-p 0.95 nucleus "
          "(median, p90) |")
    print("|---|---|---|---|")
    for t in temps:
        need = np.array([n for n, _ in got[t]], float) / len(d)
        nuc = np.array([k for _, k in got[t]], float)
        print(f"| {t} | {np.median(need[:, 0]):.1%}, {np.percentile(need[:, 0], 90):.1%} | "
              f"{np.median(need[:, 1]):.1%}, {np.percentile(need[:, 1], 90):.1%} | "
              f"{np.median(nuc):,.0f}, {np.percentile(nuc, 90):,.0f} words |")


if __name__ == "__main__":
    main()
