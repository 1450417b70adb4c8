"""From texts to a model batch, as ``tokenizer(texts, padding=True, return_tensors="pt")`` does for HF users.

>>> b = batch_encode(codec, ["It is a truth", "Emma Woodhouse"], padding=True)
>>> b.patterns, b.attention_mask, b.lengths        # Patterns (B, T) CSR, (B, T) bool, (B,) words per row
>>> logits, loss = model(*b.lm_inputs())           # next-word loss over the real words only
>>> loader = DataLoader(rows, batch_size=32, collate_fn=Collator(codec), num_workers=2)

Rows are padded on the right with empty patterns (a padding word embeds to zero): the model is causal, so a real
word never sees the padding after it, and ``attention_mask`` keeps padding out of the loss. The patterns come as
CSR (``Patterns``, what the model reads) or padded to the widest word (``padded()``, a dense (B, T, R) grid).
The collate core takes plain texts, word lists, ``ShardDataset`` documents (their patterns as they are), or dict
rows (``datasets``: a "text" or "words" column), so any reader can feed it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import TfreeError
from ..shards.reader import Document
from ..text.words import EOT
from .transformer import Patterns


@dataclass
class Batch:
    """B rows of words: their patterns (B, T) as CSR, which positions are real words, and how many per row."""

    patterns: Patterns            # (B, T); padding positions have empty patterns
    attention_mask: torch.Tensor  # (B, T) bool: True at real words
    lengths: torch.Tensor         # (B,) int64 words per row
    words: list                   # each row's words (after truncation)

    def __len__(self) -> int:
        return self.patterns.shape[0]

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(self.patterns.to(device, non_blocking), self.attention_mask.to(device, non_blocking),
                     self.lengths.to(device, non_blocking), self.words)

    def padded(self, pad: int = -1) -> torch.Tensor:
        """The patterns as a dense (B, T, R) int64 grid, R the widest word's rows, ``pad`` after each word's rows."""
        B, T = self.patterns.shape
        offs = self.patterns.offsets
        n = offs[1:] - offs[:-1]
        R = int(n.max()) if n.numel() else 0
        out = torch.full((B * T, R), pad, dtype=torch.int64, device=offs.device)
        word = torch.repeat_interleave(torch.arange(B * T, device=offs.device), n)
        col = torch.arange(self.patterns.indices.numel(), device=offs.device) - offs[:-1][word]
        out[word, col] = self.patterns.indices
        return out.view(B, T, R)

    def lm_inputs(self) -> tuple[Patterns, Patterns, torch.Tensor]:
        """(inputs, targets, mask) for ``model(inputs, targets, mask)``: each word predicts the next, and only
        real words count as targets."""
        B, T = self.patterns.shape
        if T < 2:
            raise TfreeError("a language-model batch needs rows of at least 2 words")
        return _columns(self.patterns, 0, T - 1), _columns(self.patterns, 1, T), self.attention_mask[:, 1:]


def _columns(p: Patterns, a: int, b: int) -> Patterns:
    """Positions a..b-1 of every row of a (B, T) grid."""
    B, T = p.shape
    offs = p.offsets
    keep = torch.zeros(B * T, dtype=torch.bool, device=offs.device)
    keep.view(B, T)[:, a:b] = True
    n = (offs[1:] - offs[:-1])[keep]
    rows = torch.repeat_interleave(keep, offs[1:] - offs[:-1])
    return Patterns(p.indices[rows], torch.cat([offs.new_zeros(1), n.cumsum(0)]), (B, b - a))


def batch_encode(codec, texts, *, padding=True, truncation: bool = False, max_length: int | None = None,
                 add_eot: bool = False, return_tensors: str | None = "pt") -> Batch:
    """A batch of ``texts`` (strings, or word lists from ``codec.split``). ``padding``: True or "longest" (to the
    longest row), "max_length" (to ``max_length``), False (rows must be equally long). ``truncation``: cut rows to
    ``max_length`` words. ``add_eot``: <|endoftext|> before and after each text, as training and evaluation read a
    document (the first word is then predicted too). ``return_tensors`` is taken as HF tokenizers take it: the
    batch is torch tensors, so "pt" (or None) is the one value."""
    if return_tensors not in ("pt", None):
        raise TfreeError(f"return_tensors={return_tensors!r}: a Batch holds torch tensors, so only 'pt' (or None)")
    if isinstance(texts, str):
        raise TfreeError("batch_encode takes a list of texts (wrap a single text in a list)")
    rows = []
    strings = [t for t in texts if isinstance(t, str)]
    encoded = iter(codec.encode_batch(strings)) if strings else iter(())
    for t in texts:
        if isinstance(t, str):
            e = next(encoded)
            rows.append((list(e.words), e.indptr, e.indices))
        elif isinstance(t, Document):  # a ShardDataset item: its patterns come with it, hashed once per lexicon
            rows.append((list(t.words), t.indptr, t.indices))
        elif isinstance(t, (list, tuple)):
            if t and not isinstance(t[0], str):
                raise TfreeError(f"a word list holds {type(t[0]).__name__}s, not words (rows read from a shard "
                                 "directory by datasets hold word ids: map them with tfree_codec.shards.hf.AddWords)")
            indptr, indices = codec.encode_words(t)
            rows.append((list(t), indptr, indices))
        else:
            raise TfreeError(f"batch_encode takes texts, word lists or ShardDataset documents, not {type(t).__name__}")
    return _from_rows(codec, rows, padding, truncation, max_length, add_eot)


def _from_rows(codec, rows, padding, truncation, max_length, add_eot) -> Batch:
    if padding not in (True, False, "longest", "max_length", "do_not_pad"):
        raise TfreeError(f"padding must be True, False, 'longest' or 'max_length', not {padding!r}")
    if (truncation or padding == "max_length") and (not isinstance(max_length, int) or max_length < 1):
        raise TfreeError(f"truncation and padding='max_length' need max_length, a positive integer (not {max_length!r})")
    if add_eot:
        e_ptr, e_idx = codec.encode_words([EOT])
        e = e_idx[e_ptr[0]:e_ptr[1]]
        rows = [([EOT, *w, EOT], ptr, idx) for w, ptr, idx in rows]  # their patterns go in below
    lens_rows, idx_rows, words = [], [], []
    for w, ptr, idx in rows:
        n = np.diff(np.asarray(ptr, np.int64))
        idx = np.asarray(idx, np.int64)
        if add_eot:  # the EOT patterns around the text's
            n = np.concatenate([[len(e)], n, [len(e)]])
            idx = np.concatenate([e, idx, e]).astype(np.int64)
        if truncation and len(w) > max_length:
            n, w = n[:max_length], w[:max_length]
            idx = idx[:int(n.sum())]
        lens_rows.append(n)
        idx_rows.append(idx)
        words.append(w)
    longest = max((len(n) for n in lens_rows), default=0)
    if padding == "max_length":
        if longest > max_length:
            raise TfreeError(f"a text has {longest} words, more than max_length {max_length} (pass truncation=True)")
        T = max_length
    elif padding in (False, "do_not_pad"):
        if len({len(n) for n in lens_rows}) > 1:
            raise TfreeError("texts of different lengths need padding=True")
        T = longest
    else:
        T = longest
    B = len(lens_rows)
    lens = np.zeros((B, T), np.int64)
    for i, n in enumerate(lens_rows):
        lens[i, :len(n)] = n
    offsets = np.zeros(B * T + 1, np.int64)
    np.cumsum(lens.reshape(-1), out=offsets[1:])
    indices = np.concatenate(idx_rows) if idx_rows else np.zeros(0, np.int64)
    lengths = torch.tensor([len(n) for n in lens_rows], dtype=torch.int64)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return Batch(Patterns(torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(offsets), (B, T)), mask,
                 lengths, words)


class Collator:
    """``collate_fn`` for a ``torch.utils.data.DataLoader``: a list of rows -> a ``Batch``. A row is a text, a word
    list, a ``ShardDataset`` document (``DataLoader(ShardDataset(dir), collate_fn=Collator(ds.codec))``: its
    patterns are used as they are), or a dict with a ``text_key`` (or "words") column, as ``datasets`` yields
    (from a shard directory, after ``.map(AddWords(dir), ...)``). Picklable (the codec travels as its config),
    so it works with ``num_workers > 0``."""

    def __init__(self, codec, *, text_key: str = "text", max_length: int | None = None, padding=True,
                 add_eot: bool = False):
        self.codec, self.text_key, self.max_length, self.padding, self.add_eot = codec, text_key, max_length, padding, add_eot

    def __call__(self, rows) -> Batch:
        texts = []
        for r in rows:
            if isinstance(r, dict):
                if self.text_key in r:
                    r = r[self.text_key]
                elif "words" in r:
                    r = r["words"]
                else:
                    raise TfreeError(f"a row has no {self.text_key!r} or 'words' column (it has {sorted(r)})")
            texts.append(r)
        return batch_encode(self.codec, texts, padding=self.padding, truncation=self.max_length is not None,
                            max_length=self.max_length, add_eot=self.add_eot)
