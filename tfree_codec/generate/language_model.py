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
import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..model import checkpoint as ckpt
from ..model.checkpoint import BUNDLED_MODEL, find_checkpoint  # noqa: F401  (re-exported)
from ..config import TfreeError
from ..decode.sampling import Sampler, Sampling
from ..decode.sampling import sample_logits  # noqa: F401  (re-exported)
from .vocab import as_vocabulary, load_vocabulary

# --spell: where the best dictionary word scores below this, spell one if that fits better; in the units of the
# model's score (a mean logit of 0 is a mean sigmoid of about one half)
SPELL_BELOW = {"sigmoid_diff": 0.5, "mean_logit": 0.0}


@dataclass
class Piece:
    """One generated item and the text it adds."""

    word: str                   # the word or marker drawn (T-FREE), or the token's text (BPE)
    text: str                   # what it adds to the output ("" while a possible stop string is held back)
    prob: float                 # the probability the sampler gave it (1 when greedy, nan when spelled)
    finish: str | None = None   # on the last piece: "length", "eot" (end of document) or "stop"


@dataclass
class LanguageModel:
    """A checkpoint ready to generate: the model (eval mode), its codec and its vocabulary (vocab.py: the T-FREE
    dictionary with its calibration, or the BPE tokenizer)."""

    model: torch.nn.Module
    codec: object
    vocabulary: object
    path: str

    @property
    def mode(self) -> str:
        return self.model.config.mode

    @property
    def vocab(self):
        """The bare vocabulary: the T-FREE ``Dictionary`` or the BPE ``tokenizers.Tokenizer``."""
        return self.vocabulary.raw

    @property
    def calibration(self) -> dict:
        """The dictionary softmax's temperature and count-prior weights ({} for BPE)."""
        return self.vocabulary.sampling

    @classmethod
    def load(cls, path: str | None = None, device: str = "auto") -> "LanguageModel":
        from ..model.device import resolve_device  # noqa: PLC0415

        path = find_checkpoint(path)
        model, codec, _ = ckpt.load_model(path, resolve_device(device))
        model.eval()
        return cls(model, codec, load_vocabulary(path, codec, model.config), path)

    def stream(self, prompt: str, sampling: Sampling | None = None, **kw) -> Iterator[Piece]:
        return stream(self.model, self.codec, self.vocabulary, prompt, sampling, **kw)

    def generate(self, prompt: str, sampling: Sampling | None = None, **kw) -> str:
        return generate(self.model, self.codec, self.vocabulary, prompt, sampling, **kw)

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


def export(src: str, dst: str, *, min_count: int = 1, half: bool = False) -> str:
    """A generation-only copy of a checkpoint (``tfree export``): weights, codec, calibration and vocabulary, no
    optimizer state; a T-FREE dictionary keeps the words seen at least ``min_count`` times in training (and every
    marker). Rare words cost decoding time and, drawn without a frequency prior, read as noise; words of a prompt
    join the dictionary at run time anyway. ``half``: the weights stored as float16, half the size; loading turns
    them back into the model's float32 (the values keep float16's rounding, ~3 significant digits)."""
    import json  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    path = find_checkpoint(src)
    dst_abs = os.path.abspath(dst)
    if (os.path.abspath(path) + os.sep).startswith(dst_abs.rstrip(os.sep) + os.sep):
        raise TfreeError(f"cannot export {path} into {dst}: the output would replace the checkpoint it reads")
    ckpt.check_replaceable(dst_abs)  # before any work: refuse a folder of someone else's files in one line
    model, codec, meta = ckpt.load_model(path, "cpu")
    vocab = load_vocabulary(path, codec, model.config)
    if min_count < 1:
        raise TfreeError(f"min_count must be at least 1, not {min_count}")
    calibration = None
    if os.path.isfile(os.path.join(path, ckpt.CALIBRATION_FILE)):
        with open(os.path.join(path, ckpt.CALIBRATION_FILE), encoding="utf-8") as f:
            calibration = json.load(f)
    info = {k: meta[k] for k in ("bytes_seen", "seed", "params", "chunk_words") if k in meta}
    if half:
        model.half()
        info["stored_dtype"] = "float16"
    with tempfile.TemporaryDirectory() as tmp:
        files, kept = vocab.exported(path, tmp, min_count)
        out = ckpt.save_checkpoint(dst, model, codec, files=files, step=int(meta.get("step", 0)),
                                   info={**info, **kept},
                                   json_files={} if calibration is None else {ckpt.CALIBRATION_FILE: calibration})
    if model.config.mode == "tfree":  # its decoder's index, cached now: the first generation starts at once
        from ..decode.index import warm  # noqa: PLC0415

        warm(os.path.join(out, ckpt.DICT_FILE), codec)
    return out


# -- text ---------------------------------------------------------------------------------------------------------------
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


# -- generation ---------------------------------------------------------------------------------------------------------
def stream(model, codec, vocab, prompt, sampling: Sampling | None = None, *, use_cache: bool = True,
           draft=False, **options) -> Iterator[Piece]:
    """Generate after ``prompt`` (a string, or its words), one ``Piece`` per new word (T-FREE; ``vocab`` a
    Dictionary, which the prompt's words join) or token (BPE; ``vocab`` a tokenizers.Tokenizer); ``vocab`` may also
    be a vocabulary (vocab.py). ``sampling`` (decode.sampling.Sampling: temperature, top-k, top-p, seed, stop
    strings, max_new_tokens, stop_at_eot, spell_below), or its fields as keywords (``spell=True``: spell below
    SPELL_BELOW of the model's score); ``calibration`` ({"temperature": T_cal, "prior_weight": b,
    "zero_count_weight": c}) replaces a bare dictionary's default (T_cal 0.07, b = c = 0). ``draft`` (a model
    trained with ``--od-weight``; True, or a ``speculative.DraftStats`` that counts the drafts kept):
    self-speculative generation (speculative.py), the same words when greedy and the same distribution when
    sampling. ``use_cache``: False re-reads the window each step.
    ``search`` (T-FREE): how the dictionary is read, "pruned" or "full" (vocab.Words; default the vocabulary's).
    The arguments are checked here, before the first piece is asked for."""
    if not isinstance(prompt, (str, list, tuple)) or not prompt:
        raise TfreeError("the prompt is empty")
    calibration, stats = options.pop("calibration", None), options.pop("draft_stats", None)
    search = options.pop("search", None)
    spell_default = False
    if "spell" in options:  # the older flag: spell below spell_below (default SPELL_BELOW for the model's score)
        spell = options.pop("spell")
        spell_default = bool(spell) and "spell_below" not in options
        if not spell:
            options["spell_below"] = None
    sampling = dataclasses.replace(sampling or Sampling(), **options) if options else sampling or Sampling()
    if draft:
        from .speculative import DraftStats  # noqa: PLC0415

        if not getattr(model.config, "od", False):
            raise TfreeError("--draft needs a model with an Over-Decoding head (trained with --od-weight)")
        if (sampling.spell_below is not None or spell_default) and not sampling.greedy:
            raise TfreeError("--draft samples from the dictionary alone: it does not combine with --spell (greedy does)")
        stats = draft if isinstance(draft, DraftStats) else stats if stats is not None else DraftStats()
    else:
        stats = None
    items = as_vocabulary(vocab, codec, model.config, calibration)
    if spell_default and hasattr(items, "calibration"):
        sampling = dataclasses.replace(sampling, spell_below=SPELL_BELOW[items.calibration.score])
    if search is not None:
        if not hasattr(items, "searched"):
            raise TfreeError("search applies to a T-FREE dictionary, not to a BPE tokenizer")
        items = items.searched(search)
    return _pieces(model, items, prompt, Sampler(sampling), use_cache, stats)


def _pieces(model, items, prompt, sampler, use_cache, draft_stats) -> Iterator[Piece]:
    """The one generation loop, for words and tokens alike: the vocabulary picks, the loop cuts and stops."""
    ids, text_of = items.begin(prompt)
    source = items.picks(items.window(model, ids, use_cache), sampler, draft_stats)
    s = sampler.sampling
    stops, eot, n_new = _Stops(s.stop), items.eot_id, s.max_new_tokens
    for n, (item, i, prob) in zip(range(1, n_new + 1), source):
        if s.stop_at_eot and i == eot:
            yield Piece(item, stops.feed(text_of.flush())[0] + stops.flush(), prob, "eot")
            return
        text, hit = stops.feed(text_of.feed(item, i))
        if not hit and n == n_new:
            more, hit = stops.feed(text_of.flush())
            text += more + ("" if hit else stops.flush())
        if hit or n == n_new:
            yield Piece(item, text, prob, "stop" if hit else "length")
            return
        yield Piece(item, text, prob)


def generate(model, codec, vocab, prompt, sampling: Sampling | None = None, *,
             on_piece: Callable[[Piece], None] | None = None, **kw) -> str:
    """The continuation of ``prompt`` as one string (``stream``'s arguments); ``on_piece`` sees each piece as it
    comes."""
    out = []
    for piece in stream(model, codec, vocab, prompt, sampling, **kw):
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
