"""The word objective: train the head for the softmax over dictionary words that decoding reads.

BCE trains each of the head's ``v`` rows on its own, but bits per byte, sampling and greedy decoding read a softmax
over dictionary words. Here a word's logit is the mean of the head's logits over its pattern's rows, scaled, plus a
prior from the word's training count:

    z(w) = a * mean_{r in P_w} (h . H_r)  +  b log(count_w + 1)  +  c [count_w = 0]

and the loss is the cross-entropy of ``softmax_w z(w)`` at the next word. The mean is linear in ``h``, so every word's
score is one product with ``E = a * segment_mean(H)`` (W, d): the (W, v) pattern matrix never meets the (v, N)
logits. ``a``, ``b`` and ``c`` are learnt with the model and are, unchanged, the calibration that evaluation and
generation read (``score = "mean_logit"``, temperature ``1/a``): what the model is judged by is what it trained on.

A dictionary of ``W`` words costs ``N W d`` per step. Up to ``budget`` words the softmax is exact; past it the
``budget // 2`` most frequent words are scored exactly and ``budget // 2`` of the rest are drawn uniformly each step,
standing for all of them (a sampled softmax with the log-correction ``log(rest / drawn)``; each position's own target
is always scored exactly, once). Frequent words carry most of the mass, so the estimate is tight where it matters,
and the cost stays near BCE's ``N v d`` whatever the dictionary's size.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class WordHead(nn.Module):
    """The word objective's three scalars and, for training only, the dictionary they score (``set_dictionary``).
    ``log_scale`` is ``log a``; ``prior`` is ``(b, c)``, starting at the unigram distribution (b = 1)."""

    def __init__(self, budget: int = 4096):
        super().__init__()
        self.budget = int(budget)
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.prior = nn.Parameter(torch.tensor([1.0, 0.0]))
        for name, value in (("indptr", torch.zeros(1, dtype=torch.int64)), ("indices", torch.zeros(0, dtype=torch.int64)),
                            ("feats", torch.zeros(0, 2))):
            self.register_buffer(name, value, persistent=False)  # from the run's dictionary, not the weights file

    def set_dictionary(self, indptr, indices, feats) -> "WordHead":
        """The dictionary's CSR patterns and ``prior_features`` (W, 2); its words must be ordered by falling count
        (``Dictionary`` orders them so) for the exact part of a sampled softmax to be the frequent words."""
        dev = self.log_scale.device
        self.indptr = torch.as_tensor(np.asarray(indptr, np.int64), device=dev)
        self.indices = torch.as_tensor(np.asarray(indices, np.int64), device=dev)
        self.feats = torch.as_tensor(np.asarray(feats, np.float32), device=dev)
        return self

    def calibration(self) -> dict:
        """The learnt distribution in ``Calibration``'s terms."""
        a = float(self.log_scale.detach().exp())
        b, c = (float(x) for x in self.prior.detach())
        return {"score": "mean_logit", "temperature": 1.0 / a, "temperature_plain": 1.0 / a, "prior_weight": b,
                "zero_count_weight": c}

    def embeddings(self, head_weight: torch.Tensor, words: torch.Tensor | None = None) -> torch.Tensor:
        """(W, d): each word's mean head row, times the scale; with ``words`` (K,) ids, those words' (K, d) only."""
        if words is None:
            E = F.embedding_bag(self.indices, head_weight, self.indptr, mode="mean", include_last_offset=True)
        else:  # the words' pattern segments, gathered (a sampled step never touches the rest of the dictionary)
            start, n = self.indptr[words], self.indptr[words + 1] - self.indptr[words]
            offsets = torch.cumsum(n, 0) - n
            flat = torch.repeat_interleave(start - offsets, n) + torch.arange(int(n.sum()), device=n.device)
            E = F.embedding_bag(self.indices[flat], head_weight, offsets, mode="mean")
        return E * self.log_scale.exp().to(E.dtype)

    def loss(self, h: torch.Tensor, head_weight: torch.Tensor, word_ids: torch.Tensor, mask=None) -> torch.Tensor:
        """Mean cross-entropy over the positions whose target is a dictionary word (``word_ids >= 0``) and where
        ``mask`` is true. h (N, d) hidden states, word_ids (N,) int64 dictionary ids (-1: not in it)."""
        W = len(self.indptr) - 1
        if W < 1:
            raise RuntimeError("the word objective needs the run's dictionary: call set_dictionary first")
        keep = word_ids >= 0 if mask is None else (word_ids >= 0) & mask.reshape(-1)
        h, t = h.reshape(-1, h.shape[-1])[keep].float(), word_ids[keep]
        if len(t) == 0:
            return h.sum() * 0.0
        bias = self.feats @ self.prior                                 # (W,)
        if W <= self.budget:
            return F.cross_entropy(h @ self.embeddings(head_weight.float()).T + bias, t)
        top = self.budget // 2
        rest = W - top
        drawn = top + torch.randperm(rest, device=t.device)[: self.budget - top]
        cols = torch.cat([torch.arange(top, device=t.device), drawn])   # (C,) candidate words
        E = self.embeddings(head_weight.float(), torch.cat([cols, t]))  # the candidates', then the targets'
        correction = math.log(rest / len(drawn))                       # each drawn word stands for rest/drawn
        col_bias = bias[cols] + torch.cat([torch.zeros(top, device=t.device),
                                           torch.full((len(drawn),), correction, device=t.device)])
        z = h @ E[: len(cols)].T + col_bias                            # (N, C)
        own = (h * E[len(cols):]).sum(1) + bias[t]                      # each target's exact logit
        # A target among the drawn words is in z with the correction: take it back out there (N entries, not an
        # (N, C) mask); a target outside the candidates joins its row's sum once, by its own logit.
        at = torch.full((W,), -1, dtype=torch.int64, device=t.device)
        at[drawn] = torch.arange(top, len(cols), device=t.device)
        col = at[t]
        rows = torch.nonzero(col >= 0).reshape(-1)
        if len(rows):
            z = z.index_put((rows, col[rows]), own[rows])
        lse = torch.logsumexp(z, 1)
        outside = (t >= top) & (col < 0)
        lse = torch.where(outside, torch.logaddexp(lse, own), lse)
        return (lse - own).mean()
