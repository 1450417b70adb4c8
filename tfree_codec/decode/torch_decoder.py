"""The decoder's torch path, for logits already on a GPU (imports torch; decode.py loads it only for tensors).

The dictionary's patterns become a sparse CSR (W, v) matrix of ones on the logits' device, so the sums over every
pattern are one sparse x dense product: ``S = P @ sigmoid(logits).T`` (W, B). Words added to the dictionary later
go into further blocks, so prompt words cost only their own rows.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..config import TfreeError
from .sampling import Decoded
from .scorer import SCORES


class TorchDecoder:
    def __init__(self, dictionary, score: str = "sigmoid_diff"):
        if score not in SCORES:
            raise TfreeError(f"unknown word score {score!r} (choose from {', '.join(SCORES)})")
        self.dictionary, self.score = dictionary, score
        self.v = dictionary.codec.vocab_size
        self._blocks: dict = {}  # device -> list of (first word, CSR matrix, sizes)

    def _matrices(self, device):
        d = self.dictionary
        blocks = self._blocks.setdefault(str(device), [])
        done = blocks[-1][0] + blocks[-1][1].shape[0] if blocks else 0
        if done < len(d):
            base = int(d.indptr[done])
            crow = torch.as_tensor(d.indptr[done:] - base, dtype=torch.int64)
            col = torch.as_tensor(d.indices[base:].astype(np.int64))
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                mat = torch.sparse_csr_tensor(crow, col, torch.ones(len(col)), size=(len(d) - done, self.v),
                                              check_invariants=False).to(device)
            sizes = torch.as_tensor(np.diff(d.indptr[done:]), dtype=torch.float32, device=device)
            blocks.append((done, mat, sizes))
        return blocks

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, v) logits -> (B, W) scores, on the logits' device."""
        if logits.dim() == 1:
            logits = logits[None]
        if logits.dim() != 2 or logits.shape[1] != self.v:
            raise TfreeError(f"logits must have shape (B, {self.v}), not {tuple(logits.shape)}")
        if not bool(torch.isfinite(logits).all()):  # as the numba path: NaN would decode as some word
            raise TfreeError("logits contain NaN or infinity")
        if self.score == "mean_logit":
            x_t = logits.float().T.contiguous()
            return torch.cat([torch.sparse.mm(mat, x_t).T / sizes for _, mat, sizes in self._matrices(logits.device)], 1)
        sig = torch.sigmoid(logits.float())                       # (B, v)
        total = sig.sum(1, keepdim=True)                          # (B, 1)
        sig_t = sig.T.contiguous()                                # (v, B)
        parts = []
        for _, mat, sizes in self._matrices(logits.device):
            inside = torch.sparse.mm(mat, sig_t).T                # (B, W_block): sum of sigmoid over each pattern
            outside = (self.v - sizes).clamp(min=1)
            parts.append(inside / sizes - (total - inside) / outside)
        return torch.cat(parts, 1)

    def decode(self, logits, sampler) -> Decoded:
        """One word per position: the argmax on the logits' device, or a draw by ``sampler`` (sampling.Sampler,
        on the CPU: the scores come over, (W, B) float32, and are drawn from as the numba decoder's are)."""
        s = self.scores(logits)                                   # (B, W)
        if sampler.greedy:
            best = s.argmax(1)
            probs = np.ones(len(best))
        else:
            block = np.ascontiguousarray(s.float().T.cpu().numpy())  # (W, B): the sampler's layout
            top = block.max(0)
            ids, probs = sampler.block(block, block.shape[1], top, block.min(0), top, None)
            best = torch.as_tensor(ids, device=s.device)
        ids = best.cpu().numpy().astype(np.int64)
        return Decoded([self.dictionary.words[i] for i in ids], ids, np.asarray(probs, np.float64),
                       s.gather(1, best[:, None])[:, 0].double().cpu().numpy())

    def log_probs(self, logits, targets: np.ndarray, temperature: float) -> np.ndarray:
        z = (self.scores(logits) / temperature).double()         # (B, W)
        t = torch.as_tensor(targets, device=z.device)[:, None]
        if t.shape[0] != z.shape[0]:
            raise TfreeError(f"{t.shape[0]} targets for {z.shape[0]} positions")
        return (z.gather(1, t)[:, 0] - torch.logsumexp(z, 1)).cpu().numpy()
