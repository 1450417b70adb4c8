"""Where the bits go (``tfree eval --breakdown``): bits per byte by word class, for a T-FREE model and, on the same
text, a BPE model whose tokens are grouped by the T-FREE word they fall in.

Each unit's text is cut at T-FREE word ends, so every byte belongs to one word: a word's bytes run from the end of
the word before it to its own end (the single spaces the codec leaves implicit go to the word after them). A BPE
token belongs to the word its last character falls in. Both models are charged exactly as ``tfree eval`` charges
them (the same units, each from <|endoftext|>), so the classes' bits add up to each model's total.

Classes: markers (whitespace runs, <|endoftext|>), punctuation (no letter or digit), numbers (a digit: the codec
splits numbers into digits), words the T-FREE dictionary has never seen, and the rest by their rank in the
dictionary (training counts): the 1,000 most frequent, the next 9,000, and the rarer ones.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..config import TfreeError
from ..text.words import EOT, MARKERS

CLASSES = ("marker", "punctuation", "number", "unseen", "top 1k", "1k-10k", "rare")


def word_class(word: str, dict_id: int) -> str:
    """The class of a target word, ``dict_id`` its id in a T-FREE dictionary (markers first, then by falling count;
    -1: not in it)."""
    if word in MARKERS:
        return "marker"
    if not any(ch.isalnum() for ch in word):
        return "punctuation"
    if any(ch.isdigit() for ch in word):
        return "number"
    if dict_id < 0:
        return "unseen"
    rank = dict_id - len(MARKERS)
    return "top 1k" if rank < 1000 else "1k-10k" if rank < 10000 else "rare"


def word_spans(codec, text: str, words: list[str]) -> np.ndarray:
    """(n,) UTF-8 byte offsets of each word's end in ``text``, checking that the codec splits it into ``words``."""
    enc = codec.encode(text)
    if list(enc.words) != list(words):
        raise TfreeError("the text's words differ from the corpus's: encode it with the model's codec")
    ends = enc.offsets[:, 1] if len(words) else np.zeros(0, np.int64)
    cum = np.concatenate([[0], np.cumsum([len(c.encode("utf-8", "surrogatepass")) for c in text])])
    return cum[ends]


def breakdown(tfree_path: str, data: str, bpe_path: str | None = None, device: str = "auto",
              batch_size: int = 16) -> dict:
    """{class: {"words", "bytes", "tfree_bits", "bpe_bits"}} on DATA, and the models' totals."""
    from ..model import checkpoint as ckpt  # noqa: PLC0415
    from ..model.device import resolve_device  # noqa: PLC0415
    from ..shards.corpus import Corpus, make_units  # noqa: PLC0415
    from .bits import Reading, TokenItems, evaluate_bpe, evaluate_tfree  # noqa: PLC0415
    from .vocab import load_vocabulary  # noqa: PLC0415

    dev = resolve_device(device)
    model, codec, meta = ckpt.load_model(tfree_path, dev)
    if not model.config.tfree:
        raise TfreeError(f"{tfree_path}: --breakdown reads a T-FREE checkpoint first (the BPE one goes to --against)")
    model.eval()
    words = load_vocabulary(tfree_path, codec, model.config)
    corpus = Corpus.from_path(data, codec)
    units = make_units(corpus, int(meta.get("chunk_words", 1024)))
    dictionary, cal = words.dictionary, words.calibration
    spelling = words.scorers()[1]
    reading = Reading(batch_size, dev)
    lps: list = []
    evaluate_tfree(model, corpus, units, words, cal.params()[:1], reading, per_item=lps)
    lp = np.concatenate(lps) if lps else np.zeros(0)
    bpe_bits = None
    if bpe_path:
        bmodel, _, _ = ckpt.load_model(bpe_path, dev)
        if bmodel.config.tfree:
            raise TfreeError(f"{bpe_path}: --against takes a BPE checkpoint")
        bmodel.eval()
        tok = load_vocabulary(bpe_path, None, bmodel.config).tokenizer
        source = TokenItems(corpus, units, tok, tok.token_to_id(EOT))
        per_token: list = []
        evaluate_bpe(bmodel, source, units, reading, per_item=per_token)
        bpe_bits = np.array(per_token)
    rows = {c: {"words": 0, "bytes": 0, "tfree_bits": 0.0, "bpe_bits": 0.0} for c in CLASSES}
    i = j = 0  # into the T-FREE targets and the BPE target tokens
    log2_in, log2_unk = math.log2(1 - cal.p_unk), math.log2(cal.p_unk)
    doc_ends = (-1, None)  # a document's word ends, split once: a chunk's text alone may split otherwise at its edge
    for u in range(len(units)):
        d, a, b = int(units.doc[u]), int(units.start[u]), int(units.stop[u])
        words = corpus.words(d, a, b)
        text = corpus.text(d, a, b)
        targets = words + ([EOT] if units.last[u] else [])
        if doc_ends[0] != d:
            n = int(corpus.doc_words[d])
            doc_ends = (d, word_spans(codec, corpus.text(d, 0, n), corpus.words(d, 0, n)))
        ends = doc_ends[1][a:b] - (doc_ends[1][a - 1] if a else 0)
        starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
        ids = [dictionary.index(w) for w in targets]
        unseen = [w for w, k in zip(targets, ids) if k < 0]
        spell = dict(zip(unseen, -spelling.log2prob(unseen))) if unseen else {}
        word_bits = np.empty(len(targets))
        for k, (w, did) in enumerate(zip(targets, ids)):
            if did >= 0:
                word_bits[k] = -lp[i + k] / math.log(2) - log2_in
            else:
                extra = spell[w] if cal.unk_charge == "spell" else 8.0 * (len(w.encode("utf-8", "surrogatepass")) + 1)
                word_bits[k] = -log2_unk + extra
        i += len(targets)
        if bpe_bits is not None:
            n = int(source.lengths[u])
            token_ends = _token_ends(tok, text)
            owner = np.searchsorted(ends, token_ends, side="left") if len(ends) else np.zeros(n, np.int64)
            per_word = np.bincount(np.minimum(owner, max(len(targets) - 1, 0)), weights=bpe_bits[j:j + n],
                                   minlength=len(targets)) if n else np.zeros(len(targets))
            if units.last[u]:
                per_word[-1] += bpe_bits[j + n]  # the <|endoftext|> token: the EOT word
            j += n + int(units.last[u])
        for k, (w, did) in enumerate(zip(targets, ids)):
            r = rows[word_class(w, did)]
            r["words"] += 1
            r["bytes"] += int(ends[k] - starts[k]) if k < len(words) else 0
            r["tfree_bits"] += float(word_bits[k])
            if bpe_bits is not None:
                r["bpe_bits"] += float(per_word[k])
    if i != len(lp) or (bpe_bits is not None and j != len(bpe_bits)):
        raise TfreeError("internal: the breakdown lost count of the targets")  # the streams are the eval's own
    total = float(units.n_bytes.sum())
    return {"classes": rows, "bytes": total, "tfree_bpb": sum(r["tfree_bits"] for r in rows.values()) / total,
            "bpe_bpb": sum(r["bpe_bits"] for r in rows.values()) / total if bpe_bits is not None else None}


def _token_ends(tok, text: str) -> np.ndarray:
    """UTF-8 byte offset just past each token's last byte (the BPE tokenizer reports byte-level offsets in
    characters of ``text``)."""
    enc = tok.encode(text, add_special_tokens=False)
    cum = np.concatenate([[0], np.cumsum([len(c.encode("utf-8", "surrogatepass")) for c in text])])
    return cum[np.array([e for _, e in enc.offsets], np.int64)] if enc.offsets else np.zeros(0, np.int64)


def format_table(r: dict) -> str:
    """The breakdown as a table: each class's share of words and bytes, and bits per byte under each model."""
    against = r["bpe_bpb"] is not None
    head = f"{'class':<12} {'words':>9} {'bytes':>7} {'T-FREE bpb':>11} {'share':>6}"
    head += f" {'BPE bpb':>8} {'share':>6} {'T-FREE/BPE':>10}" if against else ""
    lines = [head]
    tf_total = sum(x["tfree_bits"] for x in r["classes"].values())
    bpe_total = sum(x["bpe_bits"] for x in r["classes"].values())
    n_words = sum(x["words"] for x in r["classes"].values())
    for name, x in r["classes"].items():
        if not x["words"]:
            continue
        nb = max(x["bytes"], 1)
        line = (f"{name:<12} {x['words'] / n_words:>9.1%} {x['bytes'] / r['bytes']:>7.1%} {x['tfree_bits'] / nb:>11.3f}"
                f" {x['tfree_bits'] / tf_total:>6.1%}")
        if against:
            ratio = x["tfree_bits"] / x["bpe_bits"] if x["bpe_bits"] else float("nan")
            line += f" {x['bpe_bits'] / nb:>8.3f} {x['bpe_bits'] / bpe_total:>6.1%} {ratio:>10.3f}"
        lines.append(line)
    total = f"{'all':<12} {1:>9.0%} {1:>7.0%} {r['tfree_bpb']:>11.4f} {1:>6.0%}"
    if against:
        total += f" {r['bpe_bpb']:>8.4f} {1:>6.0%} {r['tfree_bpb'] / r['bpe_bpb']:>10.3f}"
    return "\n".join(lines + [total])
