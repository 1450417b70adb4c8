"""The marker words (SPEC section 1): end-of-text, a missing space, and runs of spaces and newlines.

Kept apart from ``words`` because the split kernels need the ids too, and ``words`` imports the kernels.
"""
from __future__ import annotations

# Marker word ids, shared with the kernels: 0 end-of-text, 1 <|no_ws|>, then spaces 1, 2, 4, .., 64, then newlines.
N_POW = 7  # runs of 2**0 .. 2**6 merge into one marker
NO_WS_ID, WS_BASE, NL_BASE = 1, 2, 2 + N_POW
N_MARKERS = 2 + 2 * N_POW

EOT = "<|endoftext|>"
NO_WS = "<|no_ws|>"
MARKERS: tuple[str, ...] = (
    EOT,
    NO_WS,
    *("<|ws|>" if q == 0 else f"<|{1 << q}<-ws->|>" for q in range(N_POW)),
    *("<|\n|>" if q == 0 else f"<|{1 << q}<-\n->|>" for q in range(N_POW)),
)
MARKER_TEXT: tuple[str, ...] = ("", "", *(" " * (1 << q) for q in range(N_POW)), *("\n" * (1 << q) for q in range(N_POW)))
MARKER_ID = {w: i for i, w in enumerate(MARKERS)}
MARKERS_UTF8 = "".join(MARKERS).encode("utf-8")  # the markers' bytes one after the other, and where each starts
MARKERS_UTF8_OFFSETS = tuple(sum(len(m.encode("utf-8")) for m in MARKERS[:i]) for i in range(N_MARKERS + 1))
assert len(MARKERS) == N_MARKERS
