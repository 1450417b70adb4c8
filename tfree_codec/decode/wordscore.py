"""How a word's score is made from a position's logits: the family every decoding path (full scoring, the pruned
search, the torch path) computes, so that a new score only adds its three pieces.

    s(w) = alpha(n_w) * sum_{r in P_w} g(x_r) + beta(n_w) * G,    G = sum_r g(x_r) over all v rows

with n_w = |P_w| the word's pattern size, g monotone (sigmoid or identity) and alpha >= 0 (the pruned search's
bounds need s to grow with the sum). A decoder then ranks ``z(w) = scale * s(w) + bias_w``.

``VARIANT2`` ("sigmoid_diff", the T-FREE reference's "variant 2", the default): g = sigmoid, s = mean(g[P_w]) - mean(g[not P_w]),
i.e. alpha = 1/n + 1/(v - n), beta = -1/(v - n). ``MEAN_LOGIT`` ("mean_logit", what a model
trained with the word objective is scored by, model/word_head.py): g = identity, s = mean(x[P_w]): alpha = 1/n,
beta = 0. ``word_score`` maps a calibration's ``score`` name (decode/calibration.py) to its member.
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


_COEFFICIENTS = {"sigmoid_diff": _variant2, "mean_logit": _mean}


@dataclass(frozen=True)
class WordScore:
    """One member of the family: ``name`` picks alpha and beta (``_COEFFICIENTS``), ``g`` the row transform."""

    name: str = "sigmoid_diff"
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
        from ._score import sigmoid  # noqa: PLC0415  (numba: imported when first needed)

        return sigmoid(np.ascontiguousarray(logits, np.float32))

    def of_patterns(self, logits_row: np.ndarray, patterns, v: int) -> np.ndarray:
        """float64 s of each pattern (an array of rows, dictionary word or not) at one position's logits: the
        reference the greedy tie-break and the spelling fallback compare in."""
        g = self.transform64(logits_row)
        sums = np.array([g[p].sum() for p in patterns])
        alpha, beta = self.alpha_beta([len(p) for p in patterns], v)
        return alpha * sums + beta * g.sum()

    def transform64(self, logits: np.ndarray) -> np.ndarray:
        """g in float64 (numpy's exp): the reference the greedy tie-break compares in."""
        x = np.asarray(logits, np.float64)
        if self.g == "identity":
            return x
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-x))


VARIANT2 = WordScore("sigmoid_diff", "sigmoid")
MEAN_LOGIT = WordScore("mean_logit", "identity")
SCORES = {"sigmoid_diff": VARIANT2, "mean_logit": MEAN_LOGIT}  # a calibration's ``score`` -> its member


@dataclass(frozen=True)
class Ranking:
    """How a decoder ranks words, one object: ``z = scale * s + bias`` with s the ``score`` (a name in ``SCORES``
    or a ``WordScore``), ``scale`` > 0 and ``bias`` None, a count prior's weights ``(b, c)``
    (dictionary.count_prior) or a function of the dictionary giving its (W,) bias. A calibration's ranking is
    ``Ranking(cal.score, 1 / cal.temperature, (cal.prior_weight, cal.zero_count_weight))``."""

    score: object = "sigmoid_diff"
    scale: float = 1.0
    bias: object = None

    def __post_init__(self):
        from ..config import TfreeError  # noqa: PLC0415

        object.__setattr__(self, "score", word_score(self.score))
        if not (isinstance(self.scale, (int, float, np.floating)) and self.scale > 0 and np.isfinite(self.scale)):
            raise TfreeError(f"scale must be a positive number, not {self.scale!r}")
        b = self.bias
        if b is not None and not callable(b) and not (isinstance(b, tuple) and len(b) == 2):
            raise TfreeError("bias must be None, count-prior weights (b, c) or a function of the dictionary")
        object.__setattr__(self, "scale", float(self.scale))


def word_score(score) -> WordScore:
    """A ``WordScore`` from itself or from its name (``SCORES``: what calibration.json's ``score`` says)."""
    if isinstance(score, WordScore):
        return score
    if score not in SCORES:
        from ..config import TfreeError  # noqa: PLC0415

        raise TfreeError(f"unknown word score {score!r} (choose from {', '.join(SCORES)})")
    return SCORES[score]
