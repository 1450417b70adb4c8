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


class TorchDecoder:
    def __init__(self, dictionary):
        self.dictionary = dictionary
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
        sig = torch.sigmoid(logits.float())                       # (B, v)
        total = sig.sum(1, keepdim=True)                          # (B, 1)
        sig_t = sig.T.contiguous()                                # (v, B)
        parts = []
        for _, mat, sizes in self._matrices(logits.device):
            inside = torch.sparse.mm(mat, sig_t).T                # (B, W_block): sum of sigmoid over each pattern
            outside = (self.v - sizes).clamp(min=1)
            parts.append(inside / sizes - (total - inside) / outside)
        return torch.cat(parts, 1)

    def decode(self, logits, temperature, top_k, top_p, generator) -> Decoded:
        s = self.scores(logits)                                   # (B, W)
        if temperature == 0 or top_k == 1:
            best = s.argmax(1)
            probs = torch.ones(len(best), dtype=torch.float64)
        else:
            z = (s / temperature).double()
            if top_k is not None and top_k < z.shape[1]:
                kth = torch.topk(z, top_k, dim=1).values[:, -1:]
                z = z.masked_fill(z < kth, float("-inf"))
            p = torch.softmax(z, 1)
            if top_p is not None:
                ps, idx = torch.sort(p, 1, descending=True)
                drop = ps.cumsum(1) - ps >= top_p                 # mass before a word already reaches top_p
                p = p.scatter(1, idx, ps.masked_fill(drop, 0))
                p = p / p.sum(1, keepdim=True)
            if isinstance(generator, int):
                generator = torch.Generator(device=p.device).manual_seed(generator)
            best = torch.multinomial(p, 1, generator=generator)[:, 0]
            probs = p.gather(1, best[:, None])[:, 0].cpu()
        ids = best.cpu().numpy().astype(np.int64)
        return Decoded([self.dictionary.words[i] for i in ids], ids, probs.numpy().astype(np.float64),
                       s.gather(1, best[:, None])[:, 0].double().cpu().numpy())

    def log_probs(self, logits, targets: np.ndarray, temperature: float) -> np.ndarray:
        z = (self.scores(logits) / temperature).double()         # (B, W)
        t = torch.as_tensor(targets, device=z.device)[:, None]
        if t.shape[0] != z.shape[0]:
            raise TfreeError(f"{t.shape[0]} targets for {z.shape[0]} positions")
        return (z.gather(1, t)[:, 0] - torch.logsumexp(z, 1)).cpu().numpy()
