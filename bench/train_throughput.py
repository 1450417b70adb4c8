"""Training throughput in bytes of text per second: T-FREE against BPE baselines, same body, same device.

    python bench/train_throughput.py --text /tmp/english_prose.txt [--n-embd 128 --n-layer 2] [--device cpu]

Real batches (the first --mb MB of the text, packed by tfree_codec.train.data exactly as `tfree train` packs them; BPE
tokenizers trained on the same text; BPE sequences as long in bytes as T-FREE's), full training steps (forward,
loss, backward, gradient clipping, AdamW). The models take turns, one step each, so that load from other work on the machine hits
them alike; the figure is the median over the timed steps. "tfree v=8192 per-occ" is the loader before shard format
2 (every position's pattern embedded on its own) against "tfree v=8192" (each distinct word of a batch embedded
once, then indexed); "batch ms" is the loader's time to build a batch (not in items/s).

    python bench/train_throughput.py --text /tmp/english_prose.txt --oe-rows 1048576 [--oe-only]

adds "tfree v=8192 OE": the same model with Over-Encoding tables (orders --oe-orders, --oe-slices slices of
--oe-rows rows each, sparse gradients and SparseAdam as `tfree train` uses them) and prints its words/s against the
plain model's, with and without the loader's time (the n-gram rows are computed there), and the memory its tables
and their Adam moments take. --oe-only leaves out the BPE and v=4096 models.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from tfree_codec import Codec, CodecConfig
from tfree_codec.shards.corpus import Corpus, gather_patterns, make_units
from tfree_codec.train.data import Packer, PatternSource, TokenSource
from tfree_codec.model.transformer import Model, ModelConfig
from tfree_codec.train.data import train_bpe
from tfree_codec.model.device import autocast_for, resolve_device
from tfree_codec.model.optim import clip_grad_norm
from tfree_codec.text.words import EOT
from tfree_codec.decode.dictionary import prior_features


class PerOccurrence(PatternSource):
    """The loader before format 2: inputs carry every position's own pattern (same words, same embedding)."""

    def batch(self, windows, T: int):
        from tfree_codec.model.transformer import Patterns

        x, y = super().batch(windows, T)
        lens, rows = gather_patterns(x.offsets.numpy(), x.indices.numpy(), x.words.numpy())
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return Patterns(torch.from_numpy(rows), torch.from_numpy(offsets), x.shape), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", default="/tmp/english_prose.txt")
    ap.add_argument("--mb", type=float, default=2.0, help="MB of text to pack batches from")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128, help="T-FREE words per sequence")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per model (after 2 warm-up steps)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--oe-rows", type=int, default=0, help="add an Over-Encoding model with tables of this many rows")
    ap.add_argument("--oe-orders", default="2,3")
    ap.add_argument("--oe-slices", type=int, default=2)
    ap.add_argument("--oe-only", action="store_true", help="only the plain and the Over-Encoding T-FREE models")
    ap.add_argument("--objectives", default="word,mix", help="T-FREE models trained with these objectives beside BCE "
                    "(model/word_head.py), their dictionary every word of the text as `tfree train` builds it")
    ap.add_argument("--word-budget", type=int, default=ModelConfig.word_budget, help="(default: the model's)")
    ap.add_argument("--rss-of", type=int, help=argparse.SUPPRESS)  # internal: one process's memory for --oe-rows
    args = ap.parse_args()
    if args.rss_of is not None:
        return print(rss_after_a_step(args, args.rss_of))
    device = resolve_device(args.device)
    autocast, dtype = autocast_for(device, args.dtype)
    with open(args.text, encoding="utf-8") as f:
        text = f.read(int(args.mb * 1e6))
    paras = text.split("\n\n")
    docs = ["\n\n".join(paras[i:i + 40]) for i in range(0, len(paras), 40)]
    corpus = Corpus.from_texts(docs, Codec())
    units = make_units(corpus)
    texts = [corpus.text(d, a, b) for d, a, b in zip(units.doc.tolist(), units.start.tolist(), units.stop.tolist())]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_words = int((units.stop - units.start).sum())
    body = dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    runs = {"tfree v=8192": (ModelConfig(mode="tfree", vocab_size=8192, seq_len=args.seq_len, **body),
                             PatternSource(corpus, units)),
            "tfree v=8192 per-occ": (ModelConfig(mode="tfree", vocab_size=8192, seq_len=args.seq_len, **body),
                                     PerOccurrence(corpus, units))}
    if args.oe_rows:
        oe = ModelConfig(mode="tfree", vocab_size=8192, seq_len=args.seq_len, oe_rows=args.oe_rows,
                         oe_orders=tuple(int(n) for n in args.oe_orders.split(",")), oe_slices=args.oe_slices, **body)
        runs["tfree v=8192 OE"] = (oe, PatternSource(corpus, units, oe))
    for objective in filter(None, args.objectives.split(",")):
        cfg = ModelConfig(mode="tfree", vocab_size=8192, seq_len=args.seq_len, objective=objective,
                          word_budget=args.word_budget, **body)
        runs[f"tfree v=8192 {objective}"] = (cfg, PatternSource(corpus, units))
    if args.oe_only:
        del runs["tfree v=8192 per-occ"]
    if not args.oe_only:
        small = Corpus.from_texts(docs, Codec(CodecConfig(vocab_size=4096)))  # same words, rows < 4096
        runs["tfree v=4096"] = (ModelConfig(mode="tfree", vocab_size=4096, seq_len=args.seq_len, **body),
                                PatternSource(small, make_units(small)))
    for vocab in (8192, 32000) if not args.oe_only else ():
        tok = train_bpe(texts, vocab)
        src = TokenSource(corpus, units, tok, tok.token_to_id(EOT))
        bpt = n_bytes / int(src.lengths.sum())
        T = round(args.seq_len * (n_bytes / n_words) / bpt)
        runs[f"bpe {vocab}"] = (ModelConfig(mode="bpe", vocab_size=tok.get_vocab_size(), seq_len=T, **body), src)
    state = {}
    for name, (cfg, src) in runs.items():
        torch.manual_seed(0)
        model = Model(cfg).to(device).sparse_tables()  # as `tfree train` makes them (no-op without tables)
        if cfg.objective != "bce":
            words = dictionary_for(corpus, units)
            model.word_head.set_dictionary(words.indptr, words.indices, prior_features(words.counts))
            src.dict_ids = np.array([words.index(w) for w in corpus.lexicon_words], np.int64)
        opt = model.configure_optimizer(1e-3, device_type=device.type)
        packer = Packer(src.lengths, units.last, units.n_bytes, cfg.seq_len, seed=0)
        state[name] = (model, opt, packer, src, [])
    for step in range(args.steps + 2):
        for name, (model, opt, packer, src, times) in state.items():
            wins, nbytes = packer.next_windows(args.batch_size)
            tb = time.perf_counter()
            x, y = src.batch(wins, model.config.seq_len)
            tb = time.perf_counter() - tb
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            with autocast():
                _, loss = model(x.to(device), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(model.parameters(), 1.0)
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= 2:
                times.append((time.perf_counter() - t0, nbytes, model.config.seq_len * args.batch_size, tb))
    print(f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {device} {dtype}, "
          f"{torch.get_num_threads()} threads; body {args.n_layer} layers d={args.n_embd}; batch {args.batch_size}")
    print(f"{'model':<20} {'seq':>5} {'params':>10} {'emb+head':>10} {'items/s':>9} {'kB/s':>8} {'vs bpe 32000':>12} "
          f"{'batch ms':>8}")
    rates = {}
    for name, (model, _, _, _, times) in state.items():
        rates[name] = (statistics.median(b / t for t, b, _, _ in times), statistics.median(n / t for t, _, n, _ in times),
                       statistics.median(1e3 * tb for _, _, _, tb in times),
                       statistics.median(n / (t + tb) for t, _, n, tb in times))
    for name, (model, _, _, _, _) in state.items():
        p = model.num_params()
        vs = f"{rates[name][0] / rates['bpe 32000'][0]:>11.2f}x" if "bpe 32000" in rates else f"{'-':>12}"
        print(f"{name:<20} {model.config.seq_len:>5} {p['total']:>10,} {p['embedding'] + p['head']:>10,} "
              f"{rates[name][1]:>9,.0f} {rates[name][0] / 1e3:>8.1f} {vs} {rates[name][2]:>8.1f}")
    for objective in filter(None, args.objectives.split(",")):
        r = rates[f"tfree v=8192 {objective}"][3] / rates["tfree v=8192"][3]
        W = len(dictionary_for(corpus, units))
        print(f"objective {objective} / bce words/s with the loader's time: {r:.1%} ({W:,}-word dictionary, budget "
              f"{args.word_budget:,}; {'met' if r >= 0.8 else 'NOT MET'}: >= 80%)")
    if "tfree v=8192 per-occ" in rates:
        v2, v1 = rates["tfree v=8192"][1], rates["tfree v=8192 per-occ"][1]
        print(f"format 2 loader / per-occurrence: {v2 / v1:.2f}x words/s ({'met' if v2 >= v1 else 'NOT MET'}: not below)")
    if "tfree v=8192 OE" in rates:
        oe, plain = rates["tfree v=8192 OE"], rates["tfree v=8192"]
        model = state["tfree v=8192 OE"][0]
        floats = sum(t.weight.numel() for t in model.oe_tables)
        rows = args.oe_rows
        print(f"Over-Encoding {args.oe_orders} x {args.oe_slices} slices of {rows:,} rows: {floats:,} table floats, "
              f"{floats * 12 / 1e9:.2f} GB with the two Adam moments ({floats * 12 / rows:,.0f} bytes per row index)")
        small = 16384
        rss = [int(subprocess.run([sys.executable, __file__, "--rss-of", str(n), "--oe-orders", args.oe_orders,
                                   "--oe-slices", str(args.oe_slices), "--n-embd", str(args.n_embd), "--n-layer",
                                   str(args.n_layer), "--n-head", str(args.n_head)], capture_output=True, text=True,
                                  check=True).stdout.split()[-1]) for n in (small, rows)]
        print(f"measured: a process that trained one step of the {rows:,}-row model holds {(rss[1] - rss[0]) / 1e9:.2f}"
              f" GB more than with {small:,} rows: {(rss[1] - rss[0]) / (rows - small):,.0f} bytes per row index")
        r_step, r_all = oe[1] / plain[1], oe[3] / plain[3]
        print(f"OE / plain words/s: {r_step:.1%} per step, {r_all:.1%} with the loader's time "
              f"({'met' if r_all >= 0.85 else 'NOT MET'}: >= 85%)")


_DICTIONARY = {}


def dictionary_for(corpus, units):
    """Every word of the text, counted, as `tfree train` builds its run's dictionary (once per bench)."""
    from collections import Counter

    from tfree_codec.decode.dictionary import Dictionary

    if "d" not in _DICTIONARY:
        counts = Counter()
        for d, a, b in zip(units.doc.tolist(), units.start.tolist(), units.stop.tolist()):
            counts.update(corpus.words(d, a, b))
        counts[EOT] += int(units.last.sum())
        _DICTIONARY["d"] = Dictionary.from_counts(corpus.codec, counts)
    return _DICTIONARY["d"]


def rss_after_a_step(args, rows: int) -> int:
    """Resident bytes of this process after one sparse training step of an Over-Encoding model (weights, gradients
    and both optimizers' moments allocated)."""
    from tfree_codec.model.transformer import Patterns

    cfg = ModelConfig(mode="tfree", vocab_size=8192, seq_len=8, n_layer=args.n_layer, n_head=args.n_head,
                      n_embd=args.n_embd, oe_rows=rows, oe_orders=tuple(int(n) for n in args.oe_orders.split(",")),
                      oe_slices=args.oe_slices)
    model = Model(cfg).sparse_tables()
    opt = model.configure_optimizer(1e-3)
    x = Patterns.from_lists([[1, 2]] * 8, (1, 8))
    x.oe_rows = torch.randint(0, rows, (8, len(model.oe_tables)))
    _, loss = model(x, Patterns.from_lists([[3]] * 8, (1, 8)))
    loss.backward()
    opt.step()
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
