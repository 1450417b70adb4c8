"""``CpuStep``: the model's forward for one new position, on a CPU, for generation (numba).

Generating reads one position at a time, and at this size torch spends most of a step on dispatch: a 128-vector's
rms_norm took 10-20 us, a 128 x 384 matrix-vector product 6-11 us and the 8192 x 128 head 130-170 us, where the
arithmetic is a few us. Here a layer is one numba call (rms_norm, QKV, RoPE, the cache write, attention over the
cached positions, the projection, SwiGLU: 19 us for a 128-wide block) and the head is one numba matrix-vector
product on this thread (``head_matvec``; numpy's BLAS took 45-55 us for 8192 x 128 on an idle machine, and
milliseconds on a busy one, its threads waiting on each other). A step of the bundled model (4 x 256): 0.65 ms, against 3.5 ms through
``Model.forward``; of a 4 x 128 model, 0.12 against 1.1-2.7 ms (bench/generate.py, docs/generate.md).

It computes what ``model(x, kv_cache=cache, last=True)`` computes (tests check the logits), on numpy views of the
same weights and of ``cache``'s tensors: the prompt still goes through ``Model.forward``, which fills the same
cache, and either can go on from the other.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from ..config import TfreeError
from .transformer import KVCache, Model, rope_tables


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _matvec(w, x, out):
    for r in range(w.shape[0]):
        s = np.float32(0)
        for c in range(w.shape[1]):
            s += w[r, c] * x[c]
        out[r] = s


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _rms_norm(x, w, eps, out):
    ss = np.float32(0)
    for i in range(x.shape[0]):
        ss += x[i] * x[i]
    r = np.float32(1) / np.sqrt(ss / np.float32(x.shape[0]) + eps)
    for i in range(x.shape[0]):
        out[i] = x[i] * r * w[i]


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _matvecs(w, xs, out):
    """out[i] = w @ xs[i] for a few positions: each row of w is read once for all of them (while it is in L1),
    so two positions cost little more than one; a position's sums are those ``_matvec`` makes."""
    for r in range(w.shape[0]):
        for i in range(xs.shape[0]):
            s = np.float32(0)
            for c in range(w.shape[1]):
                s += w[r, c] * xs[i, c]
            out[i, r] = s


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def head_matvec(w, x):
    """``w @ x`` on this thread: numpy's BLAS would spread one matrix-vector product over its own threads, which
    on a busy machine wait on each other (an 8,192 x 256 head: 0.26 ms on one OpenBLAS thread, 8 ms on two while
    another job ran; 0.17 ms here)."""
    out = np.empty(w.shape[0], np.float32)
    _matvec(w, x, out)
    return out


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def block_step(xs, norm1, qkv, proj, norm2, gate_up, down, k_cache, v_cache, t0, cos, sin, n_head, eps):
    """One block (model.Block) on the residuals xs (n, d) of positions t0..t0+n-1, in place; their keys and values
    go into k_cache, v_cache (H, max_len, hd) there, and position t attends to 0..t (n = 1: one new word; n = 2:
    a word and a draft, speculative.py)."""
    n, d = xs.shape
    hd = d // n_head
    half = hd // 2
    f = down.shape[1]
    h = np.empty((n, d), np.float32)
    for i in range(n):
        _rms_norm(xs[i], norm1, eps, h[i])
    a = np.empty((n, 3 * d), np.float32)  # q | k | v
    _matvecs(qkv, h, a)
    for i in range(n):
        t = t0 + i
        for o in range(0, 2 * d, hd):    # RoPE on each head of q and k: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
            for j in range(half):
                x1, x2 = a[i, o + j], a[i, o + half + j]
                a[i, o + j] = x1 * cos[t, j] + x2 * sin[t, j]
                a[i, o + half + j] = x2 * cos[t, half + j] + x1 * sin[t, half + j]
        for hh in range(n_head):
            for j in range(hd):
                k_cache[hh, t, j] = a[i, d + hh * hd + j]
                v_cache[hh, t, j] = a[i, 2 * d + hh * hd + j]
    scale = np.float32(1 / math.sqrt(hd))
    y = np.zeros((n, d), np.float32)
    att = np.empty(t0 + n, np.float32)
    for i in range(n):
        t = t0 + i
        for hh in range(n_head):
            q = a[i, hh * hd:(hh + 1) * hd]
            top = np.float32(-np.inf)
            for p in range(t + 1):
                s = np.float32(0)
                for j in range(hd):
                    s += k_cache[hh, p, j] * q[j]
                att[p] = s * scale
                top = max(top, att[p])
            z = np.float32(0)
            for p in range(t + 1):
                att[p] = np.exp(att[p] - top)
                z += att[p]
            for p in range(t + 1):
                wp = att[p] / z
                for j in range(hd):
                    y[i, hh * hd + j] += wp * v_cache[hh, p, j]
    _matvecs(proj, y, h)
    for i in range(n):
        for c in range(d):
            xs[i, c] += h[i, c]
        _rms_norm(xs[i], norm2, eps, h[i])
    g = np.empty((n, 2 * f), np.float32)  # gate | up
    _matvecs(gate_up, h, g)
    for i in range(n):
        for c in range(f):  # silu(gate) * up; the clip keeps exp finite
            g[i, c] = g[i, c] / (np.float32(1) + np.exp(-min(max(g[i, c], np.float32(-80)), np.float32(80)))) * g[i, f + c]
    for r in range(d):
        for i in range(n):
            s = np.float32(0)
            for c in range(f):
                s += down[r, c] * g[i, c]
            xs[i, r] += s


class CpuStep:
    """``step(rows)``: the logits (V,) float32 after one new item, the sum of those rows of the input table (its
    pattern in T-FREE mode, ``[token]`` for BPE), continuing ``cache``; ``hidden`` gives the final-norm hidden
    states of one or a few new items (the heads' input) for callers that pick the head themselves. Over-Encoding
    models take each item's n-gram table rows too (``oe_rows``: (S,) int64, as ``Patterns.oe_rows``)."""

    @staticmethod
    def fits(model) -> bool:
        """Whether ``model`` is one this step can run: a ``Model`` with float32 weights on the CPU."""
        return isinstance(model, Model) and all(p.device.type == "cpu" and p.dtype == torch.float32
                                                for p in model.parameters())

    def __init__(self, model: Model, cache: KVCache):
        c = model.config
        if not self.fits(model) or cache.k.device.type != "cpu" or cache.k.dtype != torch.float32:
            raise ValueError("CpuStep runs float32 models and caches on the CPU")
        w = {k: t.detach().numpy() for k, t in model.state_dict().items()}  # views of the parameters
        self.embed, self.head, self.norm = w["embed.weight"], w["head.weight"], w["norm.weight"]
        self.head2 = w.get("head2.weight")
        self.oe = None
        if c.oe_orders:  # the n-gram tables and their projection, as overtok.OverEncoding
            n = len(c.oe_orders) * c.oe_slices
            self.oe = ([w[f"oe.tables.{i}.weight"] for i in range(n)], w["oe.proj.weight"], np.float32(1.0 / n),
                       c.oe_unigram)
        self.layers = [tuple(w[f"blocks.{i}.{n}"] for n in ("norm1.weight", "attn.qkv.weight", "attn.proj.weight",
                                                              "norm2.weight", "mlp.gate_up.weight", "mlp.down.weight"))
                       for i in range(c.n_layer)]
        self.cache, self.k, self.v = cache, cache.k.numpy()[:, 0], cache.v.numpy()[:, 0]  # (L, H, max_len, hd)
        self.n_head, self.eps = c.n_head, np.float32(c.norm_eps)
        cos, sin = rope_tables(c.n_embd // c.n_head, cache.max_len, c.rope_base)
        self.cos, self.sin = cos.numpy(), sin.numpy()

    def _embed(self, rows, oe_rows) -> np.ndarray:
        x = self.embed[rows].sum(0)
        if self.oe is None:
            return x
        tables, proj, scale, unigram = self.oe
        if oe_rows is None or len(oe_rows) != len(tables):
            raise TfreeError(f"this model over-encodes with {len(tables)} n-gram tables: each item needs its "
                             f"{len(tables)} table rows")
        oe = (proj @ np.concatenate([t[r] for t, r in zip(tables, oe_rows)])) * scale
        return x + oe if unigram else oe

    def hidden(self, rows, oe_rows=None) -> np.ndarray:
        """(n, d) final-norm hidden states of n new items (``rows``/``oe_rows``: one entry per item), continuing
        the cache."""
        t, n = self.cache.pos, len(rows)
        if t + n > self.cache.max_len:
            raise TfreeError(f"KV cache holds {self.cache.max_len} positions; {t + n} requested")
        xs = np.stack([self._embed(r, None if oe_rows is None else oe_rows[i]) for i, r in enumerate(rows)])
        for i, weights in enumerate(self.layers):
            block_step(xs, *weights, self.k[i], self.v[i], t, self.cos, self.sin, self.n_head, self.eps)
        self.cache.pos = t + n
        return xs * (self.norm / np.sqrt((xs * xs).sum(1, keepdims=True) / np.float32(xs.shape[1]) + self.eps))

    def logits(self, h: np.ndarray, second: bool = False) -> np.ndarray:
        """(V,) float32 logits of one final-norm hidden state through the head (``second``: the word-after-next
        head of an Over-Decoding model)."""
        return head_matvec(self.head2 if second else self.head, np.ascontiguousarray(h, np.float32))

    def step(self, rows, oe_rows=None) -> np.ndarray:
        return self.logits(self.hidden([rows], None if oe_rows is None else [oe_rows])[0])
