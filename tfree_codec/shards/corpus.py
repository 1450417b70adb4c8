"""Documents of words, from shard directories (zero-copy) or texts, cut into units: what training, evaluation and
scoring read (takes a shard directory, a text file or texts; hands on words, their patterns and ``Units``).

Documents are cut into *units* of at most ``chunk_words`` words (whole books would otherwise make shuffling
meaningless and a held-out slice impossible); a fixed share of units, chosen independently of the seed and the mode,
is held out for validation (``split_units``), so the T-FREE model and its BPE baseline see the same text and are
judged on the same text.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..codec import Codec
from ..config import TfreeError
from ..text.words import EOT, join

CHUNK_WORDS = 1024
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
