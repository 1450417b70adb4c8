"""Training and evaluation batches from documents: T-FREE word patterns or BPE tokens, packed the same way.

A ``Corpus`` holds documents as flat CSR arrays (straight from shard directories, zero-copy, or encoded from texts).
Documents are cut into *units* of at most ``chunk_words`` words (whole books would otherwise make shuffling
meaningless and a held-out slice impossible); a fixed share of units, chosen independently of the seed and the mode,
is held out for validation, so the T-FREE model and its BPE baseline see the same text and are judged on the same
text. Training units are shuffled per epoch from the seed and packed into sequences of ``seq_len + 1`` items with
``<|endoftext|>`` after each document's last unit; consecutive sequences overlap by one item, so every item is a
target exactly once. The ``Packer``'s cursor (epoch, unit, offset) is all the state there is: saving it and
restoring it continues the exact same stream.

Over-Encoding models also get each input position's n-gram table rows (``Patterns.oe_rows``), from the lexicon
words' keys (hashed once per lexicon) under text/ngrams.py's history rule: a unit starts a document, and a window's
first item keeps its true history (the words of its unit before it), so a window cut never changes a row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..codec import Codec
from ..config import TfreeError
from ..text.words import EOT, join

CHUNK_WORDS = 1024
TOKENIZER_FILE = "tokenizer.json"
VAL_SEED = 20240626  # fixed: the held-out units never depend on the training seed


class Corpus:
    """Documents as word ids into one lexicon, in one or more parts (one per shard).

    Part k: ``doc_offsets`` (docs+1) into ``word_ids`` (one id per word occurrence: for shards, a zero-copy view
    of the memory-mapped file, in the shard's own lexicon), ``to_global`` (part id -> corpus lexicon id, or None
    when the part's ids are the corpus's) and ``n_bytes`` per document. The corpus lexicon: ``lexicon_words``
    and their patterns ``indptr``/``indices``, hashed once per distinct word (shard format 2 stores no patterns).
    """

    def __init__(self, codec: Codec, parts: list[dict], lexicon_words: list[str], indptr=None, indices=None):
        self.codec = codec
        self.parts = parts
        self.lexicon_words = lexicon_words
        if indptr is None:
            indptr, indices = codec.encode_words(lexicon_words)
        self.indptr, self.indices = np.asarray(indptr, np.int64), indices
        doc_words = [np.diff(p["doc_offsets"]) for p in parts]
        self.doc_part = np.concatenate([np.full(len(w), k, np.int64) for k, w in enumerate(doc_words)] or [np.zeros(0, np.int64)])
        self.doc_first = np.concatenate([p["doc_offsets"][:-1].astype(np.int64) for p in parts] or [np.zeros(0, np.int64)])
        self.doc_words = np.concatenate(doc_words or [np.zeros(0, np.int64)]).astype(np.int64)
        self.doc_bytes = np.concatenate([np.asarray(p["n_bytes"], np.int64) for p in parts] or [np.zeros(0, np.int64)])
        eot_ptr, eot_idx = codec.encode_words([EOT])
        self.eot_pattern = eot_idx[eot_ptr[0]:eot_ptr[1]].astype(np.int64)
        self._keys = None

    def word_keys(self) -> np.ndarray:
        """``text.ngrams.word_key`` of every lexicon word (uint64, id order), hashed once: Over-Encoding's keys."""
        if self._keys is None:
            from ..text.ngrams import word_keys  # noqa: PLC0415

            self._keys = word_keys(self.lexicon_words)
        return self._keys

    def __len__(self) -> int:
        return len(self.doc_words)

    @classmethod
    def from_texts(cls, texts, codec: Codec | None = None) -> "Corpus":
        """Encode ``texts`` (one document each) in memory: for tests, small evaluations and plain-text files."""
        codec = codec or Codec()
        texts = list(texts)
        lex = codec.lexicon()
        n_words, ids = lex.add(texts)
        part = {"doc_offsets": np.concatenate([[0], np.cumsum(n_words)]).astype(np.int64), "word_ids": ids,
                "to_global": None,
                "n_bytes": np.array([len(t.encode("utf-8", "surrogatepass")) for t in texts], np.int64)}
        return cls(codec, [part], lex.words(), *lex.patterns())

    @classmethod
    def from_path(cls, path: str, codec: Codec | None = None) -> "Corpus":
        """A shard directory (``tfree encode`` output) or a UTF-8 text file (one document)."""
        if os.path.isdir(path):
            from ..shards.reader import ShardDataset  # noqa: PLC0415 - the shards module is heavy on pyarrow

            ds = ShardDataset(path)
            if codec is not None and ds.codec.fingerprint() != codec.fingerprint():
                raise TfreeError(f"{path}: shards were made with codec {ds.codec.fingerprint()}, "
                                 f"the model uses {codec.fingerprint()}")
            return cls(ds.codec, [_shard_part(ds, k) for k in range(ds.num_shards)], ds.lexicon_words, *ds.patterns())
        if not os.path.isfile(path):
            raise TfreeError(f"cannot read {path!r}: no such file or directory")
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        return cls.from_texts([text], codec)

    # -- access ---------------------------------------------------------------------------------------------
    def ids(self, doc: int, a: int, b: int) -> np.ndarray:
        """Corpus lexicon ids (int64) of words a..b of document ``doc``."""
        part = self.parts[self.doc_part[doc]]
        w0 = self.doc_first[doc] + a
        ids = part["word_ids"][w0:w0 + (b - a)]
        return part["to_global"][ids] if part["to_global"] is not None else ids.astype(np.int64)

    def words(self, doc: int, a: int, b: int) -> list[str]:
        lw = self.lexicon_words
        return [lw[i] for i in self.ids(doc, a, b).tolist()]

    def patterns(self, doc: int, a: int, b: int):
        """(lengths (b-a,), indices) of words a..b of document ``doc``, gathered from the lexicon's patterns."""
        return gather_patterns(self.indptr, self.indices, self.ids(doc, a, b))

    def text(self, doc: int, a: int, b: int) -> str:
        return join(self.words(doc, a, b))


def gather_patterns(indptr: np.ndarray, indices: np.ndarray, ids: np.ndarray):
    """(lengths, rows) of the words ``ids``: the per-occurrence CSR, one vectorised gather from the lexicon's."""
    starts = indptr[ids]
    lens = indptr[ids + 1] - starts
    ends = np.cumsum(lens)
    pos = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - lens), lens)
    return lens, indices[pos]


def _shard_part(ds, k: int) -> dict:
    """Part k of a ShardDataset as the arrays a Corpus walks (the ids: a zero-copy view of the memory-mapped shard)."""
    f = ds.flat(k)
    return {"doc_offsets": np.asarray(f.doc_offsets, np.int64), "word_ids": f.word_ids, "to_global": f.to_global,
            "n_bytes": np.asarray(f.n_bytes, np.int64)}


@dataclass
class Units:
    """Chunks of documents: unit u is words ``start[u]:stop[u]`` of document ``doc[u]``; ``last[u]``: it ends its
    document (an <|endoftext|> follows); ``n_bytes[u]``: its share of the document's bytes."""

    doc: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    last: np.ndarray
    n_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.doc)

    def take(self, sel) -> "Units":
        return Units(self.doc[sel], self.start[sel], self.stop[sel], self.last[sel], self.n_bytes[sel])


def make_units(corpus: Corpus, chunk_words: int = CHUNK_WORDS) -> Units:
    nw, nb = corpus.doc_words, corpus.doc_bytes
    nc = np.maximum(1, -(-nw // chunk_words))                 # chunks per document (an empty one still ends a doc)
    doc = np.repeat(np.arange(len(nw)), nc)
    j = np.arange(len(doc)) - np.repeat(np.cumsum(nc) - nc, nc)  # chunk number within its document
    start, stop = j * nw[doc] // nc[doc], (j + 1) * nw[doc] // nc[doc]
    share = np.where(nw[doc] > 0, (stop - start) / np.maximum(nw[doc], 1), 1.0)
    return Units(doc, start, stop, j == nc[doc] - 1, nb[doc] * share)


def split_units(units: Units, val_bytes: float) -> tuple[Units, Units]:
    """(train, val): val is a fixed random set of units worth about ``val_bytes`` (at most a tenth of the units)."""
    n = len(units)
    if val_bytes <= 0 or n < 2:
        return units, units.take(np.zeros(0, np.int64))
    order = np.random.default_rng(VAL_SEED).permutation(n)
    k = int(np.searchsorted(np.cumsum(units.n_bytes[order]), val_bytes)) + 1
    val = np.sort(order[:max(1, min(k, n // 10))])
    train = np.setdiff1d(np.arange(n), val)
    return units.take(train), units.take(val)


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

    mode = "tfree"

    def __init__(self, corpus: Corpus, units: Units, oe=None):
        self.corpus, self.units = corpus, units
        self.lengths = units.stop - units.start
        self.oe = oe  # the ModelConfig of an Over-Encoding model: batches then carry its n-gram rows

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
        if not od:
            return x, pats(ids[:, 1:].reshape(-1))
        starts = np.stack([self.starts(segs) for segs in windows])                     # (B, T+1)
        mask2 = np.zeros((B, T), bool)
        mask2[:, :-1] = ~starts[:, 2:]
        ids2 = np.concatenate([ids[:, 2:], ids[:, -1:]], axis=1)  # the last column is a masked stand-in
        return x, pats(ids[:, 1:].reshape(-1)), pats(ids2.reshape(-1)), torch.from_numpy(mask2)

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


class TokenSource:
    """Items are BPE tokens: each unit's text (its words joined) tokenised once, <|endoftext|> the tokenizer's own."""

    mode = "bpe"

    def __init__(self, corpus: Corpus, units: Units, tokenizer, eot_id: int, batch_size: int = 256):
        self.eot_id = eot_id
        texts = (corpus.text(int(d), int(a), int(b)) for d, a, b in zip(units.doc, units.start, units.stop))
        toks = []
        buf = []
        for t in texts:  # encode_batch in slices keeps memory flat and uses the tokenizer's threads
            buf.append(t)
            if len(buf) == batch_size:
                toks += [np.asarray(e.ids, np.int32) for e in tokenizer.encode_batch(buf, add_special_tokens=False)]
                buf = []
        if buf:
            toks += [np.asarray(e.ids, np.int32) for e in tokenizer.encode_batch(buf, add_special_tokens=False)]
        self.lengths = np.array([len(t) for t in toks], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.tokens = np.concatenate(toks or [np.zeros(0, np.int32)])

    def item_tokens(self, u: int, a: int, b: int):
        if u < 0:
            return np.array([self.eot_id], np.int32)
        return self.tokens[self.offsets[u] + a:self.offsets[u] + b]

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


def load_tokenizer(path: str):
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415
    except ImportError:
        raise TfreeError("the BPE baseline needs HF tokenizers: pip install 'tfree-codec[baseline]'") from None
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001
        raise TfreeError(f"cannot read tokenizer {path!r} ({e})") from None
