"""Bits per byte on held-out text, for T-FREE models and their BPE baselines alike (SPEC section 5).

Both kinds of model read the same units of text (data.py): each starts from ``<|endoftext|>`` as context, is cut
into windows of ``seq_len`` predictions, and is charged for every item it contains plus the ``<|endoftext|>`` that
ends a document. bits per byte = total bits / UTF-8 bytes of the text.

The T-FREE convention (printed by ``tfree eval``): for the next word w,

    p(w) = (1 - p_unk) * softmax_D(s / temperature)[w]        if w is in the dictionary D
    p(w) = p_unk * p_spell(w)                                  otherwise

with ``s(w) = mean(sigmoid[P_w]) - mean(sigmoid[not P_w])`` over the dictionary, ``temperature`` and ``p_unk``
(the unseen-word rate) fitted on the training run's validation slice and stored in the checkpoint, and ``p_spell`` a
byte-level 5-gram model (interpolated Witten-Bell, uniform over 256 bytes + end-of-word at the bottom) trained on
the dictionary's word types. ``p_spell`` sums to one over all byte strings, dictionary words included, so the mass
it gives them is simply lost: the result is a true code length, never an underestimate. ``--unk-charge bytes``
replaces ``p_spell`` by the SPEC's pessimistic ``256^-(bytes+1)``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import Corpus, Units
from .dictionary import Dictionary
from .words import EOT, MARKERS

LN2 = math.log(2)
BOS, EOW, NSYM = 257, 256, 258  # spelling model symbols: bytes 0..255, end of word, start padding


class SpellingModel:
    """p(word) over all byte strings: interpolated Witten-Bell byte n-grams trained on word types.

    Unseen words are mostly rare words, and rare words look like word *types* more than like running text, so each
    distinct word counts once."""

    def __init__(self, words, order: int = 5):
        self.order = order
        self.tables = []  # per context length k: (keys ctx*NSYM+sym, counts, context ids, their totals, their types)
        grid, valid = _grid([w for w in words if w not in MARKERS], order)
        sym = grid[:, order - 1:]
        for k in range(order):
            ctx = _contexts(grid, order, k)
            keys, counts = np.unique((ctx * NSYM + sym)[valid], return_counts=True)
            cids, inv = np.unique(keys // NSYM, return_inverse=True)
            self.tables.append((keys, counts, cids, np.bincount(inv, weights=counts).astype(np.int64),
                                np.bincount(inv).astype(np.int64)))

    def log2prob(self, words) -> np.ndarray:
        """log2 p(w) of each word, (n,) float64."""
        words = list(words)
        if not words:
            return np.zeros(0)
        grid, valid = _grid(words, self.order)
        sym = grid[:, self.order - 1:]
        p = np.full(sym.shape, 1.0 / 257)  # the floor: uniform over 256 bytes and end-of-word
        for k, (keys, counts, cids, totals, types) in enumerate(self.tables):
            ctx = _contexts(grid, self.order, k)
            c_hs = _lookup(keys, counts, ctx * NSYM + sym)
            c_h, n_h = _lookup(cids, totals, ctx), _lookup(cids, types, ctx)
            p = np.where(c_h > 0, (c_hs + n_h * p) / np.maximum(c_h + n_h, 1), p)
        return np.where(valid, np.log2(p), 0.0).sum(1)


def _grid(words, order: int):
    """(n, order-1 + L) int64 symbols: order-1 BOS, the word's UTF-8 bytes, EOW, BOS filling the rest; and (n, L)
    bool: which predicted positions (the last L columns) belong to the word."""
    raw = [w.encode("utf-8", "surrogatepass") for w in words]
    lens = np.array([len(b) for b in raw], np.int64)
    L = int(lens.max(initial=0)) + 1
    grid = np.full((len(raw), order - 1 + L), BOS, np.int64)
    for i, b in enumerate(raw):
        grid[i, order - 1:order - 1 + len(b)] = np.frombuffer(b, np.uint8)
        grid[i, order - 1 + len(b)] = EOW
    return grid, np.arange(L)[None, :] <= lens[:, None]


def _contexts(grid, order: int, k: int):
    """(n, L) ids of the k symbols before each predicted position (0 for k = 0)."""
    L = grid.shape[1] - (order - 1)
    ctx = np.zeros((grid.shape[0], L), np.int64)
    for j in range(order - 1 - k, order - 1):
        ctx = ctx * NSYM + grid[:, j:j + L]
    return ctx


def _lookup(keys, values, query):
    """values[keys == query], 0 where the key is absent (keys sorted)."""
    if len(keys) == 0:
        return np.zeros(query.shape, np.int64)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[pos] == query, values[pos], 0)


# -- dictionary scores ---------------------------------------------------------------------------------------------
def dictionary_scorer(dictionary):
    """``.scores((N, v) logits) -> (N, W)``: s(w) = mean(sigmoid[P_w]) - mean(sigmoid[not P_w]) for every word, on
    the logits' device (the decoder's torch path: one sparse (W, v) x (v, N) product)."""
    from .decode_torch import TorchDecoder  # noqa: PLC0415

    return TorchDecoder(dictionary)


def log_softmax_at(scores, target, betas):
    """For each inverse temperature beta: log softmax(beta * scores)[target], summed over rows. scores (N, W),
    target (N,) -> (len(betas),) float64. Written out because torch's CPU logsumexp is ~8x slower than exp."""
    top = scores.max(1, keepdim=True).values                                  # (N, 1)
    s_t = scores.gather(1, target[:, None])                                   # (N, 1)
    buf = torch.empty_like(scores)
    out = []
    for beta in betas:
        torch.sub(scores, top, out=buf).mul_(beta).exp_()
        out.append(float((beta * (s_t - top) - buf.sum(1, keepdim=True).log()).sum()))
    return np.array(out)


@dataclass
class Calibration:
    """How dictionary scores become probabilities (fitted on the validation slice, stored in the checkpoint)."""

    temperature: float = 0.06
    p_unk: float = 0.02
    unk_charge: str = "spell"   # "spell" (SpellingModel) or "bytes" (SPEC's 256^-(bytes+1))
    spell_order: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def temperature_grid(center: float, ratio: float = 1.25, n: int = 7) -> list[float]:
    return [center * ratio ** (i - n // 2) for i in range(n)]


# -- evaluation streams ----------------------------------------------------------------------------------------------
def windows(length: int, T: int):
    """(start, stop) of windows of at most T+1 items over a stream of ``length`` items, overlapping by one, so that
    items 1..length-1 are each a target exactly once."""
    return [(s, min(s + T + 1, length)) for s in range(0, max(length - 1, 0), T)]


def _unit_items(corpus: Corpus, units: Units, u: int):
    """The words of unit u with <|endoftext|> before (context) and after (when it ends its document), their
    pattern lengths and indices."""
    d, a, b = int(units.doc[u]), int(units.start[u]), int(units.stop[u])
    words = corpus.words(d, a, b)
    lens, idx = corpus.patterns(d, a, b)
    eot, n_eot = corpus.eot_pattern, np.array([len(corpus.eot_pattern)], np.int64)
    tail = bool(units.last[u])
    words = [EOT, *words, *([EOT] if tail else [])]
    lens = np.concatenate([n_eot, lens, *([n_eot] if tail else [])])
    idx = np.concatenate([eot, idx.astype(np.int64), *([eot] if tail else [])])
    return words, lens, idx


@torch.no_grad()
def evaluate_tfree(model, corpus: Corpus, units: Units, dictionary, scorer, spelling,
                   betas, batch_size: int = 16, device="cpu", autocast=None, progress=None) -> dict:
    """Sum of log-probabilities of every target word under each inverse temperature in ``betas``, and the counts
    that make them bits per byte (``tfree_bpb``). ``dictionary.index(word)`` -> id or -1."""
    from .model import Patterns  # noqa: PLC0415

    T = model.config.seq_len
    lp = np.zeros(len(betas))
    acc = {"items": 0, "in_dict": 0, "unseen": 0, "spell_bits": 0.0, "unseen_bytes": 0, "word_bytes": 0,
           "words": 0, "covered_words": 0, "covered_bytes": 0, "bytes": float(units.n_bytes.sum())}
    pending = []  # (lens (<=T,), idx, target ids (<=T,))

    def flush():
        B = len(pending)
        lens = np.zeros((B, T), np.int64)
        tgt = np.full((B, T), -2, np.int64)   # -2: padding, -1: unseen word, else the dictionary id
        for i, (ln, _, tid) in enumerate(pending):
            lens[i, :len(ln)] = ln
            tgt[i, :len(tid)] = tid
        offsets = np.concatenate([[0], np.cumsum(lens.reshape(-1))])
        x = Patterns(torch.from_numpy(np.concatenate([p[1] for p in pending])), torch.from_numpy(offsets), (B, T))
        with autocast or _null():
            logits, _ = model(x.to(device))
        tgt_t = torch.from_numpy(tgt.reshape(-1)).to(device)
        keep = tgt_t >= 0
        if keep.any():
            scores = scorer.scores(logits.reshape(B * T, -1)[keep])
            lp[:] += log_softmax_at(scores, tgt_t[keep], betas)
        pending.clear()

    for u in range(len(units)):
        words, lens, idx = _unit_items(corpus, units, u)
        ids = np.array([dictionary.index(w) for w in words], np.int64)
        unseen = [w for w, i in zip(words[1:], ids[1:]) if i < 0]
        acc["spell_bits"] += float(-spelling.log2prob(unseen).sum()) if unseen else 0.0
        acc["unseen_bytes"] += sum(len(w.encode("utf-8", "surrogatepass")) for w in unseen)
        acc["unseen"] += len(unseen)
        acc["items"] += len(words) - 1
        acc["in_dict"] += int((ids[1:] >= 0).sum())
        plain = [(w, i) for w, i in zip(words[1:], ids[1:]) if w not in MARKERS]
        nb = [len(w.encode("utf-8", "surrogatepass")) for w, _ in plain]
        acc["words"] += len(plain)
        acc["word_bytes"] += sum(nb)
        acc["covered_words"] += sum(1 for _, i in plain if i >= 0)
        acc["covered_bytes"] += sum(n for n, (_, i) in zip(nb, plain) if i >= 0)
        offs = np.concatenate([[0], np.cumsum(lens)])
        for s, e in windows(len(words), T):
            pending.append((lens[s:e - 1], idx[offs[s]:offs[e - 1]], ids[s + 1:e]))
            if len(pending) == batch_size:
                flush()
        if progress:
            progress(u)
    if pending:
        flush()
    acc["log_probs"] = lp
    return acc


def tfree_bpb(acc: dict, betas, calibration: Calibration | None = None) -> dict:
    """Bits per byte at each temperature from ``evaluate_tfree``'s sums; p_unk from the calibration, or fitted
    (maximum likelihood, add-half) on this very data when none is given."""
    n, k = acc["items"], acc["unseen"]
    p_unk = calibration.p_unk if calibration else (k + 0.5) / (n + 1)
    unk_bits = acc["spell_bits"] if (calibration is None or calibration.unk_charge == "spell") \
        else 8.0 * (acc["unseen_bytes"] + k)
    dict_bits = -acc["log_probs"] / LN2 - (n - k) * math.log2(1 - p_unk)
    total = dict_bits + k * -math.log2(p_unk) + unk_bits
    best = int(np.argmin(total))
    return {"bpb": total / max(acc["bytes"], 1), "best": best, "temperature": 1.0 / betas[best], "p_unk": p_unk,
            "unseen_bits_share": float((k * -math.log2(p_unk) + unk_bits) / total[best]) if total[best] else 0.0,
            "coverage_words": acc["covered_words"] / max(acc["words"], 1),
            "coverage_bytes": acc["covered_bytes"] / max(acc["word_bytes"], 1)}


@torch.no_grad()
def evaluate_bpe(model, source, units: Units, batch_size: int = 16, device="cpu", autocast=None, progress=None) -> dict:
    """Total bits of a BPE model on ``source``'s units (a data.TokenSource), each from <|endoftext|>."""
    T = model.config.seq_len
    bits, items, pending = 0.0, 0, []

    def flush():
        nonlocal bits
        x = torch.zeros(len(pending), T, dtype=torch.int64)
        y = torch.full((len(pending), T), -1, dtype=torch.int64)
        for i, row in enumerate(pending):
            x[i, :len(row) - 1] = torch.from_numpy(row[:-1])
            y[i, :len(row) - 1] = torch.from_numpy(row[1:])
        with autocast or _null():
            logits, _ = model(x.to(device))
        nats = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.to(device).reshape(-1),
                                                 ignore_index=-1, reduction="sum")
        bits += float(nats) / LN2
        pending.clear()

    for u in range(len(units)):
        toks = np.concatenate([[source.eot_id], source.item_tokens(u, 0, int(source.lengths[u])),
                               [source.eot_id] if units.last[u] else []]).astype(np.int64)
        items += len(toks) - 1
        for s, e in windows(len(toks), T):
            pending.append(toks[s:e])
            if len(pending) == batch_size:
                flush()
        if progress:
            progress(u)
    if pending:
        flush()
    n_bytes = float(units.n_bytes.sum())
    return {"bits": bits, "items": items, "bytes": n_bytes, "bpb": bits / max(n_bytes, 1)}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


DICT_FILE = "dictionary.arrow"


# -- tfree eval ------------------------------------------------------------------------------------------------------
def evaluate_checkpoint(path: str, data: str, device: str = "auto", batch_size: int = 16, progress: bool = False) -> dict:
    """Held-out bits per byte of a checkpoint on DATA (a shard directory or a UTF-8 text file), with parameter
    counts and, for T-FREE, the dictionary's coverage and both unseen-word conventions."""
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415

    from . import checkpoint as ckpt  # noqa: PLC0415
    from .data import TokenSource, make_units  # noqa: PLC0415
    from .train import TOKENIZER_FILE, autocast_for, load_tokenizer, resolve_device  # noqa: PLC0415

    dev = resolve_device(device)
    model, codec, meta = ckpt.load_model(path, dev)
    model.eval()
    autocast, _ = autocast_for(dev, "auto")
    mode = model.config.mode
    corpus = Corpus.from_path(data, codec if mode == "tfree" else None)
    units = make_units(corpus, int(meta.get("chunk_words", 1024)))
    bar = _bar(len(units), progress)
    report = {"checkpoint": path, "data": data, "mode": mode, "params": model.num_params(), "bytes": float(units.n_bytes.sum())}
    if mode == "bpe":
        tok = load_tokenizer(os.path.join(path, TOKENIZER_FILE))
        source = TokenSource(corpus, units, tok, tok.token_to_id(EOT))
        r = evaluate_bpe(model, source, units, batch_size, dev, autocast(), progress=bar)
        report.update(bpb=r["bpb"], tokens=r["items"], convention="the model's own softmax over its BPE vocabulary")
    else:
        dictionary = Dictionary.load(os.path.join(path, DICT_FILE), codec)
        try:
            with open(os.path.join(path, "calibration.json"), encoding="utf-8") as f:
                cal = Calibration.from_dict(json.load(f))
        except FileNotFoundError:
            cal = Calibration()
        spelling = SpellingModel(dictionary.words, cal.spell_order)
        scorer = dictionary_scorer(dictionary)
        betas = [1.0 / cal.temperature]
        acc = evaluate_tfree(model, corpus, units, dictionary, scorer, spelling, betas, batch_size, dev, autocast(),
                             progress=bar)
        r = tfree_bpb(acc, betas, cal)
        pess = tfree_bpb(acc, betas, Calibration(cal.temperature, cal.p_unk, "bytes"))
        report.update(bpb=float(r["bpb"][0]), bpb_unk_bytes=float(pess["bpb"][0]), words=acc["items"],
                      unseen_words=acc["unseen"], unseen_bits_share=r["unseen_bits_share"],
                      coverage_words=r["coverage_words"], coverage_bytes=r["coverage_bytes"],
                      dictionary_words=len(dictionary), temperature=cal.temperature, p_unk=cal.p_unk,
                      convention=(f"dictionary softmax at temperature {cal.temperature:.4f} times 1-p_unk; unseen words "
                                  f"p_unk={cal.p_unk:.4f} times a byte {cal.spell_order}-gram spelling probability"))
    if bar:
        bar.close()
    return report


def _bar(total: int, on: bool):
    return _Progress(total) if on else None


class _Progress:
    """A tqdm bar that ``evaluate_*`` advance once per unit."""

    def __init__(self, total: int):
        from tqdm import tqdm  # noqa: PLC0415

        self.bar = tqdm(total=total, unit="unit", dynamic_ncols=True, leave=False)

    def __call__(self, u: int) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
