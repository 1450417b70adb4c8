"""The arithmetic of ``tfree retok`` (retok.py does the files): per-word targets from a BPE model's rows, the
frequency-weighted ridge solve that turns them into T-FREE rows, and how well the result fits.

A word ``w`` is the set ``P(w)`` of its pattern's rows (SPEC section 3). T-FREE embeds it as the *sum*
``sum_{j in P(w)} E[j]`` (``nn.EmbeddingBag(mode="sum")``), so with the binary word-pattern matrix ``A``
(``|W| x v``, row ``w`` = the indicator of ``P(w)``) the input layer is ``A E``, and fitting a target ``T`` per word
is ridge regression: ``(A^T F A + rho I) E = A^T F T`` with ``F = diag(count(w)^alpha)``. ``A^T F A`` is only
``v x v`` (the patterns' co-activation counts, built by one ``bincount`` over each word's row pairs); it is factored
once (Cholesky) and the factor is reused for the embedding and the head.
"""
from __future__ import annotations

import numpy as np
import torch


# -- targets ------------------------------------------------------------------------------------------------------
def _flat(pieces: list[list[int]]):
    lens = np.array([len(p) for p in pieces], np.int64)
    flat = np.fromiter((t for p in pieces for t in p), np.int64, count=int(lens.sum()))
    return lens, flat


def mean_rows(pieces: list[list[int]], table: torch.Tensor) -> torch.Tensor:
    """(n, d): each word's mean of ``table``'s rows at its BPE pieces (ReTok); zero for a word without pieces."""
    lens, flat = _flat(pieces)
    seg = torch.from_numpy(np.repeat(np.arange(len(pieces)), lens))
    out = torch.zeros(len(pieces), table.shape[1], dtype=torch.float64)
    out.index_add_(0, seg, table.double()[torch.from_numpy(flat)])
    return out / torch.from_numpy(np.maximum(lens, 1)).double()[:, None]


def first_rows(pieces: list[list[int]], table: torch.Tensor) -> torch.Tensor:
    """(n, d): the row of each word's first piece (zero for a word without pieces)."""
    out = torch.zeros(len(pieces), table.shape[1], dtype=torch.float64)
    have = [i for i, p in enumerate(pieces) if p]
    out[have] = table.double()[[pieces[i][0] for i in have]]
    return out


def omp(x: torch.Tensor, atoms: torch.Tensor, k: int, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal matching pursuit, batched: for each row of ``x`` (n, d), ``k`` atoms (rows of ``atoms``, (a, d))
    picked greedily by their correlation with the residual, with least-squares weights over the atoms picked so
    far. -> (index (n, k) int64, weight (n, k) float64)."""
    a = atoms.double()
    unit = a / a.norm(dim=1, keepdim=True).clamp(min=1e-12)
    k = min(k, len(a))
    idx_all, w_all = [], []
    for s in range(0, len(x), chunk):
        xs = x[s:s + chunk].double()
        n = len(xs)
        idx = torch.zeros(n, k, dtype=torch.int64)
        w = torch.zeros(n, k, dtype=torch.float64)
        resid = xs.clone()
        taken = torch.zeros(n, len(a), dtype=torch.bool)
        for i in range(k):
            corr = (resid @ unit.T).abs().masked_fill(taken, -1.0)
            idx[:, i] = corr.argmax(1)
            taken[torch.arange(n), idx[:, i]] = True
            sel = a[idx[:, :i + 1]]                                      # (n, i+1, d)
            gram = sel @ sel.transpose(1, 2) + 1e-8 * torch.eye(i + 1, dtype=torch.float64)
            w[:, :i + 1] = torch.linalg.solve(gram, (sel @ xs[:, :, None]))[:, :, 0]
            resid = xs - (w[:, None, :i + 1] @ sel)[:, 0]
        idx_all.append(idx)
        w_all.append(w)
    return torch.cat(idx_all), torch.cat(w_all)


# -- the solve ----------------------------------------------------------------------------------------------------
def gram(indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray, v: int) -> torch.Tensor:
    """``A^T diag(weights) A`` (v, v) float64: for every word, ``weight`` added at each pair of its pattern's rows."""
    indptr = np.asarray(indptr, np.int64)
    lens = np.diff(indptr)
    out = torch.zeros(v * v, dtype=torch.float64)  # accumulated in place: a v = 8192 Gram is 512 MB already
    for m in np.unique(lens[lens > 0]):  # words with patterns of the same size: one vectorised block
        ws = np.flatnonzero(lens == m)
        for s in range(0, len(ws), 8192):
            w = ws[s:s + 8192]
            rows = np.asarray(indices, np.int64)[indptr[w][:, None] + np.arange(m)]   # (n, m)
            pairs = (rows[:, :, None] * v + rows[:, None, :]).reshape(-1)
            out.index_add_(0, torch.from_numpy(pairs), torch.from_numpy(np.repeat(weights[w], m * m)))
    return out.view(v, v)


def pattern_sum(indptr: np.ndarray, indices: np.ndarray, rows: torch.Tensor) -> torch.Tensor:
    """``A @ rows``: each word's sum of ``rows`` over its pattern, (n, d) float64."""
    indptr = np.asarray(indptr, np.int64)
    seg = torch.from_numpy(np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)))
    out = torch.zeros(len(indptr) - 1, rows.shape[1], dtype=torch.float64)
    return out.index_add_(0, seg, rows.double()[torch.from_numpy(np.asarray(indices, np.int64))])


def solve(indptr, indices, counts, targets: list[torch.Tensor], v: int, alpha: float = 1.0,
          ridge: float = 1e-3) -> list[torch.Tensor]:
    """The ``v x d`` tables ``X`` minimising ``sum_w count(w)^alpha |sum_{j in P(w)} X[j] - T[w]|^2 + rho |X|^2``
    for each target ``T`` (n, d) in ``targets``, by one Cholesky factorisation of ``A^T F A + rho I``. ``rho`` is
    ``ridge`` times the mean diagonal of ``A^T F A`` (scale-free; it also keeps rows no word uses at zero)."""
    f = np.asarray(counts, np.float64) ** alpha
    g = gram(indptr, indices, f, v)
    rho = ridge * float(g.diagonal().mean()) if float(g.diagonal().mean()) > 0 else ridge
    g.diagonal().add_(max(rho, 1e-12))
    chol = torch.linalg.cholesky(g)
    indptr = np.asarray(indptr, np.int64)
    seg = torch.from_numpy(np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)))
    cols = torch.from_numpy(np.asarray(indices, np.int64))
    fw = torch.from_numpy(f)
    rhs = torch.zeros(v, sum(t.shape[1] for t in targets), dtype=torch.float64)
    rhs.index_add_(0, cols, (torch.cat([t.double() for t in targets], 1) * fw[:, None])[seg])
    x = torch.cholesky_solve(rhs, chol)
    return list(torch.split(x, [t.shape[1] for t in targets], 1))


# -- fit quality --------------------------------------------------------------------------------------------------
BUCKETS = ((1000, None), (100, 1000), (10, 100), (1, 10))  # word counts in the training text: [lo, hi)


def fit_quality(indptr, indices, table: torch.Tensor, target: torch.Tensor, counts, mask=None) -> list[dict]:
    """Per word-frequency bucket: R^2 of the summed rows against the targets (1 - residual / total sum of squares
    around the bucket's mean target) and the mean cosine between them; ``mask`` leaves words out (no target)."""
    fit = pattern_sum(indptr, indices, table)
    counts = np.asarray(counts)
    keep = np.ones(len(counts), bool) if mask is None else np.asarray(mask, bool)
    out = []
    for lo, hi in BUCKETS:
        sel = torch.from_numpy(np.flatnonzero(keep & (counts >= lo) & ((counts < hi) if hi else True)))
        if not len(sel):
            continue
        t, y = target[sel].double(), fit[sel]
        ss = float(((t - t.mean(0)) ** 2).sum())
        r2 = 1.0 - float(((y - t) ** 2).sum()) / ss if ss > 0 else float("nan")
        cos = torch.nn.functional.cosine_similarity(y, t, dim=1, eps=1e-12).mean()
        out.append({"counts": f"{lo}+" if hi is None else f"{lo}-{hi - 1}", "words": len(sel), "r2": r2,
                    "cosine": float(cos)})
    return out
