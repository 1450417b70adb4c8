"""How dictionary scores become probabilities, and the fit that says so (SPEC section 5).

    p(w) = (1 - p_unk) * softmax_D(s / temperature + b log(count + 1) + c [count = 0])[w]   if w is in D
    p(w) = p_unk * p_spell(w)                                                             otherwise (spelling.py)

with ``s(w) = mean(sigmoid[P_w]) - mean(sigmoid[not P_w])`` the decoder's score. ``Calibration`` holds the numbers
(stored in a checkpoint as calibration.json: model/checkpoint.py reads it); ``fit_scale`` finds the maximum-
likelihood temperature and count-prior weights from held-out scores (train/evaluate.calibrate runs it on a run's
validation slice); ``log_softmax_at`` sums the log-probabilities of targets under several settings at once.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..config import TfreeError
from .wordscore import SCORES


def log_softmax_at(scores, target, params, feats, rows: bool = False):
    """For each (scale a, prior weights w) in ``params``: log softmax(a * scores + feats @ w)[target], summed over
    rows. scores (N, W), target (N,), feats (W, K) (``prior_features``) -> (len(params),) float64; with ``rows``,
    a list of each parameter set's (N,) values instead. Written out because torch's CPU logsumexp is ~8x slower
    than exp."""
    buf = torch.empty_like(scores)
    out = []
    for a, w in params:
        torch.mul(scores, a, out=buf)
        if any(w):
            buf.add_(feats @ torch.tensor(w, dtype=feats.dtype, device=feats.device))
        z_t = buf.gather(1, target[:, None])                                  # (N, 1)
        top = buf.max(1, keepdim=True).values
        buf.sub_(top).exp_()
        lp = (z_t - top - buf.sum(1, keepdim=True).log())[:, 0]
        out.append(lp if rows else float(lp.sum()))
    return out if rows else np.array(out)


def fit_scale(scores, target, feats, prior: bool = True, init=(1 / 0.07, 0.0, 0.0), iters: int = 25) -> tuple:
    """Maximum-likelihood (a, w) of p(w) = softmax(a * s + feats @ w) on held-out rows (feats: log(count + 1) and
    [count = 0], ``prior_features``): a log-linear model, so the log-likelihood is concave and Newton's method with
    step halving finds the optimum. w = 0 unless ``prior``. scores (N, W) float32, target (N,), feats (W, K).
    Returns (a, *w)."""
    F = feats.float()
    K = F.shape[1]
    FF = (F[:, :, None] * F[:, None, :]).reshape(-1, K * K)
    calls = [0]

    def stats(theta):
        calls[0] += 1
        n = 1 + K
        ll, g, H = 0.0, torch.zeros(n, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64)
        a, w = float(theta[0]), theta[1:].float()
        bias = F @ w if bool(w.any()) else None
        for r in range(0, len(target), 256):  # row chunks keep the (rows, W) temporaries small
            S, t = scores[r:r + 256], target[r:r + 256]
            P = torch.mul(S, a)
            if bias is not None:
                P.add_(bias)
            z_t = P.gather(1, t[:, None])[:, 0].double()
            top = P.max(1, keepdim=True).values
            P.sub_(top).exp_()
            tot = P.sum(1, keepdim=True)
            P.div_(tot)
            ll += float((z_t - top[:, 0].double() - tot[:, 0].double().log()).sum())
            PS = P * S
            e1, eF = PS.sum(1).double(), (P @ F).double()                       # E[s], E[f]
            e11, eFF, e1F = (PS * S).sum(1).double(), (P @ FF).double().reshape(-1, K, K), (PS @ F).double()
            x = torch.cat([S.gather(1, t[:, None]).double(), F[t].double()], 1)  # the targets' features
            e = torch.cat([e1[:, None], eF], 1)
            g += (x - e).sum(0)
            second = torch.zeros(len(t), n, n, dtype=torch.float64)
            second[:, 0, 0], second[:, 0, 1:], second[:, 1:, 0], second[:, 1:, 1:] = e11, e1F, e1F, eFF
            H -= (second - e[:, :, None] * e[:, None, :]).sum(0)
        return ll, g, H

    theta = torch.zeros(1 + K, dtype=torch.float64)
    theta[:len(init)] = torch.tensor(init[:1 + K], dtype=torch.float64)
    free = torch.ones(1 + K, dtype=torch.bool)
    free[1:] = prior
    # a feature that is constant over the dictionary (every count seen, say) moves no probability: leave its weight
    free[1:] &= (F.max(0).values > F.min(0).values).cpu()
    theta[~free] = 0.0
    ll, g, H = stats(theta)
    for _ in range(iters):
        step = torch.zeros_like(theta)
        Hf = H[free][:, free]
        step[free] = -torch.linalg.solve(Hf - 1e-9 * torch.eye(len(Hf), dtype=torch.float64), g[free])
        for _ in range(30):  # halve until the likelihood does not fall and the scale stays positive
            cand = theta + step
            if cand[0] > 0:
                ll2, g2, H2 = stats(cand)
                if ll2 >= ll - 1e-9:
                    break
            step = step / 2
        else:
            break
        done = abs(ll2 - ll) < 1e-6 * max(1.0, abs(ll))
        theta, ll, g, H = cand, ll2, g2, H2
        if done:
            break
    return tuple(float(x) for x in theta)


@dataclass
class Calibration:
    """How dictionary scores become probabilities: p(w) = (1 - p_unk) softmax(s / temperature + prior_weight *
    log(count + 1) + zero_count_weight * [count = 0]); ``temperature_plain`` is the fit without the count prior (the
    SPEC's score alone). Fitted on the validation slice, stored in the checkpoint. zero_count_weight prices the
    words the training text never showed (a continued model's source words): 0 where there are none."""

    temperature: float = 0.07
    prior_weight: float = 0.0
    score: str = "sigmoid_diff"  # or "mean_logit": a model trained with the word objective (model/word_head.py)
    zero_count_weight: float = 0.0
    temperature_plain: float = 0.07
    p_unk: float = 0.02
    unk_charge: str = "spell"   # "spell" (SpellingModel) or "bytes" (SPEC's 256^-(bytes+1))
    spell_order: int = 4

    def params(self) -> list:
        """[(scale, prior weights)] of the calibrated score and of the plain one (``log_softmax_at``)."""
        return [(1.0 / self.temperature, (self.prior_weight, self.zero_count_weight)),
                (1.0 / self.temperature_plain, (0.0, 0.0))]

    def to_dict(self) -> dict:
        """The fields; ``score`` only where it is not the SPEC's, so a BCE model's calibration.json is as before."""
        d = asdict(self)
        if d["score"] == "sigmoid_diff":
            del d["score"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        check_calibration(d)  # a value of the wrong kind ("hot", null, -1) is one TfreeError naming its field
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _number(v, lo=-math.inf, hi=math.inf) -> bool:
    """A finite int or float (not a bool, not nan) strictly between ``lo`` and ``hi``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and lo < v < hi


CALIBRATION_FIELDS = {  # Calibration's fields: (check, what it wants)
    "temperature": (lambda v: _number(v, 0), "a positive number"),
    "temperature_plain": (lambda v: _number(v, 0), "a positive number"),
    "prior_weight": (_number, "a number"), "zero_count_weight": (_number, "a number"),
    "score": (lambda v: v in SCORES, " or ".join(map(repr, SCORES))),
    "p_unk": (lambda v: _number(v, 0, 1), "a number between 0 and 1"),
    "unk_charge": (lambda v: v in ("spell", "bytes"), "'spell' or 'bytes'"),
    "spell_order": (lambda v: isinstance(v, int) and _number(v, 0, 17), "an integer from 1 to 16")}


def check_calibration(d) -> None:
    """A calibration (calibration.json, or a checkpoint's train state) of the right kinds, else one TfreeError:
    a string where a number belongs reached Python's ValueError, and nan or a negative temperature decoded
    nonsense silently."""
    if not isinstance(d, dict):
        raise TfreeError("a calibration must be a JSON object")
    for k, (ok, want) in CALIBRATION_FIELDS.items():
        if k in d and not ok(d[k]):
            raise TfreeError(f"{k} must be {want}, not {d[k]!r}")


def prior_features(dictionary, device="cpu"):
    """(W, 2) float32 on ``device``: decode.dictionary.prior_features, what ``Calibration``'s prior weights multiply."""
    from .dictionary import prior_features as features  # noqa: PLC0415

    return torch.as_tensor(features(dictionary.counts), dtype=torch.float32).to(device)
