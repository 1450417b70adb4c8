"""How likely given texts are under a model, from Python: what ``model(ids, labels=ids).loss`` gives HF users.

>>> lm = tfree_codec.load()
>>> lm.score(["It is a truth universally acknowledged", "acknowledged universally truth a is It"])
[{'bits': ..., 'bytes': 39, 'bpb': ..., 'log_prob': ..., 'items': ...}, ...]

Each text is read as ``tfree eval`` reads a document: from <|endoftext|> as context, every word (T-FREE) or token
(BPE) charged, and the <|endoftext|> that ends it. T-FREE uses the checkpoint's calibrated dictionary softmax and
charges words outside its dictionary by their spelling (docs/training.md, "Bits per byte"), so the bits of a text
are comparable across T-FREE and BPE models: bits per byte is the figure both share. The dictionary is the one the
checkpoint was saved with (not one grown by earlier prompts).
"""
from __future__ import annotations

import math
import os

import numpy as np

from .config import TfreeError

LN2 = math.log(2.0)


def score_texts(path: str, model, codec, texts, batch_size: int = 16) -> list[dict]:
    """Per text: total ``bits``, UTF-8 ``bytes``, ``bpb`` (bits per byte), ``log_prob`` (natural log, the sum HF's
    mean loss is taken over) and ``items`` (words or tokens predicted), under the checkpoint at ``path``."""
    from .train.data import Corpus, make_units  # noqa: PLC0415

    if isinstance(texts, str):
        raise TfreeError("score takes a list of texts (wrap a single text in a list)")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TfreeError(f"score takes texts, not {type(t).__name__}")
    if not texts:
        return []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        corpus = Corpus.from_texts(texts, codec)
        units = make_units(corpus, 1 << 30)  # one unit per text: windows of seq_len cover long texts
        each = _bpe(path, model, corpus, units, batch_size, device) if model.config.mode == "bpe" else \
            _tfree(path, model, corpus, units, batch_size, device)
    finally:
        model.train(was_training)
    out = []
    for (bits, items), t in zip(each, texts):
        n = len(t.encode("utf-8", "surrogatepass"))
        out.append({"bits": bits, "bytes": n, "bpb": bits / n if n else float("nan"), "log_prob": -bits * LN2,
                    "items": items})
    return out


def _tfree(path, model, corpus, units, batch_size, device):
    from .decode.dictionary import Dictionary  # noqa: PLC0415
    from .train.evaluate import (DICT_FILE, SpellingModel, dictionary_scorer, evaluate_tfree,  # noqa: PLC0415
                                 load_calibration, tfree_bpb)

    dictionary = Dictionary.load(os.path.join(path, DICT_FILE), corpus.codec)
    cal = load_calibration(path)
    scorer, spelling = dictionary_scorer(dictionary, "pruned"), SpellingModel(dictionary.words, cal.spell_order)
    res = []
    for u in range(len(units)):
        one = units.take(np.array([u]))
        acc = evaluate_tfree(model, corpus, one, dictionary, scorer, spelling, cal.params()[:1], batch_size, device)
        res.append((float(tfree_bpb(acc, cal)["bpb"][0]) * max(acc["bytes"], 1), int(acc["items"])))
    return res


def _bpe(path, model, corpus, units, batch_size, device):
    from .text.words import EOT  # noqa: PLC0415
    from .train.data import TOKENIZER_FILE, TokenSource, load_tokenizer  # noqa: PLC0415
    from .train.evaluate import evaluate_bpe  # noqa: PLC0415

    tok = load_tokenizer(os.path.join(path, TOKENIZER_FILE))
    source = TokenSource(corpus, units, tok, tok.token_to_id(EOT))
    res = []
    for u in range(len(units)):
        one = units.take(np.array([u]))
        r = evaluate_bpe(model, _OneUnit(source, u), one, batch_size, device)
        res.append((float(r["bits"]), int(r["items"])))
    return res


class _OneUnit:
    """Unit u of a TokenSource as a source of one unit (its tokens are made once, for all texts)."""

    def __init__(self, source, u: int):
        self.eot_id, self.lengths = source.eot_id, source.lengths[u:u + 1]
        self.tokens = source.item_tokens(u, 0, int(source.lengths[u]))

    def item_tokens(self, _u: int, a: int, b: int):
        return self.tokens[a:b]
