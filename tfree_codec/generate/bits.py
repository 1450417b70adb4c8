"""Bits of held-out text under a model, for T-FREE models and their BPE baselines alike (SPEC section 5): the two
evaluation loops that ``tfree eval``, a training run's validation and ``LanguageModel.score`` share.

Both kinds of model read the same units of text (shards/corpus.py): each starts from ``<|endoftext|>`` as context,
is cut into windows of ``seq_len`` predictions, and is charged for every item it contains plus the
``<|endoftext|>`` that ends a document. bits per byte = total bits / UTF-8 bytes of the text.

The T-FREE convention (printed by ``tfree eval``): for the next word w,

    p(w) = (1 - p_unk) * softmax_D(s / temperature)[w]        if w is in the dictionary D
    p(w) = p_unk * p_spell(w)                                  otherwise

with ``s(w) = mean(sigmoid[P_w]) - mean(sigmoid[not P_w])`` over the dictionary, ``temperature`` and ``p_unk``
(the unseen-word rate) fitted on the training run's validation slice and stored in the checkpoint
(decode/calibration.py), and ``p_spell`` the dictionary's spelling model (decode/spelling.py). ``--unk-charge
bytes`` replaces ``p_spell`` by the SPEC's pessimistic ``256^-(bytes+1)``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..decode.calibration import Calibration, fit_scale, log_softmax_at, prior_features
from ..shards.corpus import Corpus, Units
from ..text.words import EOT, MARKERS

LN2 = math.log(2)


# -- dictionary scores ---------------------------------------------------------------------------------------------
def dictionary_scorer(dictionary, score: str = "sigmoid_diff", search: str | None = None):
    """``.scores((N, v) logits) -> (N, W)``: every word's ``score`` (``sigmoid_diff``: s(w) = mean(sigmoid[P_w]) -
    mean(sigmoid[not P_w]); ``mean_logit``: the mean of the logits over P_w, the word objective's) on the logits'
    device (the decoder's torch path: one sparse (W, v) x (v, N) product). With ``search`` ("pruned" or "full"),
    also ``.log_probs_sum``: what ``log_softmax_at`` gives, from the decoder on the CPU (decode/logprob.py)."""
    from ..decode.logprob import DictionaryLogProbs  # noqa: PLC0415
    from ..decode.torch_decoder import TorchDecoder  # noqa: PLC0415

    return TorchDecoder(dictionary, score) if search is None else DictionaryLogProbs(dictionary, search, score)


# -- evaluation streams ----------------------------------------------------------------------------------------------
def windows(length: int, T: int):
    """(start, stop) of windows of at most T+1 items over a stream of ``length`` items, overlapping by one, so that
    items 1..length-1 are each a target exactly once."""
    return [(s, min(s + T + 1, length)) for s in range(0, max(length - 1, 0), T)]


def unit_items(corpus: Corpus, units: Units, u: int):
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


@dataclass(frozen=True)
class Reading:
    """How the loops read units through the model: ``batch_size`` windows a pass, on ``device``, under
    ``autocast`` (a context manager factory; None: none), calling ``progress(u)`` after each unit (None: not)."""

    batch_size: int = 16
    device: object = "cpu"
    autocast: object = None
    progress: object = None


@torch.no_grad()
def evaluate_tfree(model, corpus: Corpus, units: Units, words, params, reading: Reading = Reading(),
                   keep_scores: int = 0, per_item: list | None = None) -> dict:
    """Sum of log-probabilities of every in-dictionary target word under each (scale, prior weight) in ``params``
    (``log_softmax_at``), and the counts that make them bits per byte (``tfree_bpb``). ``words``: the dictionary
    and its scorers (a vocab.Words). With ``keep_scores``, the scores and targets of the first that many
    in-dictionary positions are kept too (for ``fit_scale``). With ``per_item``, each target's natural-log softmax
    probability under ``params[0]`` (NaN where the word is not in the dictionary) is appended to it, an array per
    window in stream order (train/breakdown.py)."""
    from ..model.transformer import Patterns  # noqa: PLC0415

    dictionary, (scorer, spelling) = words.dictionary, words.scorers()
    batch_size, device, autocast, progress = reading.batch_size, reading.device, reading.autocast, reading.progress
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
        room = keep_scores - sum(len(t) for t in kept_t)
        if (keep.any() and room <= 0 and per_item is None and params and hasattr(scorer, "log_probs_sum")
                and logits.device.type == "cpu"):  # the decoder's search: no (N, W) scores
            lp[:] += scorer.log_probs_sum(logits.reshape(B * T, -1)[keep], tgt_t[keep], params)
        elif keep.any():
            scores = scorer.scores(logits.reshape(B * T, -1)[keep])
            if params and per_item is not None:
                each = log_softmax_at(scores, tgt_t[keep], params, feats, rows=True)
                lp[:] += [float(x.sum()) for x in each]
                row = torch.full((B * T,), float("nan"), dtype=torch.float64)
                row[keep.cpu()] = each[0].double().cpu()
                per_item.extend(row.reshape(B, T)[i, :len(p[2])].numpy() for i, p in enumerate(pending))
            elif params:
                lp[:] += log_softmax_at(scores, tgt_t[keep], params, feats)
            if room > 0:
                kept_s.append(scores[:room].cpu()), kept_t.append(tgt_t[keep][:room].cpu())
        elif per_item is not None:
            per_item.extend(np.full(len(p[2]), np.nan) for p in pending)
        pending.clear()

    for u in range(len(units)):
        words, lens, idx = unit_items(corpus, units, u)
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


def unseen_rate(acc: dict) -> float:
    """p_unk fitted on what ``evaluate_tfree`` summed: the rate of words outside the dictionary (add-half)."""
    return (acc["unseen"] + 0.5) / (acc["items"] + 1)


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


def calibrate(model, corpus: Corpus, units: Units, words, reading: Reading = Reading(),
              max_cells: int = 48_000_000) -> Calibration:
    """Fit the temperature and prior weight (and the plain temperature) on the first positions of ``units`` (as
    many as keep ``positions x words <= max_cells``), starting from ``words``' calibration (a vocab.Words); p_unk
    stays the start's."""
    dictionary, start = words.dictionary, words.calibration
    K = max(128, min(4096, max_cells // max(1, len(dictionary))))
    n, take = 0, 0
    lengths = units.stop - units.start
    while take < len(units) and n < K:
        n += int(lengths[take]) + 1
        take += 1
    acc = evaluate_tfree(model, corpus, units.take(np.arange(take)), words, [], reading, keep_scores=K)
    if acc.get("kept") is None:
        return start
    S, t = acc["kept"]
    feats = prior_features(dictionary)
    a, b, c = fit_scale(S, t, feats, True, (1.0 / start.temperature, start.prior_weight, start.zero_count_weight))
    a0 = fit_scale(S, t, feats, False, (1.0 / start.temperature_plain,))[0]
    return Calibration(temperature=1.0 / a, prior_weight=b, zero_count_weight=c, temperature_plain=1.0 / a0,
                       p_unk=start.p_unk, unk_charge=start.unk_charge, spell_order=start.spell_order,
                       score=start.score)


class TokenItems:
    """Items are BPE tokens: each unit's text (its words joined) tokenised once, <|endoftext|> the tokenizer's own."""

    def __init__(self, corpus: Corpus, units: Units, tokenizer, eot_id: int, batch_size: int = 256):
        self.eot_id = eot_id
        texts = (corpus.text(int(d), int(a), int(b)) for d, a, b in zip(units.doc, units.start, units.stop))
        toks = []
        buf = []
        for t in texts:  # encode_batch in slices keeps memory flat and uses the tokenizer's threads
            buf.append(t)
            if len(buf) == batch_size:
                toks += [np.asarray(e.ids, np.int32) for e in tokenizer.encode_batch(buf, add_special_tokens=False)]
                buf = []
        if buf:
            toks += [np.asarray(e.ids, np.int32) for e in tokenizer.encode_batch(buf, add_special_tokens=False)]
        self.lengths = np.array([len(t) for t in toks], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.tokens = np.concatenate(toks or [np.zeros(0, np.int32)])

    def item_tokens(self, u: int, a: int, b: int):
        if u < 0:
            return np.array([self.eot_id], np.int32)
        return self.tokens[self.offsets[u] + a:self.offsets[u] + b]


@torch.no_grad()
def evaluate_bpe(model, source, units: Units, reading: Reading = Reading(), per_item: list | None = None) -> dict:
    """Total bits of a BPE model on ``source``'s units (a TokenItems), each from <|endoftext|>. With ``per_item``,
    each target token's bits are appended to it, in stream order."""
    batch_size, device, autocast, progress = reading.batch_size, reading.device, reading.autocast, reading.progress
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
                                                 ignore_index=-1, reduction="sum" if per_item is None else "none")
        if per_item is not None:
            each = nats.double().cpu().reshape(len(pending), T) / LN2
            per_item.extend(float(x) for i, row in enumerate(pending) for x in each[i, :len(row) - 1])
            nats = nats.sum()
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
