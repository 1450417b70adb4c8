"""The context a generating model reads: its items, the KV cache, and (Over-Encoding models) each item's n-gram table
rows, kept from the words' own history (``text/ngrams.py``).

``Window`` holds the items (dictionary ids or BPE tokens) and how many of them are in the cache; it feeds new ones
through ``model/step.py`` on a CPU (one or a few positions in one numba pass) or ``Model.trunk`` elsewhere, and can
take the newest item back out (``pop``: speculative.py's rollback of a rejected draft). When the context is full,
the oldest half is dropped and the rest is read again, so the model never sees positions it was not trained on.

An Over-Encoding model reads, besides each word's pattern, the rows its n-grams hash to. The history of an item is
the words before it in the same document: the first item (<|endoftext|>) and the word after any <|endoftext|>
start a document, so the prompt's first word starts one. The rows of an item are computed once, when it joins, from
the keys of the last ``n - 1`` items (``ngram_rows`` on that short tail), and stay its rows when the window is read
again; the cached path and a full forward therefore read the same rows.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..model.step import CpuStep
from ..text.ngrams import EOT_KEY


class Window:
    """The items the model reads (at most seq_len) and, with a KV cache, how many of them it has read already.

    ``words`` (T-FREE Over-Encoding models): item id -> its word string, for the n-gram keys."""

    def __init__(self, model, items: list[int], inputs: Callable, rows: Callable, use_cache: bool,
                 words: Callable | None = None):
        self.model, self.inputs, self.rows = model, inputs, rows
        self.T = model.config.seq_len
        self.items = list(items)
        self.start = max(0, len(self.items) - self.T)
        self.cache = model.new_kv_cache(1, self.T) if use_cache else None
        # one or two new items at a time on a CPU: numba on the same cache (step.py: ~5x torch here)
        self.step = CpuStep(model, self.cache) if use_cache and CpuStep.fits(model) else None
        self.fed = 0  # items[start:start + fed] are in the cache
        self.h = self.last = None  # the last item's hidden state and logits, once computed
        c = model.config
        self.oe = None
        if getattr(c, "oe_orders", ()):
            from ..text.ngrams import stream_boundary, word_key  # noqa: PLC0415

            self._key = lambda i: word_key(words(i))
            self.n_back = max(c.oe_orders)
            self.keys = [self._key(i) for i in self.items]
            self.starts = stream_boundary(np.array(self.keys, np.uint64)).tolist()
            self.oe = list(self._ngram(self.keys, self.starts)) if self.items else []

    def _ngram(self, keys, starts):
        return self.model.config.ngram_rows(np.array(keys, np.uint64), np.array(starts, bool))

    # -- items ---------------------------------------------------------------------------------------------
    def append(self, item: int) -> None:
        self.items.append(item)
        self.h = self.last = None
        if self.oe is not None:
            self.keys.append(self._key(item))
            self.starts.append(len(self.keys) == 1 or self.keys[-2] == EOT_KEY)
            n = self.n_back
            self.oe.append(self._ngram(self.keys[-n:], self.starts[-n:])[-1])
        if len(self.items) - self.start > self.T:  # full: keep the newest half and read it again
            self.start = len(self.items) - max(1, self.T // 2)
            self.fed = 0
            if self.cache is not None:
                self.cache.reset()

    def full(self) -> bool:
        """Whether one more item would refill the window."""
        return len(self.items) - self.start >= self.T

    def pop(self) -> None:
        """Take the newest item back out (and out of the cache, when it was read: the cache only moves back)."""
        self.items.pop()
        self.h = self.last = None
        if self.oe is not None:
            self.keys.pop(), self.starts.pop(), self.oe.pop()
        if self.fed > len(self.items) - self.start:
            self.fed -= 1
            if self.cache is not None:
                self.cache.pos -= 1
        if self.start >= len(self.items):  # popped right after a refill: the window starts at the item again
            self.start, self.fed = len(self.items) - 1, 0
            if self.cache is not None:
                self.cache.reset()

    def oe_rows(self, a: int, b: int):
        """(b - a, S) int64 n-gram rows of items a..b (None for a model without Over-Encoding)."""
        return None if self.oe is None else np.stack(self.oe[a:b])

    # -- reading -------------------------------------------------------------------------------------------
    def hidden(self, k: int = 1):
        """The final-norm hidden states of the last ``k`` items, (k, d): numpy on the CPU step, else a tensor.
        Reads the items not read yet (all of the window without a cache); ``k`` may not exceed those, except
        ``k = 1`` right after a read."""
        new = len(self.items) - self.start - self.fed
        if self.cache is not None and new == 0 and k == 1 and self.h is not None:
            return self.h
        with torch.inference_mode():
            if self.cache is None:
                h = self.model.trunk(self.inputs(self.items[self.start:], self.oe_rows(self.start, len(self.items))))[0]
            elif self.step is not None and 0 < new <= 2 and self.fed:
                a = len(self.items) - new
                oe = None if self.oe is None else self.oe[a:]
                h = self.step.hidden([self.rows(i) for i in self.items[a:]], oe)
            else:
                a = self.start + self.fed
                h = self.model.trunk(self.inputs(self.items[a:], self.oe_rows(a, len(self.items))),
                                     kv_cache=self.cache)[0]
            self.fed = len(self.items) - self.start
        if k > len(h):
            raise ValueError(f"asked for the hidden states of {k} items, {len(h)} were read")
        self.h = h[-1:]
        return h[-k:]

    def logits(self, h, second: bool = False) -> np.ndarray:
        """(V,) float32 logits of one hidden state (d,) through the head, or the word-after-next head."""
        if isinstance(h, np.ndarray):
            return self.step.logits(h, second)
        with torch.inference_mode():
            head = self.model.head2 if second else self.model.head
            return head(h).float().cpu().numpy()

    def next_logits(self) -> np.ndarray:
        """(V,) float32 logits of the item after the current ones (through ``model(..., last=True)`` or the CPU
        step: any model with that forward generates)."""
        new = len(self.items) - self.start - self.fed
        if self.cache is not None and new == 0 and self.last is not None:
            return self.last  # nothing new since the last call
        with torch.inference_mode():
            if self.cache is None:
                out, _ = self.model(self.inputs(self.items[self.start:], self.oe_rows(self.start, len(self.items))),
                                    last=True)
            elif self.step is not None and new == 1 and self.fed:
                out = self.step.step(self.rows(self.items[-1]), None if self.oe is None else self.oe[-1])
            else:
                a = self.start + self.fed
                out, _ = self.model(self.inputs(self.items[a:], self.oe_rows(a, len(self.items))),
                                    kv_cache=self.cache, last=True)
            self.fed = len(self.items) - self.start
        self.last = out if isinstance(out, np.ndarray) else out[0, -1].float().cpu().numpy()
        return self.last


def pattern_inputs(dictionary, device):
    """(ids, oe_rows) -> a (1, n) Patterns grid of those dictionary words (with their n-gram rows, if any)."""
    from ..model.transformer import Patterns  # noqa: PLC0415

    def inputs(ids, oe_rows=None):
        ids = np.asarray(ids, np.int64)
        indptr, indices = dictionary.indptr, dictionary.indices
        lo = indptr[ids]
        lens = indptr[ids + 1] - lo
        offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        flat = np.arange(offsets[-1]) + np.repeat(lo - offsets[:-1], lens)  # positions in indices, word by word
        x = Patterns(torch.from_numpy(indices[flat].astype(np.int64)), torch.from_numpy(offsets), (1, len(ids)),
                     oe_rows=None if oe_rows is None else torch.from_numpy(np.ascontiguousarray(oe_rows, np.int64)))
        return x.to(device)
    return inputs


def pattern_rows(dictionary):
    """id -> that dictionary word's rows (CpuStep's input)."""
    return lambda i: dictionary.indices[dictionary.indptr[i]:dictionary.indptr[i + 1]]


def token_inputs(device):
    return lambda ids, oe_rows=None: torch.tensor([ids], dtype=torch.int64, device=device)
