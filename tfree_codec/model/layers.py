"""T-FREE's two layers as plain ``nn.Module``s, for models that are not tfree's own (a Hugging Face causal LM:
``tfree_codec/hf_model.py``; a litgpt or nanoGPT body: call them around it).

    emb = TfreeEmbedding(codec.vocab_size, d)      # a word's vector: the sum of its pattern's rows of a (v, d) table
    head = TfreeHead(d, codec.vocab_size)          # hidden state -> v activation logits
    x = emb(patterns)                              # (B, T, d)
    loss = head.loss(head(body(x))[:, :-1], next_words, mask)   # BCE against the next word's pattern

Words come in as ``Patterns`` (CSR: what ``batch_encode`` and the training loader make) or as a dense (B, T, R)
integer grid of pattern rows, -1 after each word's last row (``Batch.padded()``: tensors that every data loader,
``accelerate`` and ``Trainer`` move and split as they do token ids). A word of no rows (padding) embeds to zero.
The loss is the one tfree's own model trains with (``transformer.pattern_bce``: BCE-with-logits against the
multi-hot pattern, positives weighted by ``pos_weight``, the multi-hot never built).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .transformer import Patterns, pattern_bce


def as_patterns(x) -> Patterns:
    """``Patterns`` of a (B, T, R) grid of rows (negative entries are padding), or ``x`` if it is one already."""
    if isinstance(x, Patterns):
        return x
    if x.dim() != 3:
        raise ValueError(f"T-FREE inputs are a (B, T, R) grid of pattern rows, not a tensor of shape {tuple(x.shape)}")
    B, T, _ = x.shape
    keep = x >= 0
    counts = keep.sum(-1).reshape(-1)
    offsets = torch.zeros(B * T + 1, dtype=torch.int64, device=x.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    return Patterns(x[keep].long(), offsets, (B, T))


class TfreeEmbedding(nn.Module):
    """A word's embedding: the sum of its activation pattern's rows of a ``(vocab_size, dim)`` table (``v`` rows,
    the codec's ``vocab_size``). Takes ``Patterns`` or a (B, T, R) grid; -> (B, T, dim)."""

    def __init__(self, vocab_size: int, dim: int, std: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.normal_(self.weight, mean=0.0, std=std)

    def forward(self, words) -> torch.Tensor:
        p = as_patterns(words)
        B, T = p.shape
        e = F.embedding_bag(p.indices, self.weight, p.offsets, mode="sum", include_last_offset=True)
        return (e if p.words is None else e[p.words]).view(B, T, -1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}, mode=sum over pattern rows"


class TfreeHead(nn.Module):
    """Hidden states (..., dim) -> (..., vocab_size) activation logits, one per row of the codec; ``loss`` is the
    BCE the model learns them with. Untied from the embedding (as tfree's model)."""

    def __init__(self, dim: int, vocab_size: int, pos_weight: float = 100.0, std: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.normal_(self.weight, mean=0.0, std=std)
        self.pos_weight = float(pos_weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight)

    def loss(self, logits: torch.Tensor, targets, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean BCE of (B, T, v) ``logits`` against the patterns of ``targets`` (``Patterns`` or a (B, T, R) grid:
        the word each position predicts), over the positions where ``mask`` is true (default: every position
        whose target has rows, so that padding never counts)."""
        t = as_patterns(targets)
        if t.words is not None:
            raise ValueError("targets must give each position its own pattern (Patterns without words=)")
        if mask is None:
            mask = (t.offsets[1:] > t.offsets[:-1]).view(t.shape)
        return pattern_bce(logits, t, mask, self.pos_weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]} -> {self.weight.shape[0]}, pos_weight={self.pos_weight}"
