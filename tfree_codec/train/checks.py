"""Checks of a training run that refuse in one line: options before any work, the data a resumed run reads, a
diverged model before it is saved (issue 13; the fault suite in tests/faults exercises each)."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from ..config import TfreeError
from ..model.transformer import ModelConfig
from .settings import oe_options


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
    if cfg.unfreeze_after is not None and cfg.max_steps is not None:
        check_unfreeze(cfg.unfreeze_after, cfg.max_steps)
    if not (math.isfinite(cfg.unfreeze_lr) and cfg.unfreeze_lr > 0):
        bad("unfreeze_lr", cfg.unfreeze_lr, "a positive number")
    if cfg.max_bytes is not None and not cfg.max_bytes > 0:
        bad("max_bytes", cfg.max_bytes, "positive")
    if cfg.val_bytes < 1:  # no held-out slice: no validation bits per byte, and no calibration fitted for decoding
        bad("val_bytes", cfg.val_bytes, "at least 1 (the held-out text that validates and calibrates the model)")
    for name in ("warmup", "eval_every", "save_every", "log_every"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 0:  # eval_every None: chosen from the length
            bad(name, getattr(cfg, name), "at least 0")
    validate_oe(cfg)
    od = cfg.od_weight
    if not (isinstance(od, (int, float)) and math.isfinite(od) and od >= 0):
        bad("od_weight", od, "a non-negative number")
    if cfg.od_anneal and not od:
        raise TfreeError("--od-anneal anneals the Over-Decoding loss: give --od-weight W > 0 with it")
    if od and cfg.baseline:
        raise TfreeError("--od-weight: Over-Decoding needs a T-FREE model, not --baseline bpe")
    # the model's shape (heads dividing the width, ...) before a dictionary or tokenizer is written for it
    ModelConfig.from_preset(cfg.preset, mode="bpe" if cfg.baseline else "tfree", vocab_size=16, seq_len=cfg.seq_len,
                            n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, pos_weight=cfg.pos_weight,
                            od=od > 0, **oe_options(cfg))


def check_unfreeze(unfreeze_after: int, max_steps: int) -> None:
    """--unfreeze-after must fall inside the run, or the body never unfreezes (and the second schedule is empty)."""
    if unfreeze_after >= max_steps:
        raise TfreeError(f"--unfreeze-after {unfreeze_after} is not before the run's last step ({max_steps} steps): "
                         "give a smaller step, or leave it out to keep the body frozen")


def validate_oe(cfg) -> None:
    """The Over-Encoding options, named as the CLI spells them."""
    orders = tuple(cfg.oe_orders)
    if not orders:
        if cfg.oe_rows or cfg.oe_slices != 1 or not cfg.oe_distinct or not cfg.oe_unigram or cfg.oe_lr_scale != 1:
            raise TfreeError("--oe-rows, --oe-slices, --oe-lr-scale, --oe-shared-moduli and --oe-no-unigram need "
                             "--oe-orders (the n-gram orders, e.g. 2,3)")
        return
    if not (isinstance(cfg.oe_lr_scale, (int, float)) and math.isfinite(cfg.oe_lr_scale) and cfg.oe_lr_scale > 0):
        raise TfreeError(f"--oe-lr-scale must be a positive number, not {cfg.oe_lr_scale!r}")
    if cfg.baseline:
        raise TfreeError("--oe-orders needs a T-FREE model, not --baseline bpe")
    if not all(isinstance(n, int) and 2 <= n <= 8 for n in orders) or len(set(orders)) != len(orders):
        raise TfreeError(f"--oe-orders must be distinct n-gram orders from 2 to 8 (e.g. 2,3), not {list(orders)}")
    if not (isinstance(cfg.oe_rows, int) and 2 <= cfg.oe_rows <= 2**31 - 1):
        raise TfreeError(f"--oe-rows must be a table size from 2 to 2^31 - 1 (e.g. 262144), not {cfg.oe_rows!r}"
                         if cfg.oe_rows else "--oe-orders needs --oe-rows (rows per n-gram table, e.g. 262144)")
    width = cfg.n_embd or ModelConfig.from_preset(cfg.preset).n_embd
    most = min(64, width) // len(orders)
    if not (isinstance(cfg.oe_slices, int) and 1 <= cfg.oe_slices <= most):
        raise TfreeError(f"--oe-slices must be from 1 to {most} with {len(orders)} order(s) and width {width} "
                         f"(each slice is width / (orders x slices) wide), not {cfg.oe_slices!r}")


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


def _number(v, lo=-math.inf, hi=math.inf) -> bool:
    """A finite int or float (not a bool, not nan) strictly between ``lo`` and ``hi``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and lo < v < hi


CALIBRATION_FIELDS = {  # evaluate.Calibration's fields: (check, what it wants)
    "temperature": (lambda v: _number(v, 0), "a positive number"),
    "temperature_plain": (lambda v: _number(v, 0), "a positive number"),
    "prior_weight": (_number, "a number"), "zero_count_weight": (_number, "a number"),
    "p_unk": (lambda v: _number(v, 0, 1), "a number between 0 and 1"),
    "unk_charge": (lambda v: v in ("spell", "bytes"), "'spell' or 'bytes'"),
    "spell_order": (lambda v: isinstance(v, int) and _number(v, 0, 17), "an integer from 1 to 16")}


def check_calibration(d) -> None:
    """A calibration (calibration.json, or a checkpoint's train state) of the right kinds, else one TfreeError."""
    if not isinstance(d, dict):
        raise TfreeError("a calibration must be a JSON object")
    for k, (ok, want) in CALIBRATION_FIELDS.items():
        if k in d and not ok(d[k]):
            raise TfreeError(f"{k} must be {want}, not {d[k]!r}")
