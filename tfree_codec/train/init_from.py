"""``tfree train --init-from RUN_OR_CHECKPOINT``: continued training (issue 16). The new run starts from a trained
model's weights with a fresh optimizer, its own data and its own schedule; the model's shape comes from the source.

T-FREE: the dictionary is built from the new data as usual and the source's words are added to it (kept at count 0,
so the word prior follows the language now trained on); the embedding and head keep their shape, since they
depend on the codec's ``v`` only. BPE: the source's tokenizer is kept (copied), as any user of a trained BPE model
must; the new data is tokenized with it. Everything that can be refused is refused in one line before any work:
a missing or damaged source, flags that contradict its shape, a T-FREE run on data encoded with another codec.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from ..codec import Codec
from ..config import CodecConfig, TfreeError, atomic_write
from ..decode.dictionary import Dictionary
from ..model import checkpoint as ckpt
from ..model.transformer import ModelConfig
from ..model.checkpoint import CODEC_FILE, DICT_FILE, TOKENIZER_FILE
from .settings import model_config

# The options that make a model's shape: the CLI takes them from the source unless they are typed.
SHAPE_OPTIONS = ("n_layer", "n_head", "n_embd", "seq_len", "pos_weight", "oe_orders", "oe_rows", "oe_slices",
                 "oe_distinct", "oe_unigram", "objective", "word_budget", "mix_bce")


@dataclass(frozen=True)
class Source:
    path: str                  # the checkpoint directory the weights come from
    model_config: ModelConfig
    codec: Codec

    @property
    def artifact(self) -> str:
        """The dictionary (T-FREE) or tokenizer (BPE) file of the source."""
        return os.path.join(self.path, DICT_FILE if self.model_config.tfree else TOKENIZER_FILE)


def resolve(path: str) -> str:
    """A checkpoint directory as given, or a run directory's final/ (else its newest step-NNNNNN/)."""
    if not os.path.isdir(path):
        raise TfreeError(f"--init-from {path!r}: no such run or checkpoint directory")
    if os.path.isfile(os.path.join(path, ckpt.META)):
        return path
    if os.path.isdir(os.path.join(path, "final")):
        return os.path.join(path, "final")
    latest = ckpt.latest_checkpoint(path)
    if latest is None:
        raise TfreeError(f"--init-from {path}: not a checkpoint, nor a run directory holding one (final/ or step-NNNNNN/)")
    return latest


def open_source(path: str) -> Source:
    """The source checkpoint, every file checked against its sha256; its model config, codec and artefact."""
    src = resolve(path)
    ckpt.read_meta(src)  # refuses a damaged or incomplete checkpoint, naming the file
    try:
        config = ckpt.read_model_config(src)
    except TfreeError as e:
        raise TfreeError(f"--init-from {src}: {str(e).removeprefix(f'{src}: ')}") from None
    source = Source(src, config, Codec(CodecConfig.load(os.path.join(src, CODEC_FILE))))
    if not os.path.isfile(source.artifact):
        raise TfreeError(f"--init-from {src}: no {os.path.basename(source.artifact)} (a {config.mode} model needs it "
                         "to be continued)")
    load_weights(None, source)  # weights that do not load are refused here, before the run writes anything
    return source


def check_shape(source: Source, cfg) -> None:
    """Refuse a run whose options ask for another model than the source's (mode, layers, width, context, ...)."""
    want = source.model_config
    if cfg.mode != want.mode:
        raise TfreeError(f"--init-from {source.path} is a {want.mode} model: "
                         f"{'drop --baseline' if want.tfree else 'add --baseline bpe'}")
    mine = model_config(cfg, want.vocab_size)
    diff = [f"{f.name} {getattr(want, f.name)!r} (asked {getattr(mine, f.name)!r})" for f in dataclasses.fields(want)
            if getattr(want, f.name) != getattr(mine, f.name)]
    if diff:
        raise TfreeError(f"--init-from {source.path}: its model has {', '.join(diff)}; the shape comes from the "
                         "source: drop the shape options that contradict it")


def check_codec(source: Source, codec: Codec, data: str) -> None:
    """T-FREE: the new data must be encoded with the source's codec (the embedding rows are its hash buckets)."""
    if source.model_config.tfree and codec.fingerprint() != source.codec.fingerprint():
        theirs, mine = source.codec.config, codec.config
        raise TfreeError(f"{data} was encoded with another codec (v = {mine.vocab_size}, m = {mine.num_activations}, "
                         f"{codec.fingerprint()}) than --init-from {source.path} (v = {theirs.vocab_size}, m = "
                         f"{theirs.num_activations}, {source.codec.fingerprint()}): re-encode it with the source's codec")


def grown_dictionary(source: Source, counts, codec: Codec) -> Dictionary:
    """The new data's dictionary with the source's words added at count 0 (they stay decodable; the counts, and so
    the word prior, are the new data's)."""
    old = Dictionary.load(source.artifact, source.codec)
    kept = Dictionary(codec, old.words, np.zeros(len(old), np.int64), old.indptr[:len(old) + 1],
                      old.indices[:int(old.indptr[len(old)])])
    return Dictionary.from_counts(codec, counts).merge(kept)


def copy_tokenizer(source: Source, path: str) -> None:
    """BPE: the source's tokenizer, unchanged, into the new run directory."""
    with open(source.artifact, "rb") as f:
        atomic_write(path, f.read())


def load_weights(model, source: Source) -> None:
    """The source's weights into ``model``; with None, only checked against a model of the source's config (on the
    meta device: nothing allocated)."""
    sd = ckpt.read_state_dict(source.path)
    if model is None:
        import torch  # noqa: PLC0415

        from ..model.transformer import Model  # noqa: PLC0415

        with torch.device("meta"):
            ckpt.check_weights(Model(source.model_config), sd, f"--init-from {source.path}")
        return
    ckpt.load_weights(model, sd, source.path)


def settings(cfg, typed: set[str]):
    """The CLI's config with the source's shape for every shape option not typed (and --baseline bpe for a BPE
    source); unchanged when the run resumes from its own checkpoint (its saved settings already hold the shape)."""
    if not cfg.init_from or _resumes(cfg):
        return cfg
    source = open_source(cfg.init_from)
    m = source.model_config
    new = {k: getattr(m, k) for k in SHAPE_OPTIONS if k not in typed}
    if "baseline" not in typed and not m.tfree:
        new.update(baseline="bpe", bpe_vocab=m.vocab_size)
    return cfg.replace(**new)


def _resumes(cfg) -> bool:
    if not cfg.resume:
        return False
    return cfg.resume != "auto" or ckpt.latest_checkpoint(os.path.abspath(cfg.out_dir)) is not None


def describe(source: Source) -> str:
    step = ckpt.read_meta(source.path, verify=False).get("step")
    return f"initialised from {source.path} (step {step}): its weights, a fresh optimizer and schedule"

