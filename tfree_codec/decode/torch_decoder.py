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
from .wordscore import word_score


class TorchDecoder:
    def __init__(self, dictionary, score="sigmoid_diff"):
        self.dictionary, self.score = dictionary, word_score(score)  # the score used unless a call names another
        self.v = dictionary.codec.vocab_size
        self._blocks: dict = {}  # device -> list of (first word, CSR matrix, sizes)
        self._coef: dict = {}    # (device, first word, WordScore) -> (alpha, beta) of the block's words

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

    def scores(self, logits: torch.Tensor, score=None) -> torch.Tensor:
        """(B, v) logits -> (B, W) scores s (a ``WordScore`` or its name; default this decoder's), on the logits'
        device."""
        score = self.score if score is None else word_score(score)
        if logits.dim() == 1:
            logits = logits[None]
        if logits.dim() != 2 or logits.shape[1] != self.v:
            raise TfreeError(f"logits must have shape (B, {self.v}), not {tuple(logits.shape)}")
        if not bool(torch.isfinite(logits).all()):  # as the numba path: NaN would decode as some word
            raise TfreeError("logits contain NaN or infinity")
        g = torch.sigmoid(logits.float()) if score.g == "sigmoid" else logits.float()  # (B, v)
        total = g.sum(1, keepdim=True)                            # (B, 1)
        g_t = g.T.contiguous()                                    # (v, B)
        parts = []
        for first, mat, sizes in self._matrices(logits.device):
            inside = torch.sparse.mm(mat, g_t).T                  # (B, W_block): sum of g over each pattern
            key = (str(logits.device), first, score)
            if key not in self._coef:
                self._coef[key] = tuple(torch.as_tensor(x, dtype=torch.float32, device=logits.device) for x in
                                        score.alpha_beta(np.diff(self.dictionary.indptr[first:first + len(sizes) + 1]),
                                                         self.v))
            alpha, beta = self._coef[key]
            parts.append(inside * alpha + total * beta)
        return torch.cat(parts, 1)

    def _z(self, logits, rank):
        """(scores s, ranking values z = scale * s + bias), both (B, W)."""
        score, scale, bias = rank
        s = self.scores(logits, score)
        z = s * scale if bias is None else s * scale + torch.as_tensor(bias, device=s.device)
        return s, z

    def decode(self, logits, sampler, rank=None) -> Decoded:
        """One word per position: the argmax on the logits' device, or a draw by ``sampler`` (sampling.Sampler,
        on the CPU: the z values come over, (W, B) float32, and are drawn from as the numba decoder's are).
        ``rank``: (WordScore, scale, bias by id or None), as the Decoder ranks (default: this decoder's score)."""
        from .search import canonical, raw_scores  # noqa: PLC0415

        rank = (self.score, 1.0, None) if rank is None else rank
        logits = logits[None] if logits.dim() == 1 else logits
        s, zz = self._z(logits, rank)                             # (B, W)
        if sampler.greedy:
            best = zz.argmax(1)
            # float32 noise can order near-equal words differently than the CPU: compare them as it does
            near = zz >= zz.max(1, keepdim=True).values - 1e-4 * rank[1] * (1 if rank[0].g == "sigmoid" else max(
                1.0, float(logits.abs().max()))) - 1e-5 * (1 + (0 if rank[2] is None else float(np.abs(rank[2]).max())))
            for b in torch.nonzero(near.sum(1) > 1)[:, 0].tolist():
                ids = torch.nonzero(near[b])[:, 0].cpu().numpy()
                best[b] = canonical(self.dictionary, rank[0], rank[1], rank[2], logits[b].float().cpu().numpy(), ids)
            probs = np.ones(len(best))
        else:
            block = np.ascontiguousarray(zz.float().T.cpu().numpy())  # (W, B): the sampler's layout
            top = block.max(0)
            ids, probs = sampler.block(block, block.shape[1], top, block.min(0), top, None)
            best = torch.as_tensor(ids, device=zz.device)
        ids = best.cpu().numpy().astype(np.int64)
        return Decoded([self.dictionary.words[i] for i in ids], ids, np.asarray(probs, np.float64),
                       raw_scores(self.dictionary, rank[0], logits.float().cpu().numpy(), ids))

    def log_probs(self, logits, targets: np.ndarray, temperature: float, rank=None) -> np.ndarray:
        rank = (self.score, 1.0, None) if rank is None else rank
        z = (self._z(logits[None] if logits.dim() == 1 else logits, rank)[1] / temperature).double()  # (B, W)
        t = torch.as_tensor(targets, device=z.device)[:, None]
        if t.shape[0] != z.shape[0]:
            raise TfreeError(f"{t.shape[0]} targets for {z.shape[0]} positions")
        return (z.gather(1, t)[:, 0] - torch.logsumexp(z, 1)).cpu().numpy()
