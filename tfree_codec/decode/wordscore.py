"""How a word's score is made from a position's logits: the family every decoding path (full scoring, the pruned
search, the torch path) computes, so that a new score only adds its three pieces.

    s(w) = alpha(n_w) * sum_{r in P_w} g(x_r) + beta(n_w) * G,    G = sum_r g(x_r) over all v rows

with n_w = |P_w| the word's pattern size, g monotone (sigmoid or identity) and alpha >= 0 (the pruned search's
bounds need s to grow with the sum). A decoder then ranks ``z(w) = scale * s(w) + bias_w``.

``VARIANT2`` (the T-FREE reference's "variant 2", the default): g = sigmoid, s = mean(g[P_w]) - mean(g[not P_w]),
i.e. alpha = 1/n + 1/(v - n), beta = -1/(v - n). ``MEAN_LOGIT``: g = identity, s = mean(x[P_w]): alpha = 1/n,
beta = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

G_FUNCTIONS = ("sigmoid", "identity")


def _variant2(n: np.ndarray, v: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.maximum(v - n, 0).astype(np.float64)
    with np.errstate(divide="ignore"):
        c = np.where(out > 0, 1.0 / out, 0.0)
        return 1.0 / np.maximum(n, 1) + c, -c


def _mean(n: np.ndarray, v: int) -> tuple[np.ndarray, np.ndarray]:
    return 1.0 / np.maximum(n, 1), np.zeros(len(n))


_COEFFICIENTS = {"variant2": _variant2, "mean_logit": _mean}


@dataclass(frozen=True)
class WordScore:
    """One member of the family: ``name`` picks alpha and beta (``_COEFFICIENTS``), ``g`` the row transform."""

    name: str = "variant2"
    g: str = "sigmoid"

    def __post_init__(self):
        from ..config import TfreeError  # noqa: PLC0415

        if self.name not in _COEFFICIENTS:
            raise TfreeError(f"unknown word score {self.name!r} (known: {', '.join(_COEFFICIENTS)})")
        if self.g not in G_FUNCTIONS:
            raise TfreeError(f"g must be one of {G_FUNCTIONS}, not {self.g!r}")

    def alpha_beta(self, sizes, v: int) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, beta) float64 per word of pattern sizes ``sizes``."""
        return _COEFFICIENTS[self.name](np.asarray(sizes, np.int64), v)

    def coefficients(self, sizes, v: int) -> tuple[np.ndarray, np.ndarray]:
        """(a, c) float32 per word of pattern sizes ``sizes``: s = a * S_w - c * G (a = alpha, c = -beta)."""
        alpha, beta = self.alpha_beta(sizes, v)
        return alpha.astype(np.float32), (-beta).astype(np.float32)

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """g of (B, v) float32 logits, float32."""
        if self.g == "identity":
            return np.ascontiguousarray(logits, np.float32)
        from .scorer import sigmoid  # noqa: PLC0415

        return sigmoid(logits)

    def transform64(self, logits: np.ndarray) -> np.ndarray:
        """g in float64 (numpy's exp): the reference the greedy tie-break compares in."""
        x = np.asarray(logits, np.float64)
        if self.g == "identity":
            return x
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-x))


VARIANT2 = WordScore("variant2", "sigmoid")
MEAN_LOGIT = WordScore("mean_logit", "identity")
