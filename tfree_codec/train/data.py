"""Training and evaluation batches from documents: T-FREE word patterns or BPE tokens, packed the same way.

A ``Corpus`` (shards/corpus.py) holds documents as flat CSR arrays, cut into units, a fixed share of them held out
for validation. Training units are shuffled per epoch from the seed and packed into sequences of ``seq_len + 1`` items with
``<|endoftext|>`` after each document's last unit; consecutive sequences overlap by one item, so every item is a
target exactly once. The ``Packer``'s cursor (epoch, unit, offset) is all the state there is: saving it and
restoring it continues the exact same stream.

Over-Encoding models also get each input position's n-gram table rows (``Patterns.oe_rows``), from the lexicon
words' keys (hashed once per lexicon) under text/ngrams.py's history rule: a unit starts a document, and a window's
first item keeps its true history (the words of its unit before it), so a window cut never changes a row.
"""
from __future__ import annotations

import numpy as np

from ..config import TfreeError
from ..generate.bits import TokenItems
from ..shards.corpus import Corpus, Units, gather_patterns
from ..text.words import EOT


class Packer:
    """An endless, seeded stream over a unit list: units in a per-epoch permutation, each followed by <|endoftext|>
    when it ends its document, cut into windows of ``seq_len + 1`` items that overlap by one.

    ``lengths[u]`` is the number of items (words or tokens) of unit u; items are addressed by (unit, position).
    """

    def __init__(self, lengths: np.ndarray, last: np.ndarray, n_bytes: np.ndarray, seq_len: int, seed: int):
        if len(lengths) == 0 or int(lengths.sum() + last.sum()) == 0:
            raise TfreeError("no training text: the data holds no words outside the validation slice")
        self.lengths, self.last, self.n_bytes = lengths.astype(np.int64), last.astype(bool), n_bytes
        self.span = self.lengths + self.last                    # items each unit puts in the stream
        self.seq_len, self.seed = seq_len, seed
        self.cursor = {"epoch": 0, "index": 0, "offset": 0}
        self._perm = (None, None)

    def order(self, epoch: int) -> np.ndarray:
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.lengths)))
        return self._perm[1]

    def _walk(self, cursor: dict, n: int):
        """Segments (unit, a, b) covering the next n items from ``cursor`` (unit -1: <|endoftext|>), the bytes of
        text they cover and the cursor after them."""
        e, k, o = cursor["epoch"], cursor["index"], cursor["offset"]
        segs, nbytes = [], 0.0
        while n > 0:
            u = int(self.order(e)[k])
            span = int(self.span[u])
            take = min(n, span - o)
            a, b = o, o + take
            words_end = max(a, min(b, int(self.lengths[u])))
            # also when empty (a window that starts at an <|endoftext|>, a unit without words): every segment
            # list then says which unit each <|endoftext|> ends, and where a window starts in its unit
            segs.append((u, a, words_end))
            if words_end > a:
                nbytes += float(self.n_bytes[u]) * (words_end - a) / int(self.lengths[u])
            if b > self.lengths[u]:
                segs.append((-1, 0, 1))
            n -= take
            o += take
            if o == span:
                k, o = k + 1, 0
                if k == len(self.lengths):
                    e, k = e + 1, 0
        return segs, nbytes, {"epoch": e, "index": k, "offset": o}

    def next_windows(self, count: int):
        """``count`` windows of ``seq_len + 1`` items (as segment lists) and the bytes of text the step advances."""
        windows, total = [], 0.0
        for _ in range(count):
            segs, _, _ = self._walk(self.cursor, self.seq_len + 1)
            _, nbytes, self.cursor = self._walk(self.cursor, self.seq_len)
            windows.append(segs)
            total += nbytes
        return windows, total

    def state_dict(self) -> dict:
        return dict(self.cursor)

    def load_state_dict(self, state: dict) -> None:
        e, k, o = int(state["epoch"]), int(state["index"]), int(state["offset"])
        if not (0 <= e < 1 << 31 and 0 <= k < len(self.lengths) and 0 <= o <= int(self.span[int(self.order(e)[k])])):
            raise ValueError(f"data cursor {state} is outside this data")  # _walk would index past it, or loop
        self.cursor = {"epoch": e, "index": k, "offset": o}


# -- materialising windows ---------------------------------------------------------------------------------------
class PatternSource:
    """Items are words: unit u's items are the words of its document slice, <|endoftext|> the EOT pattern."""

    def __init__(self, corpus: Corpus, units: Units, oe=None):
        self.corpus, self.units = corpus, units
        self.lengths = units.stop - units.start
        self.oe = oe  # the ModelConfig of an Over-Encoding model: batches then carry its n-gram rows
        self.dict_ids = None  # the word objective: lexicon id -> dictionary id (-1: not in it), for the targets

    def item_patterns(self, u: int, a: int, b: int):
        if u < 0:
            return np.array([len(self.corpus.eot_pattern)], np.int64), self.corpus.eot_pattern
        s = int(self.units.start[u])
        return self.corpus.patterns(int(self.units.doc[u]), s + a, s + b)

    def item_ids(self, u: int, a: int, b: int) -> np.ndarray:
        """Corpus lexicon ids of items a..b of unit u; <|endoftext|> is marker 0, id 0 of every lexicon."""
        if u < 0:
            return np.zeros(1, np.int64)
        s = int(self.units.start[u])
        return self.corpus.ids(int(self.units.doc[u]), s + a, s + b)

    def starts(self, segs) -> np.ndarray:
        """(n,) bool over a window's items (``Packer`` segments): True where an item starts a document (nothing
        before it in the window is its history). <|endoftext|> ends the words before it (it follows only a
        document's last unit) and starts nothing itself, unless it is the window's first item or follows another
        (an empty document); a unit's first item starts one unless the shuffle happened to put the chunk just
        before it in its document right before it."""
        out, prev = [], (-1, 0)
        units = self.units
        for k, (u, a, b) in enumerate(segs):
            pu, pb = prev
            if b == a:  # an empty segment only says which unit the window starts in (Packer._walk)
                prev = (u, b)
                continue
            if u < 0:
                first = k == 0 or pu < 0
            else:
                first = k == 0 or pu < 0 or not (a == 0 and pb == self.lengths[pu] and units.doc[pu] == units.doc[u]
                                                  and units.stop[pu] == units.start[u])
            out.append(np.concatenate([[first], np.zeros(b - a - 1, bool)]))
            prev = (u, b)
        return np.concatenate(out)

    def batch(self, windows, T: int, od: bool = False):
        """(inputs, targets) Patterns of shape (B, T) from windows of T+1 items. The inputs hold each distinct
        word's pattern once (``Patterns.words`` indexes them: the model embeds a word once per batch); the
        targets are per position, for the BCE. Both come from the lexicon's patterns. Built in numpy; the
        trainer moves them to the device. ``od`` (Over-Decoding) adds ``targets2`` (B, T), each position's word
        after next, and ``mask2`` (B, T) bool: False at the window's last position (its word after next is not in
        the window) and where the word after next starts a document (the next word is <|endoftext|>, or the next
        unit in the stream is another document's), so the head never predicts across a document boundary."""
        import torch  # noqa: PLC0415

        from ..model.transformer import Patterns  # noqa: PLC0415

        ids = np.stack([np.concatenate([self.item_ids(*s) for s in segs]) for segs in windows])  # (B, T+1)
        B = len(windows)
        distinct, inverse = np.unique(ids[:, :T], return_inverse=True)

        def pats(word_ids, words=None):
            lens, rows = gather_patterns(self.corpus.indptr, self.corpus.indices, word_ids)
            offsets = np.zeros(len(lens) + 1, np.int64)
            np.cumsum(lens, out=offsets[1:])
            return Patterns(torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(offsets), (B, T),
                            None if words is None else torch.from_numpy(words.reshape(-1).astype(np.int64)))

        x = pats(distinct, inverse)
        if self.oe is not None and self.oe.oe_orders:
            x.oe_rows = torch.from_numpy(self.oe_rows(windows, T))
        y = pats(ids[:, 1:].reshape(-1))
        if self.dict_ids is not None:
            y.word_ids = torch.from_numpy(self.dict_ids[ids[:, 1:].reshape(-1)])
        if not od:
            return x, y
        starts = np.stack([self.starts(segs) for segs in windows])                     # (B, T+1)
        mask2 = np.zeros((B, T), bool)
        mask2[:, :-1] = ~starts[:, 2:]
        ids2 = np.concatenate([ids[:, 2:], ids[:, -1:]], axis=1)  # the last column is a masked stand-in
        return x, y, pats(ids2.reshape(-1)), torch.from_numpy(mask2)

    def oe_rows(self, windows, T: int) -> np.ndarray:
        """(B*T, S) n-gram rows of the windows' first T items: one ``ngram_rows`` pass over the windows laid end to
        end, each preceded by its true history (up to max order - 1 words of its unit) and starting a document
        there, and a document starting at each unit's first item."""
        keys, h = self.corpus.word_keys(), max(self.oe.oe_orders) - 1
        ids, starts, take, n = [], [], [], 0
        for segs in windows:
            u0, a0, _ = segs[0]
            hist = [(u0, max(0, a0 - h), a0)] if u0 >= 0 and a0 > 0 else []
            take.append(np.arange(T) + n + (a0 - max(0, a0 - h) if hist else 0))
            start = True
            for u, a, b in hist + list(segs):
                start = start or (u >= 0 and a == 0)
                i = self.item_ids(u, a, b)
                if len(i):
                    f = np.zeros(len(i), np.bool_)
                    f[0], start = start, False
                    ids.append(i), starts.append(f)
                    n += len(i)
        rows = self.oe.ngram_rows(keys[np.concatenate(ids)], np.concatenate(starts))
        return rows[np.concatenate(take)]


class TokenSource(TokenItems):
    """Items are BPE tokens (generate/bits.TokenItems), cut into training batches."""

    def batch(self, windows, T: int):
        import torch  # noqa: PLC0415

        rows = np.stack([np.concatenate([self.item_tokens(*s) for s in segs]) for segs in windows]).astype(np.int64)
        t = torch.from_numpy(rows)  # (B, T+1)
        return t[:, :-1], t[:, 1:]


def train_bpe(texts, vocab_size: int):
    """A byte-level BPE (HF tokenizers) with <|endoftext|> as its one special token."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415
    except ImportError:
        raise TfreeError("the BPE baseline needs HF tokenizers: pip install 'tfree-codec[baseline]'") from None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok
