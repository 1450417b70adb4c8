"""tfree_codec: a tokenizer-free text codec for language models (T-FREE).

The stages, one sub-package each, in the order the data flows through them:

    text/     text -> words (lossless split/join) -> each word's hashed trigram activation pattern
    shards/   corpora -> Arrow shards on disk (the resumable ``tfree encode`` job) and reading them back
    decode/   scores -> words: dictionaries, the scorer, sampling, spelling, calibrated probabilities
    model/    word patterns (or BPE ids) -> scores: the transformer, its one-position CPU step, checkpoints
    generate/ a checkpoint continues a prompt (``tfree_codec.load().generate(...)``) and scores texts
              (``tfree_codec.load().score([...])``); it never imports train/
    train/    shards -> a trained run: batches, the training loop, calibration, ``tfree eval``

``codec.py`` and ``config.py`` are the public face of the first stage. Importing this package never imports torch:
the names below that need it (``load``, ``LanguageModel``) are resolved on first use.
"""
from __future__ import annotations

import importlib

from .codec import Codec as Codec
from .codec import Encoded as Encoded
from .codec import Lexicon as Lexicon
from .config import CodecConfig as CodecConfig
from .config import TfreeError as TfreeError
from .text.words import EOT as EOT
from .text.words import MARKERS as MARKERS
from .text.words import join as join
from .text.words import split as split

__version__ = "0.1.0"

# name -> the module that defines it, imported when the name is first used (PEP 562)
_LAZY = {
    "Dictionary": "decode.dictionary",
    "Decoder": "decode.decoder",
    "ShardDataset": "shards.reader",
    "encode_to_shards": "shards.writer",
    "Batch": "model.batch",
    "Collator": "model.batch",
    "batch_encode": "model.batch",
    "TfreeEmbedding": "model.layers",
    "TfreeHead": "model.layers",
    "LanguageModel": "generate",
    "load": "generate",
}

__all__ = ["Codec", "CodecConfig", "EOT", "Encoded", "Lexicon", "MARKERS", "TfreeError", "join", "split", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfree_codec' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
