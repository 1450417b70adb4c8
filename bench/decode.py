"""Decoding speed: words/s with a 100k-word dictionary, B = 1 and B = 64, one thread and all cores, beside a
classic softmax head (d = 512, 32k vocabulary: matmul + softmax + sampling in torch) doing the same job.

    python bench/decode.py                   # builds /tmp/tfree-bench-dict-100k.arrow from /tmp/*.txt once
    python bench/decode.py --seconds 1 --batches 1 64

Every row scores every dictionary word (full scoring). Modes: greedy (scores + argmax), sampling at temperature
0.07 (+ the softmax normaliser over all words + a draw), top-k 50 and top-p 0.9 at 0.07, and log_probs (what bits
per byte needs). The logits look like a trained model's: one word's pattern high, the rest low, plus noise.
Times are per call, the median and the best of repeats taken in turn (round robin, about --seconds per
function), so that other jobs sharing the machine slow every function alike. Also shown: scoring the same words
row by row straight from the CSR patterns (no factorisation), in numba, to show what the factorisation buys.
"""
from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np
from common_dict import add_args, load_dictionary, machine
from numba import njit

from tfree_codec.decode.decoder import Decoder

V = 8192


def timed(fns: dict, seconds: float) -> dict:
    """name -> (median, best) seconds per call, calling the functions in turn (round robin) so that other jobs
    on the machine slow them all alike."""
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


def model_like_logits(d, b: int, rng) -> np.ndarray:
    x = rng.normal(-4.0, 1.5, (b, V)).astype(np.float32)
    for j, w in enumerate(rng.integers(16, len(d), b)):
        x[j, d.pattern(w)] += 8.0
    return x


@njit(cache=True, nogil=True, fastmath=True)
def _plain_scores(sig, indptr, indices, out):
    """Row-by-row CSR gather: the unfactored baseline."""
    v = sig.shape[0]
    total = np.float32(0)
    for r in range(v):
        total += sig[r]
    for w in range(indptr.shape[0] - 1):
        s = np.float32(0)
        for q in range(indptr[w], indptr[w + 1]):
            s += sig[indices[q]]
        n = indptr[w + 1] - indptr[w]
        out[w] = s / n - (total - s) / (v - n)


def softmax_head(b: int, greedy: bool):
    """The classic head: (B, 512) x (512, 32000), then argmax or softmax + a draw, in torch."""
    import torch
    g = torch.Generator().manual_seed(0)
    h = torch.randn(b, 512, generator=g)
    w = torch.randn(512, 32000, generator=g) / 512 ** 0.5

    def step():
        with torch.no_grad():
            logits = h @ w                                             # (B, 32000)
            if greedy:
                return logits.argmax(1)
            return torch.multinomial(torch.softmax(logits / 0.7, 1), 1, generator=g)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--seconds", type=float, default=2.0, help="time spent on each measurement")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    d = load_dictionary(args)
    t0 = time.perf_counter()
    dec = Decoder(d)
    sc = dec.scorer()
    print(f"scorer: {len(sc):,} words, {len(d.indices):,} pattern rows -> {len(sc.trows):,} trigrams x "
          f"{sc.m} rows + {len(sc.stid):,} trie nodes + {len(sc.xrow):,} corrections; {sc.factored:,} words "
          f"factored; built in {time.perf_counter() - t0:.2f} s")
    rng = np.random.default_rng(0)
    cores = os.cpu_count() or 1
    modes = [("greedy", dict(temperature=0)), ("sample T=0.07", dict(temperature=0.07)),
             ("top-k 50", dict(temperature=0.07, top_k=50)), ("top-p 0.9", dict(temperature=0.07, top_p=0.9))]
    print(f"\n{'what':<34}{'B':>4}{'threads':>8}{'median ms':>11}{'best ms':>9}{'words/s':>10}{'best w/s':>10}")

    def row(what, b, threads, med, best):
        print(f"{what:<34}{b:>4}{threads:>8}{med * 1e3:>11.2f}{best * 1e3:>9.2f}{b / med:>10,.0f}{b / best:>10,.0f}",
              flush=True)

    import torch
    for b in args.batches:
        x = model_like_logits(d, b, rng)
        targets = rng.integers(0, len(d), b)
        for threads in sorted({1, cores}):
            dec.num_threads = threads
            torch.set_num_threads(threads)
            fns = {f"tfree {name}": (lambda kw=kw: dec.decode(x, generator=np.random.default_rng(1), **kw))
                   for name, kw in modes}
            fns["tfree log_probs T=0.07"] = lambda: dec.log_probs(x, targets, 0.07)
            fns["softmax head 32k greedy"] = softmax_head(b, True)
            fns["softmax head 32k sample"] = softmax_head(b, False)
            for name, (med, best) in timed(fns, args.seconds).items():
                row(name, b, threads, med, best)
        numba.set_num_threads(1)
        sig = (1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.float32)
        out = np.empty(len(d), np.float32)
        indices = d.indices.astype(np.int32)

        def plain():
            for j in range(b):
                _plain_scores(sig[j], d.indptr, indices, out)
        row("unfactored CSR scores (no argmax)", b, 1, *timed({"": plain}, args.seconds / 4)[""])


if __name__ == "__main__":
    main()
