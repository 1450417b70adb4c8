"""Decoding speed against dictionary size: the pruned search (the default) and full scoring (every word), side by
side in one process, B = 1 and B = 64, with the share of the dictionary the pruned search scored.

    python bench/decode.py                                   # 12k, 50k, 100k and all (345k) words; 1 thread
    python bench/decode.py --sizes 100000 --batches 1 --seconds 2

Dictionaries: the N most frequent words of the corpora in /tmp (bench/common_dict.py; built and cached once).
Two kinds of logits:

* ``synthetic``: one dictionary word's pattern high, the rest low, plus noise (a confident model); ranked by s
  alone, as ``Decoder(d)`` ranks.
* ``model``: the bundled model's logits over a passage of the bundled sample, ranked as generation ranks
  (z = s / T_cal + the count prior of the model's calibration, under the score it was trained for): a small
  model, far less sure of its words. ``--word-run CHECKPOINT`` (a model trained with ``--objective word``) gives
  the ``mean_logit`` rows that model's logits instead; ``--model CHECKPOINT`` replaces the bundled model.

``--scores`` picks the word scores: ``sigmoid_diff`` (the default) and ``mean_logit`` (z = a * mean logit of the
word's rows + prior; synthetic logits then use a = 1 and the prior weights (0.5, -1)).

Modes: greedy, sampling (synthetic: T = 0.07; model: T = 0.8 and top-p 0.95, generation's defaults), top-k 50,
and log_probs at T = 1 (what bits per byte needs). Times are per call, the median over round-robin repeats of
every function (about --seconds each), so that other jobs slow both searches alike. "read" is the share of the
dictionary's words the pruned search scored one by one (rows it gave up on count as all of them); "same" says
whether the greedy words equal full scoring's (sampling is checked by tests/test_search.py: at most 1e-6 of the
mass left out).
"""
from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np
from common_dict import dictionary, machine

from tfree_codec.decode.decoder import Decoder
from tfree_codec.decode.dictionary import count_prior
from tfree_codec.decode.wordscore import Ranking

SIZES = [12_000, 50_000, 100_000, 500_000]


def timed(fns: dict, seconds: float) -> dict:
    """name -> (median, best) seconds per call, calling the functions in turn (round robin)."""
    for fn in fns.values():
        fn()  # warm up (compilation, buffers)
    times = {name: [] for name in fns}
    t_end = time.perf_counter() + seconds * len(fns)
    while time.perf_counter() < t_end or min(len(t) for t in times.values()) < 3:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (float(np.median(t)), float(np.min(t))) for name, t in times.items()}


def synthetic_logits(d, b: int, rng) -> np.ndarray:
    x = rng.normal(-4.0, 1.5, (b, d.config.vocab_size)).astype(np.float32)
    for j, w in enumerate(rng.integers(16, len(d), b)):
        x[j, d.pattern(w)] += 8.0
    return x


def model_logits(b: int, path=None):
    """(b, v) logits of the bundled model (or the checkpoint at ``path``) along a passage of the bundled sample,
    and its calibration (with its score)."""
    import torch

    import tfree_codec
    from tfree_codec import batch_encode
    from tfree_codec.assets import sample_text

    lm = tfree_codec.load(path, device="cpu")
    T = lm.model.config.seq_len
    words = lm.codec.split(sample_text(200_000))[5000:]
    rows = []
    with torch.no_grad():
        for k in range(-(-b // T)):
            enc = batch_encode(lm.codec, [words[k * T:(k + 1) * T]])
            rows.append(lm.model(enc.lm_inputs()[0])[0][0].float().numpy())  # inputs only: the logits, no loss
    return np.concatenate(rows)[:b], {**lm.calibration, "score": lm.vocabulary.calibration.score}


def read_share(dec) -> float:
    r = dec.ranker().read
    rows = r[0] + r[2]
    return (r[1] + r[2]) / rows if rows else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="dictionary sizes (words, markers aside)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="numba threads (the gate: 1)")
    ap.add_argument("--logits", nargs="+", default=["synthetic", "model"], choices=["synthetic", "model"])
    ap.add_argument("--seconds", type=float, default=1.0, help="time spent on each measurement")
    ap.add_argument("--scores", nargs="+", default=["sigmoid_diff"], choices=["sigmoid_diff", "mean_logit"])
    ap.add_argument("--model", help="the checkpoint whose logits are the model rows (default: the bundled model)")
    ap.add_argument("--word-run", help="a checkpoint trained with --objective word: its logits for mean_logit")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    model_x, cal = model_logits(max(args.batches), args.model) if "model" in args.logits else (None, None)
    word_x, word_cal = model_logits(max(args.batches), args.word_run) if args.word_run else (None, None)
    print(f"\n{'score':<13}{'logits':<10}{'words':>8}{'B':>4}{'thr':>4}  {'mode':<16}{'full w/s':>16}{'pruned w/s':>16}"
          f"{'x':>7}{'read':>8}  same\n{'':>50}(median, best)")
    for size in args.sizes:
        d = dictionary(size)
        t0 = time.perf_counter()
        Decoder(d).scorer()
        print(f"{len(d):,} words: scorer and index ready in {time.perf_counter() - t0:.2f} s", flush=True)
        for score, kind in [(sc, k) for sc in args.scores for k in args.logits]:
            mx, mc = (word_x, word_cal) if score == "mean_logit" and word_x is not None else (model_x, cal)
            if kind == "synthetic":
                rank = Ranking(score) if score == "sigmoid_diff" else Ranking(score, 1.0, (0.5, -1.0))
                sample = dict(temperature=0.07 if score == "sigmoid_diff" else 0.8)
            elif mx is None or mc["score"] != score:
                continue  # no model trained for this score (--word-run)
            else:
                rank = Ranking(score, 1 / mc["temperature"], (mc["prior_weight"], mc["zero_count_weight"]))
                sample = dict(temperature=0.8, top_p=0.95)
            modes = {"greedy": dict(temperature=0), f"sample T={sample['temperature']}": sample,
                     "top-k 50": dict(temperature=sample["temperature"], top_k=50), "log_probs T=1": None}
            for b in args.batches:
                x = synthetic_logits(d, b, np.random.default_rng(0)) if kind == "synthetic" else mx[:b]
                targets = np.random.default_rng(1).integers(16, len(d), b)
                for threads in args.threads:
                    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
                    for mode, kw in modes.items():
                        decs = {s: Decoder(d, search=s, num_threads=threads, rank=rank) for s in ("full", "pruned")}
                        if kw is None:
                            fns = {s: (lambda dec=dec: dec.log_probs(x, targets, 1.0)) for s, dec in decs.items()}
                        else:
                            fns = {s: (lambda dec=dec, kw=kw: dec.decode(x, generator=np.random.default_rng(1), **kw))
                                   for s, dec in decs.items()}
                        t = timed(fns, args.seconds)
                        same = ""
                        if mode == "greedy":
                            same = str(list(decs["full"].decode(x, temperature=0).ids)
                                       == list(decs["pruned"].decode(x, temperature=0).ids))
                        (fm, fb), (pm, pb) = t["full"], t["pruned"]
                        print(f"{score:<13}{kind:<10}{len(d):>8,}{b:>4}{threads:>4}  {mode:<16}{b / fm:>9,.0f}{b / fb:>7,.0f}"
                              f"{b / pm:>9,.0f}{b / pb:>7,.0f}{fm / pm:>7.2f}{read_share(decs['pruned']):>8.2%}  {same}",
                              flush=True)
    if model_x is not None:
        d = dictionary(100_000)
        print(f"\n(model logits: calibration T_cal {cal['temperature']:.4f}, prior weight {cal['prior_weight']:.3f}; "
              f"count prior of the 100k dictionary spans {np.ptp(count_prior(d.counts, cal['prior_weight'])):.2f})")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
