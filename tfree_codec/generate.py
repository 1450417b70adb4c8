"""Text from a trained model: KV-cache decoding, dictionary sampling, streaming (``tfree generate``).

>>> lm = LanguageModel.load()                    # the bundled model; or a run directory or a checkpoint directory
>>> for piece in lm.stream("It is a truth", max_new_tokens=20, seed=0):
...     print(piece.text, end="", flush=True)    # word by word, whitespace markers already turned into text
>>> lm.generate("It is a truth", temperature=0)  # greedy: the whole continuation as one string

T-FREE checkpoints predict activation rows: each step every dictionary word (the prompt's words join it) gets its
score s(w), and a word is drawn from ``softmax(z / temperature)`` with ``z = s / T_cal + b log(count + 1) +
c [count = 0]``, the distribution fitted when the model was trained (calibration.json: ``T_cal``, the count
prior's weights ``b`` and ``c``; SPEC section 4 is b = c = 0). So temperature 1 samples the model's own calibrated
distribution, lower is more conservative, 0 is greedy. BPE-baseline checkpoints draw tokens from their softmax head
the same way, with the same sampler.

The context starts with <|endoftext|>, as every held-out unit does in evaluation, then the prompt. It holds at most
the model's trained ``seq_len`` items; when it is full, the oldest half is dropped and the rest is read again. With
or without the KV cache the model sees the same items, so both give the same words.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .model import checkpoint as ckpt
from .config import TfreeError
from .decode import _sample
from .decode.decoder import Decoder
from .decode.dictionary import count_prior
from .decode.sampling import _TAIL, DEFAULT_MAX_NEW, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, _check_sampling
from .context import Window as _Window
from .context import pattern_inputs as _pattern_inputs
from .context import pattern_rows as _pattern_rows
from .context import token_inputs as _token_inputs
from .decode.scorer import sigmoid
from .text.words import EOT, MARKERS

BUNDLED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "model")
SPELL_BELOW = 0.5  # --spell: where the best dictionary word scores below this, spell one if that fits better


@dataclass
class Piece:
    """One generated item and the text it adds."""

    word: str                   # the word or marker drawn (T-FREE), or the token's text (BPE)
    text: str                   # what it adds to the output ("" while a possible stop string is held back)
    prob: float                 # the probability the sampler gave it (1 when greedy, nan when spelled)
    finish: str | None = None   # on the last piece: "length", "eot" (end of document) or "stop"


def find_checkpoint(path: str | None) -> str:
    """The checkpoint directory meant by ``path``: a checkpoint itself, a run directory (its final/, else its
    newest step-NNNNNN/) or, for None, the bundled model."""
    if path is None:
        if not os.path.isfile(os.path.join(BUNDLED_MODEL, ckpt.META)):
            raise TfreeError("this install has no bundled model (tfree_codec/assets/model): give a run or checkpoint directory")
        return BUNDLED_MODEL
    if not os.path.exists(path):
        raise TfreeError(f"{path}: no such run or checkpoint directory")
    if not os.path.isdir(path):
        raise TfreeError(f"{path} is a file: give a run directory or a checkpoint directory (RUN/final)")
    if os.path.isfile(os.path.join(path, ckpt.META)):
        return path
    if os.path.isfile(os.path.join(path, "final", ckpt.META)):
        return os.path.join(path, "final")
    latest = ckpt.latest_checkpoint(path)
    if latest is None:
        raise TfreeError(f"{path} holds no tfree checkpoint (no checkpoint.json, final/ or step-NNNNNN/)")
    return latest


@dataclass
class LanguageModel:
    """A checkpoint ready to generate: the model (eval mode), its codec, its vocabulary (the T-FREE ``Dictionary``
    or the BPE ``tokenizers.Tokenizer``) and, for T-FREE, its calibration: the dictionary softmax's temperature and
    count-prior weight."""

    model: torch.nn.Module
    codec: object
    vocab: object
    calibration: dict
    path: str

    @property
    def mode(self) -> str:
        return self.model.config.mode

    @classmethod
    def load(cls, path: str | None = None, device: str = "auto") -> "LanguageModel":
        from .model.device import resolve_device  # noqa: PLC0415

        path = find_checkpoint(path)
        model, codec, _ = ckpt.load_model(path, resolve_device(device))
        model.eval()
        return cls(model, codec, *_load_vocab(path, codec, model.config.mode), path)

    def stream(self, prompt: str, **kw) -> Iterator[Piece]:
        kw.setdefault("calibration", self.calibration)
        return stream(self.model, self.codec, self.vocab, prompt, **kw)

    def generate(self, prompt: str, **kw) -> str:
        kw.setdefault("calibration", self.calibration)
        return generate(self.model, self.codec, self.vocab, prompt, **kw)

    def generate_batch(self, prompts, *, seed=None, **kw) -> list[str]:
        """``generate`` for each of several prompts, one after another (prompt i is drawn with ``seed + i``, as
        ``tfree generate --num-samples`` does; seed None: fresh entropy for each)."""
        if isinstance(prompts, str):
            raise TfreeError("generate_batch takes a list of prompts (generate takes one)")
        return [self.generate(p, seed=None if seed is None else seed + i, **kw) for i, p in enumerate(prompts)]

    def score(self, texts, batch_size: int = 16) -> list[dict]:
        """Bits, bits per byte and log-probability of each text under this model (``score.score_texts``)."""
        from .score import score_texts  # noqa: PLC0415

        return score_texts(self.path, self.model, self.codec, texts, batch_size)


def load(path: str | None = None, device: str = "auto") -> LanguageModel:
    """A model ready to generate, in one line: ``tfree_codec.load().generate("It is a truth")``. ``path`` is a run
    directory (its newest checkpoint), a checkpoint directory, or None for the bundled model."""
    return LanguageModel.load(path, device)


def _load_vocab(path: str, codec, mode: str):
    """(vocabulary, calibration) of a checkpoint directory."""
    if mode == "bpe":
        from .train.data import TOKENIZER_FILE, load_tokenizer  # noqa: PLC0415

        return load_tokenizer(os.path.join(path, TOKENIZER_FILE)), {}
    from .decode.dictionary import Dictionary  # noqa: PLC0415
    from .train.evaluate import DICT_FILE, load_calibration  # noqa: PLC0415

    dictionary = Dictionary.load(os.path.join(path, DICT_FILE), codec)
    cal = load_calibration(path)
    return dictionary, {"temperature": float(cal.temperature), "prior_weight": float(cal.prior_weight),
                        "zero_count_weight": float(cal.zero_count_weight)}


def export(src: str, dst: str, *, min_count: int = 1, half: bool = False) -> str:
    """A generation-only copy of a checkpoint (``tfree export``): weights, codec, calibration and vocabulary, no
    optimizer state; a T-FREE dictionary keeps the words seen at least ``min_count`` times in training (and every
    marker). Rare words cost decoding time and, drawn without a frequency prior, read as noise; words of a prompt
    join the dictionary at run time anyway. ``half``: the weights stored as float16, half the size; loading turns
    them back into the model's float32 (the values keep float16's rounding, ~3 significant digits)."""
    import json  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from .train.data import TOKENIZER_FILE  # noqa: PLC0415

    path = find_checkpoint(src)
    dst_abs = os.path.abspath(dst)
    if (os.path.abspath(path) + os.sep).startswith(dst_abs.rstrip(os.sep) + os.sep):
        raise TfreeError(f"cannot export {path} into {dst}: the output would replace the checkpoint it reads")
    ckpt.check_replaceable(dst_abs)  # before any work: refuse a folder of someone else's files in one line
    model, codec, meta = ckpt.load_model(path, "cpu")
    vocab, _ = _load_vocab(path, codec, model.config.mode)
    if min_count < 1:
        raise TfreeError(f"min_count must be at least 1, not {min_count}")
    if model.config.mode == "tfree":  # a dictionary of markers only would export silently and decode nothing
        seen = [int(c) for w, c in zip(vocab.words, vocab.counts) if w not in MARKERS]
        if not any(c >= min_count for c in seen):
            raise TfreeError(f"--min-count {min_count} keeps no word of {path}'s dictionary (its most frequent "
                             f"word was seen {max(seen, default=0):,} times)")
    calibration = None
    if os.path.isfile(os.path.join(path, "calibration.json")):
        with open(os.path.join(path, "calibration.json"), encoding="utf-8") as f:
            calibration = json.load(f)
    info = {k: meta[k] for k in ("bytes_seen", "seed", "params", "chunk_words") if k in meta}
    if half:
        model.half()
        info["stored_dtype"] = "float16"
    with tempfile.TemporaryDirectory() as tmp:
        if model.config.mode == "bpe":
            files = {TOKENIZER_FILE: os.path.join(path, TOKENIZER_FILE)}
        else:
            from .decode.dictionary import Dictionary  # noqa: PLC0415
            from .train.evaluate import DICT_FILE  # noqa: PLC0415

            kept = Dictionary.from_counts(codec, dict(zip(vocab.words, vocab.counts.tolist())), min_count=min_count)
            kept.save(os.path.join(tmp, DICT_FILE))
            files = {DICT_FILE: os.path.join(tmp, DICT_FILE)}
            info["dictionary_min_count"] = min_count
        return ckpt.save_checkpoint(dst, model, codec, files=files, calibration=calibration,
                                    step=int(meta.get("step", 0)), info=info)


# -- sampling and text --------------------------------------------------------------------------------------------------
def sample_logits(logits: np.ndarray, temperature: float, top_k, top_p, rng: np.random.Generator) -> tuple[int, float]:
    """(id, probability) drawn from softmax(logits / temperature) over the top_k ids, then over the smallest set
    reaching top_p; the argmax when temperature is 0 or top_k is 1. One sampler for dictionary words and BPE tokens
    alike: the decoder's O(n) kernels (_sample.py; no sort of the vocabulary), on a block of one position."""
    x = np.ascontiguousarray(logits, np.float32).reshape(-1, 1)           # (n, 1): the kernels' layout
    if not np.isfinite(x).all():  # a diverged model: say so rather than draw from garbage
        raise TfreeError("the model's scores contain NaN or infinity")
    if temperature == 0 or top_k == 1:
        return int(np.argmax(x[:, 0])), 1.0
    u = rng.random(1)  # drawn first, so a seed gives the same draws whatever the restrictions cost
    invt = np.float32(1.0 / temperature)
    if top_k is None or top_k >= len(x):  # the common case in one fused pass
        i, p = _sample.sample1(x[:, 0], invt, np.float32(_TAIL), 1.0 if top_p is None else float(top_p), float(u[0]))
        return int(i), float(p)
    best = x.max(0)
    thr = (best - _TAIL / invt).astype(np.float32)  # ids this far below the best hold no mass worth drawing
    lo = np.maximum(x.min(0), thr)
    mass = _sample.mass_above(x, 1, thr, best, invt)
    if top_k is not None and top_k < len(x):
        thr = _sample.kth_largest(x, 1, int(top_k), thr)
        mass = _sample.mass_above(x, 1, thr, best, invt)
        lo = np.maximum(lo, thr)
    if top_p is not None and top_p < 1:
        thr, mass = _sample.nucleus(x, 1, lo, best, thr, best, invt, top_p * mass)
    pos, e = np.empty(1, np.int64), np.empty(1, np.float64)
    _sample.draw(x, 1, thr, best, invt, u * mass, pos, e)
    return int(pos[0]), float(e[0] / mass[0])


class _Stops:
    """Holds back text that could be the start of a stop string; cuts the output where one appears."""

    def __init__(self, stops):
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text to emit now, whether a stop string was reached)."""
        if not self.stops:
            return text, False
        buf = self.held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return buf[:min(hits)], True
        hold = max((k for s in self.stops for k in range(min(len(s) - 1, len(buf)), 0, -1) if buf.endswith(s[:k])),
                   default=0)
        self.held = buf[len(buf) - hold:]
        return buf[:len(buf) - hold], False

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text


class _BpeText:
    """Token ids -> text, piece by piece: a byte-level token can end inside a UTF-8 character, so text is let out
    only when the pending tokens decode cleanly (or 4 of them still do not)."""

    def __init__(self, tokenizer):
        self.tok, self.pending = tokenizer, []

    def feed(self, token: int) -> str:
        self.pending.append(token)
        text = self.tok.decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < 4:
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        text = self.tok.decode(self.pending) if self.pending else ""
        self.pending = []
        return text


# -- generation ---------------------------------------------------------------------------------------------------------
def stream(model, codec, vocab, prompt: str, *, max_new_tokens: int = DEFAULT_MAX_NEW,
           temperature: float = DEFAULT_TEMPERATURE, top_k: int | None = None, top_p: float | None = DEFAULT_TOP_P,
           seed=None, stop=(), spell: bool = False,
           spell_below: float = SPELL_BELOW, use_cache: bool = True, calibration: dict | None = None,
           stop_at_eot: bool = True, draft: bool = False, draft_stats=None) -> Iterator[Piece]:
    """Generate after ``prompt``, one ``Piece`` per new word (T-FREE; ``vocab`` a Dictionary, which the prompt's
    words join) or token (BPE; ``vocab`` a tokenizers.Tokenizer). ``seed`` (int or numpy Generator; None: fresh
    entropy) fixes the draws. Stops after ``max_new_tokens`` items, at <|endoftext|>, or before a ``stop`` string
    (which is not emitted). ``calibration``: {"temperature": T_cal, "prior_weight": b, "zero_count_weight": c}
    (default: T_cal 0.07, b = c = 0).
    The sampling defaults are ``tfree generate``'s (decode/sampling.py). ``draft`` (a model trained with
    ``--od-weight``): self-speculative generation (speculative.py), the same words when greedy and the same
    distribution when sampling; ``draft_stats`` (a ``speculative.DraftStats``) then counts the drafts kept.
    The arguments are checked here, before the first piece is asked for."""
    if not isinstance(prompt, str) or not prompt:
        raise TfreeError("the prompt is empty")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise TfreeError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")
    _check_sampling(temperature, top_k, top_p)
    if isinstance(stop, str):
        stop = [stop]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    device = next(model.parameters()).device
    if draft:
        if not getattr(model.config, "od", False):
            raise TfreeError("--draft needs a model with an Over-Decoding head (trained with --od-weight)")
        if spell and temperature != 0 and top_k != 1:
            raise TfreeError("--draft samples from the dictionary alone: it does not combine with --spell (greedy does)")
    if model.config.mode == "bpe":
        return _run_bpe(model, vocab, prompt, device, max_new_tokens, temperature, top_k, top_p, rng, stop,
                        use_cache, stop_at_eot)
    from .decode.dictionary import Dictionary  # noqa: PLC0415
    from .train.evaluate import Calibration  # noqa: PLC0415

    if not isinstance(vocab, Dictionary):
        raise TfreeError(f"a T-FREE model generates from a Dictionary, not {type(vocab).__name__}")
    if vocab.fingerprint() != codec.fingerprint():
        raise TfreeError(f"the dictionary was built with codec {vocab.fingerprint()}, the model's is {codec.fingerprint()}")
    cal = {"temperature": Calibration().temperature, "prior_weight": 0.0, "zero_count_weight": 0.0,
           **(calibration or {})}
    words = _WordSampler(vocab, cal["temperature"], (cal["prior_weight"], cal["zero_count_weight"]),
                         spell_below if spell else None)
    return _run_tfree(model, codec, vocab, prompt, device, max_new_tokens, temperature, top_k, top_p, rng, stop,
                      words, use_cache, stop_at_eot, draft, draft_stats)


class _WordSampler:
    """Logits -> (word, dictionary id, probability): every word's score s (the decoder's numba scorer), then
    ``sample_logits`` on ``s / T_cal + b log(count + 1)``, all in the scorer's trie order (no reordering of the
    dictionary each word). With ``spell_below``, where even the best dictionary word scores below it, a spelling
    of the activations (spell.py) is taken instead when it scores better than that word."""

    def __init__(self, dictionary, t_cal: float, prior: tuple, spell_below: float | None):
        self.dictionary, self.decoder = dictionary, Decoder(dictionary)
        self.scale, self.b, self.spell_below = np.float32(1.0 / t_cal), tuple(prior), spell_below
        self._prior = np.zeros(0, np.float32)

    def prior(self, order: np.ndarray) -> np.ndarray:
        """b log(count + 1) + c [count == 0] in trie order."""
        if len(self._prior) != len(order):  # the dictionary grew (prompt or spelled words)
            self._prior = count_prior(self.dictionary.counts[order], *self.b)
        return self._prior

    def __call__(self, logits: np.ndarray, temperature, top_k, top_p, rng) -> tuple[str, int, float]:
        sc = self.decoder.scorer()
        s = sc.score_one(np.ascontiguousarray(logits, np.float32))            # (W,) in trie order
        z = s * self.scale + self.prior(sc.order) if any(self.b) else s * self.scale
        pos, p = sample_logits(z, temperature, top_k, top_p, rng)
        i = int(sc.order[pos])
        best = float(s.max()) if self.spell_below is not None else 0.0
        if self.spell_below is not None and best < self.spell_below:  # no dictionary word fits the activations
            got = self.decoder.speller().spell_sigmoid(sigmoid(logits[None])[0], beam=self.decoder.beam)
            if got is not None and got[1] > best:
                return got[0], self.dictionary.index(got[0]), float("nan")
        return self.dictionary.words[i], i, p

    def probs(self, logits: np.ndarray, temperature, top_k, top_p) -> np.ndarray:
        """The distribution ``__call__`` draws dictionary words from, over dictionary ids (speculative.py)."""
        from .speculative import distribution  # noqa: PLC0415

        sc = self.decoder.scorer()
        s = sc.score_one(np.ascontiguousarray(logits, np.float32))
        z = s * self.scale + self.prior(sc.order) if self.b else s * self.scale
        p = np.empty(len(z))
        p[sc.order] = distribution(z, temperature, top_k, top_p)
        return p


def _run_tfree(model, codec, dictionary, prompt, device, n_new, temperature, top_k, top_p, rng, stop, sampler,
               use_cache, stop_at_eot, draft=False, draft_stats=None) -> Iterator[Piece]:
    words = codec.split(prompt)
    new = [w for w in dict.fromkeys(words) if w not in dictionary]
    dictionary.extend(new, counts=np.ones(len(new), np.int64))  # seen once: in the prompt
    ids = dictionary.extend([EOT, *words])
    sampler.decoder.scorer()  # grown by the prompt's words now, not inside the first step
    window = _Window(model, ids.tolist(), _pattern_inputs(dictionary, device), _pattern_rows(dictionary), use_cache,
                     words=dictionary.words.__getitem__)

    def pick(logits):
        word, i, prob = sampler(logits, temperature, top_k, top_p, rng)
        if i < 0:  # a spelled word: it joins the dictionary, so it can be read back
            i = int(dictionary.extend([word])[0])
        return word, i, prob

    if draft:
        from .speculative import DraftStats, Drafter, draft_words  # noqa: PLC0415

        drafter = Drafter(dictionary, 1.0 / float(sampler.scale), sampler.b)
        source = draft_words(window, dictionary.words, pick,
                             lambda lg: sampler.probs(lg, temperature, top_k, top_p), drafter,
                             draft_stats if draft_stats is not None else DraftStats(),
                             temperature == 0 or top_k == 1, temperature, top_k, top_p, rng)
    else:
        source = _plain_words(window, pick)
    stops, last = _Stops(stop), words[-1]
    for n, (word, i, prob) in zip(range(1, n_new + 1), source):
        if stop_at_eot and word == EOT:
            yield Piece(word, stops.flush(), prob, "eot")
            return
        text, hit = stops.feed(codec.join([last, word])[len(codec.join([last])):])  # join's rule: the pair decides
        last = word
        if hit or n == n_new:
            yield Piece(word, text + ("" if hit else stops.flush()), prob, "stop" if hit else "length")
            return
        yield Piece(word, text, prob)


def _plain_words(window, pick):
    """(word, id, probability) a word at a time: the next word's logits, a draw, the word read back."""
    while True:
        word, i, prob = pick(window.next_logits())
        yield word, i, prob
        window.append(i)


def _run_bpe(model, tok, prompt, device, n_new, temperature, top_k, top_p, rng, stop, use_cache,
             stop_at_eot) -> Iterator[Piece]:
    eot = tok.token_to_id(EOT)
    if eot is None:
        raise TfreeError(f"the BPE tokenizer has no {EOT} token")
    window = _Window(model, [eot, *tok.encode(prompt).ids], _token_inputs(device), lambda i: [i], use_cache)
    stops, text_of = _Stops(stop), _BpeText(tok)
    for n in range(1, n_new + 1):
        logits = window.next_logits()                                           # (V,)
        i, p = sample_logits(logits, temperature, top_k, top_p, rng)
        if stop_at_eot and i == eot:
            yield Piece(EOT, stops.feed(text_of.flush())[0] + stops.flush(), p, "eot")
            return
        text, hit = stops.feed(text_of.feed(i))
        if not hit and n == n_new:
            more, hit = stops.feed(text_of.flush())
            text += more + ("" if hit else stops.flush())
        if hit or n == n_new:
            yield Piece(tok.id_to_token(i), text, p, "stop" if hit else "length")
            return
        yield Piece(tok.id_to_token(i), text, p)
        window.append(i)


def generate(model, codec, vocab, prompt: str, *, on_piece: Callable[[Piece], None] | None = None, **kw) -> str:
    """The continuation of ``prompt`` as one string (``stream``'s arguments); ``on_piece`` sees each piece as it
    comes."""
    out = []
    for piece in stream(model, codec, vocab, prompt, **kw):
        out.append(piece.text)
        if on_piece is not None:
            on_piece(piece)
    return "".join(out)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to n inside the block (None: unchanged). Generating one word at a time from a
    small model is a chain of tiny matrix-vector products: on a CPU one thread is usually fastest, and on a busy
    machine several threads wait on each other at every op (docs/generate.md)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def timed(pieces: Iterator[Piece], on_piece: Callable[[Piece], None]) -> dict:
    """Run a stream, calling ``on_piece`` on each piece; -> items, bytes, seconds and the finish reason, and
    ``first_seconds``: until the first piece (it reads the prompt and, once per process, compiles the numba
    kernels), so that a rate over the rest is the steady one."""
    t0 = time.perf_counter()
    n, nbytes, finish, first = 0, 0, None, None
    for piece in pieces:
        on_piece(piece)
        n += 1
        nbytes += len(piece.text.encode("utf-8", "surrogatepass"))
        finish = piece.finish
        first = time.perf_counter() - t0 if first is None else first
    return {"items": n, "bytes": nbytes, "seconds": time.perf_counter() - t0, "finish": finish,
            "first_seconds": first or 0.0}
