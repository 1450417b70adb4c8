"""Data shipped with the package: Unicode tables and a small public-domain English sample.

``sample_en.txt.xz``: the first 1.5 MB of the project's english_prose corpus (Jane Austen's *Emma* and the start of
*Mansfield Park*, public domain, from Project Gutenberg).
"""
from __future__ import annotations

import lzma
import os

SAMPLE_EN = os.path.join(os.path.dirname(__file__), "sample_en.txt.xz")


def sample_text(max_chars: int | None = None) -> str:
    """The bundled English sample (public domain), optionally cut to ``max_chars`` at a line end."""
    with lzma.open(SAMPLE_EN, "rt", encoding="utf-8") as f:
        text = f.read()
    if max_chars is not None and len(text) > max_chars:
        text = text[:text.rfind("\n", 0, max_chars) + 1 or max_chars]
    return text
