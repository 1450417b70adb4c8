"""What a learnt per-word bias would add to a word-objective model (issue 27's first arm): the model frozen, one bias
per dictionary word fitted on its own training text, and the held-out bits of the dictionary's words with and
without it.

    python experiments/word_bias.py RUN/final TRAIN_DATA TEST_DATA [--fit-words 150000] [--pseudo 1,10]

The word objective's logit is ``z(w) = h . E_w + b log(count_w + 1) + c [count_w = 0]`` (model/word_head.py); the arm
adds ``beta_w``. With everything else frozen, the maximum-likelihood ``beta`` makes each word's expected count over
the fit positions equal its observed count, and ``beta_w += log((observed_w + k) / (expected_w + k))`` reaches it
(iterative scaling, ``k`` a pseudo-count that keeps rare words' biases near 0). Fitting with the model frozen is a
bound of what the bias adds on top of this model's own learning, not of a model trained with it from the start.
Reported: the bits of every in-dictionary target of TEST_DATA per byte of the whole text (what the bias can change
of ``tfree eval``'s bits per byte; unseen words cost the same in both), before and after.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch


@torch.no_grad()
def hidden_states(model, corpus, units, dictionary, most: int):
    """(h (N, d) float32, target dictionary ids (N,)) of the in-dictionary targets of ``units`` read as
    ``tfree eval`` reads them (windows of seq_len words after <|endoftext|>), at most ``most`` of them."""
    from tfree_codec.generate.bits import unit_items, windows
    from tfree_codec.model.transformer import Patterns

    T = model.config.seq_len
    hs, ts, n = [], [], 0
    for u in range(len(units)):
        words, lens, idx = unit_items(corpus, units, u)
        ids = np.array([dictionary.index(w) for w in words], np.int64)
        offs = np.concatenate([[0], np.cumsum(lens)])
        for s, e in windows(len(words), T):
            ln = lens[s:e - 1]
            offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(ln)]))
            x = Patterns(torch.from_numpy(idx[offs[s]:offs[e - 1]]), offsets, (1, len(ln)))
            h = model.trunk(x)[0]
            keep = torch.from_numpy(ids[s + 1:e] >= 0)
            hs.append(h[keep].float())
            ts.append(torch.from_numpy(ids[s + 1:e])[keep])
            n += int(keep.sum())
        if n >= most:
            break
    return torch.cat(hs)[:most], torch.cat(ts)[:most]


def nats(h, t, E, bias, chunk: int = 4096):
    """(sum of -log p(target), expected count of every word) under softmax(h E^T + bias)."""
    total, expected = 0.0, torch.zeros(len(E), dtype=torch.float64)
    for a in range(0, len(h), chunk):
        z = h[a:a + chunk] @ E.T + bias
        lse = torch.logsumexp(z, 1)
        total += float((lse - z.gather(1, t[a:a + chunk, None])[:, 0]).sum())
        expected += torch.exp(z - lse[:, None]).sum(0).double()
    return total, expected


def main() -> None:
    from tfree_codec.decode.dictionary import prior_features
    from tfree_codec.generate.vocab import load_vocabulary
    from tfree_codec.model import checkpoint as ckpt
    from tfree_codec.shards.corpus import Corpus, make_units

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("train", help="the run's training shards (or text)")
    ap.add_argument("test", help="held-out shards (or text)")
    ap.add_argument("--fit-words", type=int, default=150_000, help="training positions the biases are fitted on")
    ap.add_argument("--pseudo", default="1,10", help="pseudo-counts k to try")
    ap.add_argument("--iterations", type=int, default=12)
    args = ap.parse_args()

    torch.manual_seed(0)
    model, codec, meta = ckpt.load_model(args.checkpoint, "cpu")
    model.eval()
    if model.config.objective == "bce":
        raise SystemExit(f"{args.checkpoint}: a model trained with the word objective is needed")
    if model.config.oe_orders:
        raise SystemExit(f"{args.checkpoint}: an Over-Encoding model (this arm reads plain models only)")
    d = load_vocabulary(args.checkpoint, codec, model.config).dictionary  # the run's, in its training order
    wh = model.word_head.set_dictionary(d.indptr, d.indices, prior_features(d.counts))
    with torch.no_grad():
        E = wh.embeddings(model.head.weight.float()).float()
        prior = (wh.feats @ wh.prior).float()
    chunk_words = int(meta.get("chunk_words", 1024))
    data = {}
    for name, path, most in (("fit", args.train, args.fit_words), ("test", args.test, 1 << 62)):
        corpus = Corpus.from_path(path, codec)
        units = make_units(corpus, chunk_words)
        data[name] = hidden_states(model, corpus, units, d, most)
        if name == "test":
            test_bytes = float(units.n_bytes.sum())
    (hf, tf), (ht, tt) = data["fit"], data["test"]
    observed = torch.bincount(tf, minlength=len(d)).double()
    base, _ = nats(ht, tt, E, prior)
    print(f"{args.checkpoint}: {len(d):,} dictionary words; fitted on {len(tf):,} training positions, tested on "
          f"{len(tt):,} in-dictionary targets ({test_bytes:,.0f} bytes)")
    print(f"  no per-word bias: {base / math.log(2) / test_bytes:.4f} bits per byte (in-dictionary targets)")
    for k in (float(x) for x in args.pseudo.split(",")):
        beta = torch.zeros(len(d))
        for _ in range(args.iterations):
            _, expected = nats(hf, tf, E, prior + beta)
            beta += torch.log((observed + k) / (expected + k)).float()
        fit, _ = nats(hf, tf, E, prior + beta)
        got, _ = nats(ht, tt, E, prior + beta)
        print(f"  per-word bias, pseudo-count {k:g}: {got / math.log(2) / test_bytes:.4f} bits per byte "
              f"({got / base - 1:+.2%} of the in-dictionary bits; fit positions {fit / len(tf):.4f} nats/word), "
              f"|beta| mean {float(beta.abs().mean()):.3f}")


if __name__ == "__main__":
    main()
