"""Optimizers for models with sparse n-gram tables (Over-Encoding): AdamW for the dense parameters and SparseAdam
for the tables as one optimizer, and gradient clipping that counts sparse gradients.

A step of dense AdamW touches every row of every table (a 1M-row table is 1M x d weights and twice that in Adam
moments); SparseAdam updates only the rows the batch read (lazy Adam: a row's moments move when it is read). Memory
stays the same: weights and two moments, 12 bytes per table float (docs/training.md, "Over-Encoding").
"""
from __future__ import annotations

import torch


class SplitAdam:
    """``dense`` (an AdamW) and ``sparse`` (a SparseAdam) stepped together. ``param_groups`` lists both, so a
    schedule that sets ``g["lr"]`` on each group drives both; ``state_dict`` holds both."""

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer):
        self.dense, self.sparse = dense, sparse

    @property
    def param_groups(self) -> list:
        return self.dense.param_groups + self.sparse.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.sparse.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.dense.step()
        self.sparse.step()

    def state_dict(self) -> dict:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"dense", "sparse"}:
            raise ValueError("not a SplitAdam state (a dense and a sparse optimizer state)")
        self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (the global L2 norm, scaled down to ``max_norm``) for a mix of dense and
    sparse gradients; sparse ones are coalesced first (an embedding's gradient lists a row once per reading)."""
    params = [p for p in parameters if p.grad is not None]
    if not any(p.grad.is_sparse for p in params):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    squares = []
    for p in params:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            squares.append(p.grad._values().float().pow(2).sum())
        else:
            squares.append(p.grad.float().pow(2).sum())
    total = torch.stack([s.to(params[0].grad.device) for s in squares]).sum().sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for p in params:
        p.grad.mul_(coef.to(p.grad.device, p.grad.dtype))
    return total
