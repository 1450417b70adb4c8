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

import contextlib
import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..config import TfreeError
from .checks import check_calibration
from .data import Corpus, Units
from ..decode.dictionary import Dictionary
from ..text.words import EOT, MARKERS

LN2 = math.log(2)
DICT_FILE = "dictionary.arrow"  # in run directories and checkpoints
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
    from ..decode.torch_decoder import TorchDecoder  # noqa: PLC0415

    return TorchDecoder(dictionary)


def log_softmax_at(scores, target, params, feats):
    """For each (scale a, prior weights w) in ``params``: log softmax(a * scores + feats @ w)[target], summed over
    rows. scores (N, W), target (N,), feats (W, K) (``prior_features``) -> (len(params),) float64. Written out
    because torch's CPU logsumexp is ~8x slower than exp."""
    buf = torch.empty_like(scores)
    out = []
    for a, w in params:
        torch.mul(scores, a, out=buf)
        if any(w):
            buf.add_(feats @ torch.tensor(w, dtype=feats.dtype, device=feats.device))
        z_t = buf.gather(1, target[:, None])                                  # (N, 1)
        top = buf.max(1, keepdim=True).values
        buf.sub_(top).exp_()
        out.append(float((z_t - top - buf.sum(1, keepdim=True).log()).sum()))
    return np.array(out)


def fit_scale(scores, target, feats, prior: bool = True, init=(1 / 0.07, 0.0, 0.0), iters: int = 25) -> tuple:
    """Maximum-likelihood (a, w) of p(w) = softmax(a * s + feats @ w) on held-out rows (feats: log(count + 1) and
    [count = 0], ``prior_features``): a log-linear model, so the log-likelihood is concave and Newton's method with
    step halving finds the optimum. w = 0 unless ``prior``. scores (N, W) float32, target (N,), feats (W, K).
    Returns (a, *w)."""
    F = feats.float()
    K = F.shape[1]
    FF = (F[:, :, None] * F[:, None, :]).reshape(-1, K * K)
    calls = [0]

    def stats(theta):
        calls[0] += 1
        n = 1 + K
        ll, g, H = 0.0, torch.zeros(n, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64)
        a, w = float(theta[0]), theta[1:].float()
        bias = F @ w if bool(w.any()) else None
        for r in range(0, len(target), 256):  # row chunks keep the (rows, W) temporaries small
            S, t = scores[r:r + 256], target[r:r + 256]
            P = torch.mul(S, a)
            if bias is not None:
                P.add_(bias)
            z_t = P.gather(1, t[:, None])[:, 0].double()
            top = P.max(1, keepdim=True).values
            P.sub_(top).exp_()
            tot = P.sum(1, keepdim=True)
            P.div_(tot)
            ll += float((z_t - top[:, 0].double() - tot[:, 0].double().log()).sum())
            PS = P * S
            e1, eF = PS.sum(1).double(), (P @ F).double()                       # E[s], E[f]
            e11, eFF, e1F = (PS * S).sum(1).double(), (P @ FF).double().reshape(-1, K, K), (PS @ F).double()
            x = torch.cat([S.gather(1, t[:, None]).double(), F[t].double()], 1)  # the targets' features
            e = torch.cat([e1[:, None], eF], 1)
            g += (x - e).sum(0)
            second = torch.zeros(len(t), n, n, dtype=torch.float64)
            second[:, 0, 0], second[:, 0, 1:], second[:, 1:, 0], second[:, 1:, 1:] = e11, e1F, e1F, eFF
            H -= (second - e[:, :, None] * e[:, None, :]).sum(0)
        return ll, g, H

    theta = torch.zeros(1 + K, dtype=torch.float64)
    theta[:len(init)] = torch.tensor(init[:1 + K], dtype=torch.float64)
    free = torch.ones(1 + K, dtype=torch.bool)
    free[1:] = prior
    # a feature that is constant over the dictionary (every count seen, say) moves no probability: leave its weight
    free[1:] &= (F.max(0).values > F.min(0).values).cpu()
    theta[~free] = 0.0
    ll, g, H = stats(theta)
    for _ in range(iters):
        step = torch.zeros_like(theta)
        Hf = H[free][:, free]
        step[free] = -torch.linalg.solve(Hf - 1e-9 * torch.eye(len(Hf), dtype=torch.float64), g[free])
        for _ in range(30):  # halve until the likelihood does not fall and the scale stays positive
            cand = theta + step
            if cand[0] > 0:
                ll2, g2, H2 = stats(cand)
                if ll2 >= ll - 1e-9:
                    break
            step = step / 2
        else:
            break
        done = abs(ll2 - ll) < 1e-6 * max(1.0, abs(ll))
        theta, ll, g, H = cand, ll2, g2, H2
        if done:
            break
    return tuple(float(x) for x in theta)


@dataclass
class Calibration:
    """How dictionary scores become probabilities: p(w) = (1 - p_unk) softmax(s / temperature + prior_weight *
    log(count + 1) + zero_count_weight * [count = 0]); ``temperature_plain`` is the fit without the count prior (the
    SPEC's score alone). Fitted on the validation slice, stored in the checkpoint. zero_count_weight prices the
    words the training text never showed (a continued model's source words): 0 where there are none."""

    temperature: float = 0.07
    prior_weight: float = 0.0
    zero_count_weight: float = 0.0
    temperature_plain: float = 0.07
    p_unk: float = 0.02
    unk_charge: str = "spell"   # "spell" (SpellingModel) or "bytes" (SPEC's 256^-(bytes+1))
    spell_order: int = 4

    def params(self) -> list:
        """[(scale, prior weights)] of the calibrated score and of the plain one (``log_softmax_at``)."""
        return [(1.0 / self.temperature, (self.prior_weight, self.zero_count_weight)),
                (1.0 / self.temperature_plain, (0.0, 0.0))]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        check_calibration(d)  # a value of the wrong kind ("hot", null, -1) is one TfreeError naming its field
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def load_calibration(path: str) -> Calibration:
    """The checkpoint directory's calibration.json; the defaults when it has none."""
    try:
        with open(os.path.join(path, "calibration.json"), encoding="utf-8") as f:
            return Calibration.from_dict(json.load(f))
    except FileNotFoundError:
        return Calibration()
    except (ValueError, RecursionError, TfreeError) as e:
        raise TfreeError(f"{path}: calibration.json is unreadable or wrong ({e})") from None


def prior_features(dictionary, device="cpu"):
    """(W, 2) float32 on ``device``: decode.dictionary.prior_features, what ``Calibration``'s prior weights multiply."""
    from ..decode.dictionary import prior_features as features  # noqa: PLC0415

    return torch.as_tensor(features(dictionary.counts), dtype=torch.float32).to(device)


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


def unit_ngram_rows(config, words) -> np.ndarray:
    """n-gram rows (``Patterns.oe_rows``) of a stream of words read as one context, under the history rule of
    text/ngrams.py (a document starts at the first item and after each <|endoftext|>), for an Over-Encoding model:
    every window cut of the stream keeps its true history."""
    from ..text.ngrams import stream_boundary, word_keys  # noqa: PLC0415

    keys = word_keys(words)
    return config.ngram_rows(keys, stream_boundary(keys))


@torch.no_grad()
def evaluate_tfree(model, corpus: Corpus, units: Units, dictionary, scorer, spelling, params, batch_size: int = 16,
                   device="cpu", autocast=None, progress=None, keep_scores: int = 0) -> dict:
    """Sum of log-probabilities of every in-dictionary target word under each (scale, prior weight) in ``params``
    (``log_softmax_at``), and the counts that make them bits per byte (``tfree_bpb``). With ``keep_scores``, the
    scores and targets of the first that many in-dictionary positions are kept too (for ``fit_scale``)."""
    from ..model.transformer import Patterns  # noqa: PLC0415

    T = model.config.seq_len
    lp = np.zeros(len(params))
    feats = prior_features(dictionary, device)
    kept_s, kept_t = [], []
    acc = {"items": 0, "in_dict": 0, "unseen": 0, "spell_bits": 0.0, "unseen_bytes": 0, "word_bytes": 0,
           "words": 0, "covered_words": 0, "covered_bytes": 0, "bytes": float(units.n_bytes.sum())}
    pending = []  # (lens (<=T,), idx, target ids (<=T,), n-gram rows (<=T, S) or None)
    oe = model.config if model.config.oe_orders else None

    def flush():
        B = len(pending)
        lens = np.zeros((B, T), np.int64)
        tgt = np.full((B, T), -2, np.int64)   # -2: padding, -1: unseen word, else the dictionary id
        rows = np.zeros((B, T, pending[0][3].shape[1]), np.int64) if oe else None
        for i, (ln, _, tid, r) in enumerate(pending):
            lens[i, :len(ln)] = ln
            tgt[i, :len(tid)] = tid
            if oe:
                rows[i, :len(r)] = r
        offsets = np.concatenate([[0], np.cumsum(lens.reshape(-1))])
        x = Patterns(torch.from_numpy(np.concatenate([p[1] for p in pending])), torch.from_numpy(offsets), (B, T),
                     oe_rows=torch.from_numpy(rows.reshape(B * T, -1)) if oe else None)
        with (autocast or contextlib.nullcontext)():
            logits, _ = model(x.to(device))
        tgt_t = torch.from_numpy(tgt.reshape(-1)).to(device)
        keep = tgt_t >= 0
        if keep.any():
            scores = scorer.scores(logits.reshape(B * T, -1)[keep])
            if params:
                lp[:] += log_softmax_at(scores, tgt_t[keep], params, feats)
            room = keep_scores - sum(len(t) for t in kept_t)
            if room > 0:
                kept_s.append(scores[:room].cpu()), kept_t.append(tgt_t[keep][:room].cpu())
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
        rows = unit_ngram_rows(oe, words) if oe else None
        for s, e in windows(len(words), T):
            pending.append((lens[s:e - 1], idx[offs[s]:offs[e - 1]], ids[s + 1:e], rows[s:e - 1] if oe else None))
            if len(pending) == batch_size:
                flush()
        if progress:
            progress(u)
    if pending:
        flush()
    acc["log_probs"] = lp
    if keep_scores:
        acc["kept"] = (torch.cat(kept_s), torch.cat(kept_t)) if kept_t else None
    return acc


def tfree_bpb(acc: dict, calibration: Calibration, p_unk: float | None = None) -> dict:
    """Bits per byte for each parameter set ``evaluate_tfree`` summed (by default the calibrated score and the
    plain one); p_unk from the calibration unless given."""
    n, k = acc["items"], acc["unseen"]
    p_unk = calibration.p_unk if p_unk is None else p_unk
    unk_bits = acc["spell_bits"] if calibration.unk_charge == "spell" else 8.0 * (acc["unseen_bytes"] + k)
    dict_bits = -acc["log_probs"] / LN2 - (n - k) * math.log2(1 - p_unk)
    total = dict_bits + k * -math.log2(p_unk) + unk_bits
    return {"bpb": total / max(acc["bytes"], 1), "p_unk": p_unk,
            "unseen_bits_share": float((k * -math.log2(p_unk) + unk_bits) / total[0]) if total[0] else 0.0,
            "coverage_words": acc["covered_words"] / max(acc["words"], 1),
            "coverage_bytes": acc["covered_bytes"] / max(acc["word_bytes"], 1)}


def calibrate(model, corpus: Corpus, units: Units, dictionary, scorer, spelling, start: Calibration | None = None,
              max_cells: int = 48_000_000, **kw) -> Calibration:
    """Fit the temperature and prior weight (and the plain temperature) on the first positions of ``units`` (as
    many as keep ``positions x words <= max_cells``), and p_unk on all of ``units``' words."""
    start = start or Calibration()
    K = max(128, min(4096, max_cells // max(1, len(dictionary))))
    n, take = 0, 0
    lengths = units.stop - units.start
    while take < len(units) and n < K:
        n += int(lengths[take]) + 1
        take += 1
    acc = evaluate_tfree(model, corpus, units.take(np.arange(take)), dictionary, scorer, spelling, [],
                         keep_scores=K, **kw)
    if acc.get("kept") is None:
        return start
    S, t = acc["kept"]
    feats = prior_features(dictionary)
    a, b, c = fit_scale(S, t, feats, True, (1.0 / start.temperature, start.prior_weight, start.zero_count_weight))
    a0 = fit_scale(S, t, feats, False, (1.0 / start.temperature_plain,))[0]
    return Calibration(temperature=1.0 / a, prior_weight=b, zero_count_weight=c, temperature_plain=1.0 / a0,
                       p_unk=start.p_unk, unk_charge=start.unk_charge, spell_order=start.spell_order)


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
        with (autocast or contextlib.nullcontext)():
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


# -- tfree eval ------------------------------------------------------------------------------------------------------
def evaluate_checkpoint(path: str, data: str, device: str = "auto", batch_size: int = 16, progress: bool = False) -> dict:
    """Held-out bits per byte of a checkpoint on DATA (a shard directory or a UTF-8 text file), with parameter
    counts and, for T-FREE, the dictionary's coverage and both unseen-word conventions."""
    from ..model import checkpoint as ckpt  # noqa: PLC0415
    from .data import TokenSource, make_units  # noqa: PLC0415
    from .data import TOKENIZER_FILE, load_tokenizer  # noqa: PLC0415
    from ..model.device import autocast_for, resolve_device  # noqa: PLC0415

    if batch_size < 1:
        raise TfreeError(f"--batch-size must be at least 1, not {batch_size}")
    dev = resolve_device(device)
    model, codec, meta = ckpt.load_model(path, dev)
    model.eval()
    autocast, _ = autocast_for(dev, "auto")
    mode = model.config.mode
    corpus = Corpus.from_path(data, codec if mode == "tfree" else None)
    units = make_units(corpus, int(meta.get("chunk_words", 1024)))
    if not float(units.n_bytes.sum()):
        raise TfreeError(f"{data}: no text to evaluate on (it is empty)")
    bar = _bar(len(units), progress)
    report = {"checkpoint": path, "data": data, "mode": mode, "params": model.num_params(), "bytes": float(units.n_bytes.sum())}
    if mode == "bpe":
        tok = load_tokenizer(os.path.join(path, TOKENIZER_FILE))
        source = TokenSource(corpus, units, tok, tok.token_to_id(EOT))
        r = evaluate_bpe(model, source, units, batch_size, dev, autocast, progress=bar)
        report.update(bpb=r["bpb"], tokens=r["items"], convention="the model's own softmax over its BPE vocabulary")
    else:
        dictionary = Dictionary.load(os.path.join(path, DICT_FILE), codec)
        cal = load_calibration(path)
        spelling = SpellingModel(dictionary.words, cal.spell_order)
        scorer = dictionary_scorer(dictionary)
        acc = evaluate_tfree(model, corpus, units, dictionary, scorer, spelling, cal.params(), batch_size, dev,
                             autocast, progress=bar)
        r = tfree_bpb(acc, cal)
        pess = tfree_bpb(acc, Calibration(**{**cal.to_dict(), "unk_charge": "bytes"}))
        report.update(bpb=float(r["bpb"][0]), bpb_plain_score=float(r["bpb"][1]), bpb_unk_bytes=float(pess["bpb"][0]),
                      words=acc["items"], unseen_words=acc["unseen"], unseen_bits_share=r["unseen_bits_share"],
                      coverage_words=r["coverage_words"], coverage_bytes=r["coverage_bytes"],
                      dictionary_words=len(dictionary), calibration=cal.to_dict(),
                      convention=(f"p(word) = (1 - {cal.p_unk:.4f}) softmax over the {len(dictionary):,}-word "
                                  f"dictionary of s/{cal.temperature:.4f} + {cal.prior_weight:.3f} log(count+1)"
                                  + (f" + {cal.zero_count_weight:.3f} [count=0]" if cal.zero_count_weight else "")
                                  + "; "
                                  f"unseen words {cal.p_unk:.4f} x a byte {cal.spell_order}-gram spelling probability"))
    if bar:
        bar.close()
    return report


def _bar(total: int, on: bool):
    return _Progress(total) if on else None


class _Progress:
    """A tqdm bar that ``evaluate_*`` advance once per unit."""

    def __init__(self, total: int):
        from tqdm import tqdm  # noqa: PLC0415

        self.bar = tqdm(total=total, unit="unit", dynamic_ncols=True, leave=False, disable=None)  # None: not on a pipe

    def __call__(self, u: int) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
