"""Checks of a training run that refuse in one line: options before any work, the data a resumed run reads, a
diverged model before it is saved (issue 13; the fault suite in tests/faults exercises each)."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from ..config import TfreeError
from ..model.transformer import ModelConfig


def validate(cfg) -> None:
    """Refuse nonsense options in one line before any work (reading data, writing the run directory)."""
    def bad(name, value, want):
        raise TfreeError(f"--{name.replace('_', '-')} must be {want}, not {value!r}")

    for name in ("lr", "pos_weight"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            bad(name, v, "a positive number")
    for name in ("weight_decay", "grad_clip"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            bad(name, v, "a non-negative number")
    for name in ("batch_size", "chunk_words", "bpe_vocab"):
        if getattr(cfg, name) < 1:
            bad(name, getattr(cfg, name), "at least 1")
    for name in ("max_steps", "seq_len", "n_layer", "n_head", "n_embd"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            bad(name, getattr(cfg, name), "at least 1")
    if cfg.unfreeze_after is not None and cfg.unfreeze_after < 1:
        bad("unfreeze_after", cfg.unfreeze_after, "at least 1")
    if not (math.isfinite(cfg.unfreeze_lr) and cfg.unfreeze_lr > 0):
        bad("unfreeze_lr", cfg.unfreeze_lr, "a positive number")
    if cfg.max_bytes is not None and not cfg.max_bytes > 0:
        bad("max_bytes", cfg.max_bytes, "positive")
    for name in ("warmup", "eval_every", "save_every", "log_every", "val_bytes"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 0:  # eval_every None: chosen from the length
            bad(name, getattr(cfg, name), "at least 0")
    # the model's shape (heads dividing the width, ...) before a dictionary or tokenizer is written for it
    ModelConfig.from_preset(cfg.preset, mode="bpe" if cfg.baseline else "tfree", vocab_size=16, seq_len=cfg.seq_len,
                            n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, pos_weight=cfg.pos_weight)


def data_fingerprint(units) -> str:
    """What the data cursor indexes into: a re-encoded or edited data folder changes it."""
    h = hashlib.sha256()
    for a in (units.doc, units.start, units.stop, units.last, units.n_bytes):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def check_finite(run, loss=None) -> None:
    """A diverged model (nan/inf loss or weights) is not saved: the last good checkpoint stays the newest."""
    if (loss is not None and not math.isfinite(float(loss))) or not all(
            bool(torch.isfinite(p).all()) for p in run.model.parameters()):
        raise TfreeError(f"training diverged at step {run.step} (the loss or the weights are nan/inf): nothing was "
                         "saved for it; lower --lr or raise --warmup")
