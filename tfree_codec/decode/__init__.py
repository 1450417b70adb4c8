"""Scores -> words: takes a model's (B, v) activation scores and a ``Dictionary`` (words with their patterns);
hands on ranked, sampled or spelled words (``Decoder``). ``scorer`` and ``_score`` rank, ``_sample`` draws,
``spell`` spells words the dictionary lacks, ``torch_decoder`` does the same on a GPU."""
from .decoder import Decoded, Decoder
from .dictionary import Dictionary
from .spell import Speller, spell

__all__ = ["Decoded", "Decoder", "Dictionary", "Speller", "spell"]
