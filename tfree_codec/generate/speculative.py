"""Self-speculative generation with the Over-Decoding head (``tfree generate --draft``).

A model trained with ``--od-weight`` has a second head that predicts the word *after* next from the same hidden
state. Each step drafts that word from it (a dictionary decode over the most frequent words), then reads the next
word and the draft together, two positions in one pass over the KV cache. The main head at the next word's
position says what the word after it really is: where that is the draft, the draft is kept and the pass has
produced two words (and the draft's own position already holds the heads' view of the word after it); otherwise
the draft is taken back out of the cache (``Window.pop``) and the main head's word is the one used.

Greedy: a draft is kept exactly when it is the main head's argmax, so the text is plain greedy's, word for word.
Sampling: the standard speculative rule (Leviathan et al. 2023; Chen et al. 2023): with the draft ``d`` drawn from
``q`` (the second head's dictionary softmax) and ``p`` the model's own distribution at that position, keep ``d``
with probability ``min(1, p(d) / q(d))``, else draw from ``max(0, p - q)`` normalised. Every word is then drawn from
exactly ``p`` (the same temperature, top-k and top-p: both are ``Sampler.probs``), though from other random numbers
than plain sampling uses.

What it buys: two positions through the body in one pass (each weight row read once for both) instead of two. What
it costs: the second head and a (small) dictionary decode per pass, and a wasted position for a rejected draft; the
main head's dictionary decode per word is the same. bench/generate.py measures the balance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRAFT_WORDS = 2048  # the draft decodes over this many of the dictionary's most frequent words


@dataclass
class DraftStats:
    """How the drafts fared: ``accepted`` of ``drafted`` were kept (``rate``)."""

    drafted: int = 0
    accepted: int = 0

    @property
    def rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")


def accept_or_resample(p: np.ndarray, q: np.ndarray, d: int, rng: np.random.Generator) -> tuple[int, bool]:
    """The speculative rule for a draft ``d`` drawn from ``q``, where the model's distribution is ``p`` (both over
    the same ids): (``d``, True) with probability min(1, p(d) / q(d)), else (a draw from max(0, p - q) normalised,
    False). The result is distributed exactly as ``p``."""
    if rng.random() * q[d] < p[d]:  # u < p/q without dividing (q[d] > 0: d was drawn from q)
        return d, True
    r = np.maximum(p - q, 0.0)
    total = r.sum()
    if total <= 0:  # p == q up to rounding: nothing to correct
        r, total = p, p.sum()
    return inverse_cdf(r, rng.random() * total), False


def inverse_cdf(weights: np.ndarray, target: float) -> int:
    """The first id where the running sum of ``weights`` exceeds ``target`` (the last id, should rounding leave
    the total short of it)."""
    return min(int(np.searchsorted(np.cumsum(weights), target, side="right")), len(weights) - 1)


class Drafter:
    """The draft from the second head's logits: a dictionary decode over the ``size`` most frequent words (a rare
    word is rarely the right guess, and the decode is the draft's main cost), scored as the main sampler scores,
    with the same calibration."""

    def __init__(self, dictionary, t_cal: float, prior: tuple = (0.0, 0.0), size: int = DRAFT_WORDS,
                 score: str = "sigmoid_diff"):
        from ..decode.decoder import Decoder  # noqa: PLC0415
        from ..decode.dictionary import Dictionary, count_prior  # noqa: PLC0415
        from ..decode.wordscore import Ranking  # noqa: PLC0415

        from ..text.words import MARKERS  # noqa: PLC0415

        n, k = len(dictionary), len(MARKERS)  # a dictionary starts with its markers: they stay, and first
        keep = np.arange(n)
        if size and size < n:
            keep = np.concatenate([keep[:k], k + np.sort(np.argsort(-dictionary.counts[k:], kind="stable")[:size])])
        ptr, idx = dictionary.indptr, dictionary.indices
        lens = ptr[keep + 1] - ptr[keep]
        sub_ptr = np.zeros(len(keep) + 1, np.int64)
        np.cumsum(lens, out=sub_ptr[1:])
        sub_idx = np.concatenate([idx[ptr[i]:ptr[i + 1]] for i in keep]) if len(keep) else idx[:0]
        words = [dictionary.words[i] for i in keep]
        sub = Dictionary(dictionary.codec, words, dictionary.counts[keep], sub_ptr, sub_idx)
        # greedy drafts through the decoder's pruned search (a rare word seldom wins: few words are read)
        self.decoder = Decoder(sub, rank=Ranking(score, 1.0 / t_cal, tuple(prior) if any(prior) else None))
        self.scorer = self.decoder.scorer()
        self.keep = keep
        self.ids = keep[self.scorer.order]  # trie position -> main dictionary id
        self.n = n
        self.scale = np.float32(1.0 / t_cal)
        self.prior = count_prior(dictionary.counts[self.ids], *prior) if any(prior) else None

    def z(self, logits: np.ndarray) -> np.ndarray:
        s = self.scorer.score_one(np.ascontiguousarray(logits, np.float32), self.decoder.score)
        return s * self.scale + self.prior if self.prior is not None else s * self.scale

    def greedy(self, logits: np.ndarray) -> int:
        return int(self.keep[self.decoder.decode(logits, temperature=0).ids[0]])

    def sample(self, logits: np.ndarray, sampler) -> tuple[int, np.ndarray]:
        """(a draft drawn from q, q over the main dictionary's ids); ``sampler``: the main words' Sampler."""
        qs = sampler.probs(self.z(logits))
        q = np.zeros(self.n)
        q[self.ids] = qs
        return int(self.ids[inverse_cdf(qs, sampler.rng.random())]), q


def draft_words(window, words, pick, probs, drafter: Drafter, stats: DraftStats, sampler):
    """Generate (word, id, probability) endlessly, two positions per pass where a draft holds (module doc).

    ``window``: a context.Window whose items end with the prompt; ``words``: id -> word (the dictionary's list);
    ``pick(logits) -> (word, id, prob)``: the plain
    sampler (greedy: the argmax), ``probs(logits) -> p`` over dictionary ids: the distribution ``pick`` draws from
    (sampling only); ``sampler``: the decode.sampling.Sampler both use. ``stats`` counts the drafts as they are
    judged."""
    greedy = sampler.greedy
    h = window.hidden(1)[-1]
    word, i, prob = pick(window.logits(h))
    h2 = window.logits(h, second=True)  # the second head where the pending word's successor is guessed
    while True:
        yield word, i, prob
        if greedy:
            d, q = drafter.greedy(h2), None
        else:
            d, q = drafter.sample(h2, sampler)
        window.append(i)
        if window.full():  # the draft would refill the window: the word is read where plain generation reads it
            hp = window.hidden(1)[-1]
            window.append(d)
            hd = window.hidden(1)[-1]
        else:
            window.append(d)
            hp, hd = window.hidden(2)
        main = window.logits(hp)  # the main head at the word just fed: what really follows it
        stats.drafted += 1
        if greedy:
            word, i, prob = pick(main)
            kept = i == d
        else:
            p = probs(main)
            i, kept = accept_or_resample(p, q, d, sampler.rng)
            word, prob = words[i], float(p[i])
        if kept:
            stats.accepted += 1
            yield word, i, prob
            word, i, prob = pick(window.logits(hd))
            h2 = window.logits(hd, second=True)
        else:
            window.pop()
            h2 = window.logits(hp, second=True)
