"""Over-Tokenized Transformers (Huang et al. 2025) on T-FREE words: Over-Encoding, hashed word n-gram tables added
to the word embedding (``OverEncoding``, text/ngrams.py hashes the rows), and Over-Decoding, a second head that
predicts the word after next (``AfterNext``: its training targets). Both are parts a ``Model`` adds when its
config asks (``oe_orders``, ``od``); a model without them is the plain one, weight for weight.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import TfreeError

# Checkpoints name the parameters as the model did before these parts were modules (format 1): model/checkpoint.py
# stores and reads them under these names.
STORED_NAMES = (("oe.tables.", "oe_tables."), ("oe.proj.", "oe_proj."))


class OverEncoding(nn.Module):
    """``e + W [E_1[r_1] .. E_S[r_S]] / S``: S hashed n-gram tables (orders x slices), each ``n_embd // S`` wide,
    read at each position's rows (``Patterns.oe_rows``), their slices averaged as the paper averages its tables,
    and projected back to ``n_embd`` by one zero-initialised matrix, so that a new table starts as the plain model;
    the word embedding itself unscaled (or dropped: ``oe_unigram`` off, an ablation)."""

    def __init__(self, c):
        super().__init__()
        from ..text.ngrams import moduli  # noqa: PLC0415

        s = len(c.oe_orders) * c.oe_slices
        width = c.n_embd // s
        # _weight: skip nn.Embedding's own N(0, 1) fill of what may be a 1M-row table; N(0, 0.02) like E
        self.tables = nn.ModuleList(nn.Embedding(m, width, _weight=torch.empty(m, width).normal_(0.0, 0.02))
                                    for m in moduli(c.oe_orders, c.oe_slices, c.oe_rows, c.oe_distinct))
        # the S slices' projections back to d as one (d, S * width) matrix: one matmul instead of S
        self.proj = nn.Linear(s * width, c.n_embd, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.unigram = c.oe_unigram

    def forward(self, e, rows):
        """(B, T, d) word embeddings ``e`` and their positions' (B * T, S) table rows -> the over-encoded (B, T, d)."""
        B, T, d = e.shape
        S = len(self.tables)
        if rows is None or tuple(rows.shape) != (B * T, S):
            raise TfreeError(f"this model over-encodes with {S} n-gram tables: its inputs need oe_rows of shape "
                             f"({B * T}, {S}), not {None if rows is None else tuple(rows.shape)}")
        parts = torch.cat([table(rows[:, i]) for i, table in enumerate(self.tables)], dim=-1)
        oe = self.proj(parts).view(B, T, d) * (1.0 / S)
        return e + oe if self.unigram else oe

    def sparse(self, on: bool = True) -> None:
        """Sparse table gradients (only the rows a batch reads): a dense AdamW step would read and write every row
        of a table of millions each step."""
        for t in self.tables:
            t.sparse = on


@dataclass
class AfterNext:
    """An Over-Decoding model's training targets (``Model.forward``'s ``targets``): the next items, the items after
    them and where those count (a window's last position has none), and the second loss's weight this step."""

    next: object
    after: object
    after_mask: torch.Tensor
    weight: float
