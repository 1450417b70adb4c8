"""The items a model reads and writes, behind one interface (as litgpt's ``Tokenizer(checkpoint_dir)``): ``Words``,
a T-FREE dictionary with the calibration of its softmax, or ``Tokens``, a BPE baseline's tokenizer.

Both turn a prompt into the context's ids and a reader that turns picks back into text (``begin``), give the
window a generating model reads (``window``), turn logits into picks (``picks``), and charge given texts their bits
(``evaluate``). ``load_vocabulary`` reads a checkpoint's and ``as_vocabulary`` wraps a bare ``Dictionary`` or
``tokenizers.Tokenizer``: the one place generation and scoring look at which kind of model they serve.
"""
from __future__ import annotations

import os

import numpy as np

from ..config import TfreeError
from ..decode.calibration import Calibration
from ..decode.decoder import Decoder
from ..decode.dictionary import Dictionary, count_prior
from ..decode.wordscore import Ranking
from ..model import checkpoint as ckpt
from ..text.words import EOT, MARKERS, join
from .context import Window, pattern_inputs, pattern_rows, token_inputs


def load_vocabulary(path: str, codec, config):
    """The vocabulary of checkpoint directory ``path`` (whose model has ModelConfig ``config``)."""
    return _KINDS[config.mode].load(path, codec)


def as_vocabulary(vocab, codec, config, calibration: dict | None = None):
    """``vocab`` (a Words or Tokens, a Dictionary or a tokenizers.Tokenizer) as the vocabulary of a model with
    ModelConfig ``config``; ``calibration`` ({"temperature", "prior_weight", "zero_count_weight"}) replaces a
    dictionary's."""
    kind = _KINDS[config.mode]
    if isinstance(vocab, (Words, Tokens)):
        if not isinstance(vocab, kind):
            raise TfreeError(f"a {kind.name} model generates from {kind.what}, not {type(vocab).__name__}")
        return vocab.calibrated(calibration) if calibration is not None else vocab
    if kind is Words:
        if not isinstance(vocab, Dictionary):
            raise TfreeError(f"a T-FREE model generates from a Dictionary, not {type(vocab).__name__}")
        if vocab.fingerprint() != codec.fingerprint():
            raise TfreeError(f"the dictionary was built with codec {vocab.fingerprint()}, the model's is "
                             f"{codec.fingerprint()}")
        return Words(vocab, Calibration.from_dict(calibration or {}))
    return Tokens(vocab)


class _Plain:
    """(item, id, probability) an item at a time: the next item's logits, a pick, the item read back."""

    @staticmethod
    def picks(window, pick):
        while True:
            item, i, prob = pick(window.next_logits())
            yield item, i, prob
            window.append(i)


# -- T-FREE ---------------------------------------------------------------------------------------------------------
class Words(_Plain):
    """A T-FREE model's vocabulary: the dictionary it decodes into and its softmax's calibration (temperature,
    count-prior weights, unseen-word rate). The words of a prompt join the dictionary (seen once), so it grows.
    ``search``: how generation and evaluation read the dictionary (decode/search.py): "pruned" (the default: only
    the words that can matter; the same greedy words, <= 1e-6 of the mass left out) or "full" (every word); None:
    evaluation takes every word's scores as one torch product (on the model's device), generation is pruned."""

    name, what, unit = "T-FREE", "a Dictionary", "words"

    def __init__(self, dictionary: Dictionary, calibration: Calibration | None = None, search: str = "pruned"):
        self.dictionary, self.codec = dictionary, dictionary.codec
        self.calibration = calibration or Calibration()
        self._scoring = None
        self.search = search

    @property
    def search(self) -> str | None:
        return self._search

    @search.setter
    def search(self, value: str | None) -> None:
        if value not in ("pruned", "full", None):
            raise TfreeError(f"search must be 'pruned', 'full' or None, not {value!r}")
        self._search, self._scoring = value, None  # the scorers follow it

    @classmethod
    def load(cls, path: str, codec) -> "Words":
        return cls(Dictionary.load(os.path.join(path, ckpt.DICT_FILE), codec), ckpt.load_calibration(path))

    def calibrated(self, calibration: dict) -> "Words":
        """This dictionary under another calibration (the keys given; the rest its defaults)."""
        return Words(self.dictionary, Calibration.from_dict(calibration), self.search)

    def searched(self, search: str) -> "Words":
        """This dictionary and calibration, read with another ``search`` (the dictionary shared, so it grows)."""
        return self if search == self.search else Words(self.dictionary, self.calibration, search)

    def copy(self) -> "Words":
        """Its own copy of the dictionary (a prompt's words grow that one, not this one's)."""
        d = self.dictionary
        copy = Dictionary(d.codec, d.words, d.counts, d.indptr, d.indices)
        # the same words as the file: its cached index (decode/index.py) still serves the copy
        copy.file_checksum, copy.file_words = d.file_checksum, d.file_words
        return Words(copy, self.calibration, self.search)

    @property
    def raw(self) -> Dictionary:
        return self.dictionary

    @property
    def checkpoint_json(self) -> dict:
        """The JSON files this vocabulary adds to a checkpoint: calibration.json."""
        return {ckpt.CALIBRATION_FILE: self.calibration.to_dict()}

    @property
    def sampling(self) -> dict:
        """The calibration as generation uses it: the softmax's temperature and its count-prior weights."""
        c = self.calibration
        return {"temperature": float(c.temperature), "prior_weight": float(c.prior_weight),
                "zero_count_weight": float(c.zero_count_weight)}

    @property
    def data_codec(self):
        """The codec held-out data must be encoded with (the dictionary's patterns are this codec's)."""
        return self.codec

    @property
    def eot_id(self) -> int:
        return self.dictionary.index(EOT)

    def describe(self) -> str:
        return f"dictionary {len(self.dictionary):,} words"

    def count(self, text: str) -> int:
        """``text``'s length in this vocabulary's items: its words (``tfree serve``'s usage)."""
        return len(self.codec.split(text))

    def exported(self, path: str, tmp: str, min_count: int) -> tuple[dict, dict]:
        """(files, checkpoint info) of a generation-only copy (``export``): the words seen ``min_count`` times."""
        d = self.dictionary
        seen = [int(c) for w, c in zip(d.words, d.counts) if w not in MARKERS]
        if not any(c >= min_count for c in seen):  # a dictionary of markers only would export silently, decode nothing
            raise TfreeError(f"--min-count {min_count} keeps no word of {path}'s dictionary (its most frequent "
                             f"word was seen {max(seen, default=0):,} times)")
        kept = Dictionary.from_counts(self.codec, dict(zip(d.words, d.counts.tolist())), min_count=min_count)
        kept.save(os.path.join(tmp, ckpt.DICT_FILE))
        return {ckpt.DICT_FILE: os.path.join(tmp, ckpt.DICT_FILE)}, {"dictionary_min_count": min_count}

    # -- generation -------------------------------------------------------------------------------------------
    def begin(self, prompt):
        """(the context's ids: <|endoftext|> then the prompt's words, a reader of picks into text). ``prompt``: a
        string, or its words."""
        d = self.dictionary
        words = list(prompt) if isinstance(prompt, (list, tuple)) else self.codec.split(prompt)
        new = [w for w in dict.fromkeys(words) if w not in d]
        d.extend(new, counts=np.ones(len(new), np.int64))  # seen once: in the prompt
        return d.extend([EOT, *words]).tolist(), _WordText(self.codec, words[-1])

    def window(self, model, ids, use_cache: bool) -> Window:
        d, device = self.dictionary, next(model.parameters()).device
        return Window(model, ids, pattern_inputs(d, device), pattern_rows(d), use_cache, words=d.words.__getitem__)

    def picks(self, window, sampler, draft_stats=None):
        """(word, id, probability) endlessly after the window's items, drawn by ``sampler`` (decode.sampling.
        Sampler) from the calibrated dictionary softmax; with ``draft_stats`` (a speculative.DraftStats),
        self-speculative with the Over-Decoding head (speculative.py)."""
        d = self.dictionary
        c = self.calibration
        words = _WordSampler(d, c, sampler, self.search or "pruned")
        words.decoder.scorer()  # grown by the prompt's words now, not inside the first step

        def pick(logits):
            word, i, prob = words(logits)
            if i < 0:  # a spelled word: it joins the dictionary, so it can be read back
                i = int(d.extend([word])[0])
            return word, i, prob

        if draft_stats is None:
            return _Plain.picks(window, pick)
        from .speculative import Drafter, draft_words  # noqa: PLC0415

        drafter = Drafter(d, 1.0 / float(words.scale), words.b, score=c.score)
        return draft_words(window, d.words, pick, words.probs, drafter, draft_stats, sampler)

    # -- bits -------------------------------------------------------------------------------------------------
    def scorers(self):
        """(the dictionary's scorer: bits.dictionary_scorer under this vocabulary's ``search``, the spelling model of
        unseen words), made once (bits.py's loops)."""
        if self._scoring is None:
            from ..decode.spelling import SpellingModel  # noqa: PLC0415
            from .bits import dictionary_scorer  # noqa: PLC0415

            d = self.dictionary
            self._scoring = (dictionary_scorer(d, self.calibration.score, self.search),
                             SpellingModel(d.words, self.calibration.spell_order))
        return self._scoring

    def unit_bits(self, model, corpus, units, reading) -> list[tuple[float, int]]:
        """(bits, words predicted) of each unit, read from <|endoftext|>: log-probabilities under the calibrated
        softmax, unseen words charged by their spelling (score.py)."""
        from .bits import evaluate_tfree, tfree_bpb  # noqa: PLC0415

        res = []
        for u in range(len(units)):
            acc = evaluate_tfree(model, corpus, units.take(np.array([u])), self, self.calibration.params()[:1],
                                 reading)
            res.append((float(tfree_bpb(acc, self.calibration)["bpb"][0]) * max(acc["bytes"], 1), int(acc["items"])))
        return res

    def validate(self, model, corpus, units, reading) -> dict:
        """Validation bits per byte of ``units``, after fitting the calibration on them (its temperature and prior
        weights from the last fit, p_unk by maximum likelihood): the fit is kept as this vocabulary's."""
        from .bits import calibrate, evaluate_tfree, tfree_bpb, unseen_rate  # noqa: PLC0415

        if model.config.objective != "bce":  # the distribution it trains for is its calibration: only p_unk is fitted
            cal = Calibration(**{**self.calibration.to_dict(), **model.word_head.calibration()})
            self._scoring = None if self.calibration.score != cal.score else self._scoring
            self.calibration = cal
        else:
            cal = calibrate(model, corpus, units, self, reading)
        acc = evaluate_tfree(model, corpus, units, self, cal.params(), reading)
        p_unk = unseen_rate(acc)  # maximum likelihood (add-half) on the slice
        self.calibration = Calibration(**{**cal.to_dict(), "p_unk": p_unk})
        r = tfree_bpb(acc, self.calibration)
        return {"val_bpb": float(r["bpb"][0]), "val_bpb_plain": float(r["bpb"][1]),
                "temperature": self.calibration.temperature, "prior_weight": self.calibration.prior_weight,
                "zero_count_weight": self.calibration.zero_count_weight, "p_unk": p_unk,
                "coverage_words": r["coverage_words"], "unseen_bits_share": r["unseen_bits_share"]}

    def evaluate(self, model, corpus, units, reading) -> dict:
        """Bits per byte of ``units`` under the calibration (and under the plain score and the SPEC's unseen-word
        charge), with the dictionary's coverage: what ``tfree eval`` reports."""
        from .bits import evaluate_tfree, tfree_bpb  # noqa: PLC0415

        cal = self.calibration
        acc = evaluate_tfree(model, corpus, units, self, cal.params(), reading)
        r = tfree_bpb(acc, cal)
        pess = tfree_bpb(acc, Calibration(**{**cal.to_dict(), "unk_charge": "bytes"}))
        n = len(self.dictionary)
        return {"bpb": float(r["bpb"][0]), "bpb_plain_score": float(r["bpb"][1]), "bpb_unk_bytes": float(pess["bpb"][0]),
                "words": acc["items"], "unseen_words": acc["unseen"], "unseen_bits_share": r["unseen_bits_share"],
                "coverage_words": r["coverage_words"], "coverage_bytes": r["coverage_bytes"], "dictionary_words": n,
                "calibration": cal.to_dict(),
                "convention": (f"p(word) = (1 - {cal.p_unk:.4f}) softmax over the {n:,}-word dictionary of "
                               f"{'' if cal.score == 'sigmoid_diff' else cal.score + ' '}s/{cal.temperature:.4f} + {cal.prior_weight:.3f} log(count+1)"
                               + (f" + {cal.zero_count_weight:.3f} [count=0]" if cal.zero_count_weight else "")
                               + "; unseen words "
                               f"{cal.p_unk:.4f} x a byte {cal.spell_order}-gram spelling probability")}


class _WordText:
    """Words -> text as the codec joins them: the pair of the last word and the next decides."""

    def __init__(self, codec, last: str):
        self.codec, self.last = codec, last

    def feed(self, word: str, _i: int) -> str:
        text = self.codec.join([self.last, word])[len(self.codec.join([self.last])):]
        self.last = word
        return text

    def flush(self) -> str:
        return ""


class _WordSampler:
    """Logits -> (word, dictionary id, probability): the decoder's draw (``Decoder.draw``, with the vocabulary's
    ``search``) from the sampler's softmax of ``z = score / T_cal + b log(count + 1) + c [count = 0]``, ``score``
    the calibration's (sigmoid_diff or mean_logit). With the sampling's ``spell_below``, where even the best
    dictionary word scores below it, a spelling of the activations (spell.py) is taken instead when it scores better
    than that word."""

    def __init__(self, dictionary, calibration, sampler, search: str = "pruned"):
        c = calibration
        self.dictionary, self.sampler = dictionary, sampler
        self.scale, self.b = np.float32(1.0 / c.temperature), (c.prior_weight, c.zero_count_weight)
        self.spell_below = sampler.sampling.spell_below
        rank = Ranking(c.score, 1.0 / c.temperature, self.b if any(self.b) else None)
        self.decoder = Decoder(dictionary, spell_below=self.spell_below, search=search, rank=rank)
        self._prior = np.zeros(0, np.float32)

    def prior(self, order: np.ndarray) -> np.ndarray:
        """b log(count + 1) + c [count == 0] in trie order."""
        if len(self._prior) != len(order):  # the dictionary grew (prompt or spelled words)
            self._prior = count_prior(self.dictionary.counts[order], *self.b)
        return self._prior

    def __call__(self, logits: np.ndarray) -> tuple[str, int, float]:
        out = self.decoder.draw(logits, self.sampler)
        return out.words[0], int(out.ids[0]), float(out.probs[0])

    def probs(self, logits: np.ndarray) -> np.ndarray:
        """The distribution ``__call__`` draws dictionary words from, over dictionary ids (speculative.py): every
        word scored (a draft's acceptance needs the whole distribution)."""
        sc = self.decoder.scorer()
        s = sc.score_one(np.ascontiguousarray(logits, np.float32), self.decoder.score)
        z = s * self.scale + self.prior(sc.order) if any(self.b) else s * self.scale
        p = np.empty(len(z))
        p[sc.order] = self.sampler.probs(z)
        return p


# -- BPE --------------------------------------------------------------------------------------------------------
class Tokens(_Plain):
    """A BPE baseline's vocabulary: its tokenizers.Tokenizer, <|endoftext|> one of its tokens."""

    name, what, unit = "BPE", "a tokenizers.Tokenizer", "tokens"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calibration = Calibration()  # unused: a softmax over tokens needs none (a run's state keeps one anyway)
        self._items = None

    @classmethod
    def load(cls, path: str, _codec=None) -> "Tokens":
        return cls(ckpt.load_tokenizer(os.path.join(path, ckpt.TOKENIZER_FILE)))

    def copy(self) -> "Tokens":
        return self

    @property
    def raw(self):
        return self.tokenizer

    @property
    def checkpoint_json(self) -> dict:
        return {}

    @property
    def sampling(self) -> dict:
        return {}

    @property
    def data_codec(self):
        return None  # BPE reads the text, whatever codec it was split with

    @property
    def eot_id(self) -> int:
        eot = self.tokenizer.token_to_id(EOT)
        if eot is None:
            raise TfreeError(f"the BPE tokenizer has no {EOT} token")
        return eot

    def describe(self) -> str:
        return f"BPE {self.tokenizer.get_vocab_size():,} tokens"

    def count(self, text: str) -> int:
        """``text``'s length in this vocabulary's items: its BPE tokens (``tfree serve``'s usage)."""
        return len(self.tokenizer.encode(text).ids)

    def exported(self, path: str, _tmp: str, _min_count: int) -> tuple[dict, dict]:
        """(files, checkpoint info) of a generation-only copy (``export``): the tokenizer as it is."""
        return {ckpt.TOKENIZER_FILE: os.path.join(path, ckpt.TOKENIZER_FILE)}, {}

    # -- generation -------------------------------------------------------------------------------------------
    def begin(self, prompt):
        """(the context's ids: <|endoftext|> then the prompt's tokens, a reader of picks into text). ``prompt``: a
        string, or its words."""
        text = join(list(prompt)) if isinstance(prompt, (list, tuple)) else prompt
        return [self.eot_id, *self.tokenizer.encode(text).ids], _BpeText(self.tokenizer)

    def window(self, model, ids, use_cache: bool) -> Window:
        return Window(model, ids, token_inputs(next(model.parameters()).device), lambda i: [i], use_cache)

    def picks(self, window, sampler, draft_stats=None):
        """(token, id, probability) endlessly after the window's items, drawn by ``sampler``."""
        def pick(logits):
            i, p = sampler.pick(logits)
            return self.tokenizer.id_to_token(i), i, p
        return _Plain.picks(window, pick)

    # -- bits -------------------------------------------------------------------------------------------------
    def unit_bits(self, model, corpus, units, reading) -> list[tuple[float, int]]:
        """(bits, tokens predicted) of each unit, read from <|endoftext|> (score.py)."""
        from .bits import TokenItems, evaluate_bpe  # noqa: PLC0415

        items, res = TokenItems(corpus, units, self.tokenizer, self.eot_id), []
        for u in range(len(units)):
            r = evaluate_bpe(model, _OneUnit(items, u), units.take(np.array([u])), reading)
            res.append((float(r["bits"]), int(r["items"])))
        return res

    def items(self, corpus, units):
        """The tokens of ``units`` (made once for the units last asked for: a run's validation slice)."""
        from .bits import TokenItems  # noqa: PLC0415

        if self._items is None or self._items[0] is not units:
            self._items = units, TokenItems(corpus, units, self.tokenizer, self.eot_id)
        return self._items[1]

    def validate(self, model, corpus, units, reading) -> dict:
        """Validation bits per byte of ``units``."""
        from .bits import evaluate_bpe  # noqa: PLC0415

        return {"val_bpb": evaluate_bpe(model, self.items(corpus, units), units, reading)["bpb"]}

    def evaluate(self, model, corpus, units, reading) -> dict:
        """Bits per byte of ``units``: the model's own softmax over its tokens."""
        from .bits import TokenItems, evaluate_bpe  # noqa: PLC0415

        r = evaluate_bpe(model, TokenItems(corpus, units, self.tokenizer, self.eot_id), units, reading)
        return {"bpb": r["bpb"], "tokens": r["items"], "convention": "the model's own softmax over its BPE vocabulary"}


class _OneUnit:
    """Unit u of a TokenItems as a source of one unit (its tokens are made once, for all units)."""

    def __init__(self, items, u: int):
        self.eot_id, self.lengths = items.eot_id, items.lengths[u:u + 1]
        self.tokens = items.item_tokens(u, 0, int(items.lengths[u]))

    def item_tokens(self, _u: int, a: int, b: int):
        return self.tokens[a:b]


class _BpeText:
    """Token ids -> text, piece by piece: a byte-level token can end inside a UTF-8 character, so the characters
    still incomplete at the end (decoded as U+FFFD) are held back until the tokens that finish them come, and
    the text before them goes out at once. A character is at most 4 bytes: a tail left unfinished by 4 tokens is
    invalid and goes out as it decodes; one the generation ends inside is dropped."""

    def __init__(self, tokenizer):
        self.tok, self.pending, self.shown, self.tail = tokenizer, [], 0, 0

    def feed(self, _token: str, token: int) -> str:
        self.pending.append(token)
        text = self.tok.decode(self.pending)
        if text.endswith("\ufffd"):
            done = len(text.rstrip("\ufffd"))
            self.tail = 1 if done > self.shown else self.tail + 1  # tokens since a character was last completed
            if self.tail <= 3:
                out, self.shown = text[self.shown:done], max(self.shown, done)
                return out
        out = text[self.shown:]
        self.pending, self.shown, self.tail = [], 0, 0
        return out

    def flush(self) -> str:
        text = self.tok.decode(self.pending)[self.shown:].rstrip("\ufffd") if self.pending else ""
        self.pending, self.shown, self.tail = [], 0, 0
        return text


_KINDS = {"tfree": Words, "bpe": Tokens}  # ModelConfig.mode -> its vocabulary
