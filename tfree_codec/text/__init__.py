"""Stage 1, text -> words -> patterns: takes any Python string; hands on its words (``words.split``, lossless with
``words.join``) and each word's hashed character-trigram activation rows (``trigrams``). ``_kernels`` is the numba
core, ``_reference`` the slow, readable twin it is tested against, ``_unicode`` the character classes."""
from .markers import EOT, MARKERS
from .words import join, split

__all__ = ["EOT", "MARKERS", "join", "split"]
