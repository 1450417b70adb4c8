"""Checks of a training run that refuse in one line: options before any work, the data a resumed run reads, a
diverged model before it is saved (issue 13; the fault suite in tests/faults exercises each)."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from ..config import TfreeError
from ..model.transformer import ModelConfig
from .settings import model_config


def validate(cfg) -> None:
    """Refuse nonsense options in one line before any work (reading data, writing the run directory), each by the
    name the CLI gives it."""
    f = cfg.flat()

    def bad(name, value, want):
        raise TfreeError(f"--{name.replace('_', '-')} must be {want}, not {value!r}")

    if f["baseline"] not in (None, "bpe"):
        raise TfreeError(f"unknown baseline {f['baseline']!r} (bpe)")
    for name in ("lr", "pos_weight"):
        v = f[name]
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            bad(name, v, "a positive number")
    for name in ("weight_decay", "grad_clip"):
        v = f[name]
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            bad(name, v, "a non-negative number")
    for name in ("batch_size", "grad_accum", "chunk_words", "bpe_vocab"):
        if f[name] < 1:
            bad(name, f[name], "at least 1")
    for name in ("max_steps", "seq_len", "n_layer", "n_head", "n_embd"):
        if f[name] is not None and f[name] < 1:
            bad(name, f[name], "at least 1")
    if f["unfreeze_after"] is not None and f["unfreeze_after"] < 1:
        bad("unfreeze_after", f["unfreeze_after"], "at least 1")
    if f["unfreeze_after"] is not None and f["max_steps"] is not None:
        check_unfreeze(f["unfreeze_after"], f["max_steps"])
    if not (math.isfinite(f["unfreeze_lr"]) and f["unfreeze_lr"] > 0):
        bad("unfreeze_lr", f["unfreeze_lr"], "a positive number")
    if f["max_bytes"] is not None and not f["max_bytes"] > 0:
        bad("max_bytes", f["max_bytes"], "positive")
    if f["val_bytes"] < 1:  # no held-out slice: no validation bits per byte, and no calibration fitted for decoding
        bad("val_bytes", f["val_bytes"], "at least 1 (the held-out text that validates and calibrates the model)")
    for name in ("warmup", "eval_every", "save_every", "log_every"):
        if f[name] is not None and f[name] < 0:  # eval_every None: chosen from the length
            bad(name, f[name], "at least 0")
    validate_oe(f)
    od = f["od_weight"]
    if not (isinstance(od, (int, float)) and math.isfinite(od) and od >= 0):
        bad("od_weight", od, "a non-negative number")
    if f["od_anneal"] and not od:
        raise TfreeError("--od-anneal anneals the Over-Decoding loss: give --od-weight W > 0 with it")
    if f["objective"] != "bce" and f["baseline"]:
        raise TfreeError(f"--objective {f['objective']}: the word objective needs a T-FREE model, not --baseline bpe")
    if od and f["baseline"]:
        raise TfreeError("--od-weight: Over-Decoding needs a T-FREE model, not --baseline bpe")
    # the model's shape (heads dividing the width, ...) before a dictionary or tokenizer is written for it
    model_config(cfg, vocab_size=16, od=od > 0)


def check_unfreeze(unfreeze_after: int, max_steps: int) -> None:
    """--unfreeze-after must fall inside the run, or the body never unfreezes (and the second schedule is empty)."""
    if unfreeze_after >= max_steps:
        raise TfreeError(f"--unfreeze-after {unfreeze_after} is not before the run's last step ({max_steps} steps): "
                         "give a smaller step, or leave it out to keep the body frozen")


def validate_oe(f: dict) -> None:
    """The Over-Encoding options (``TrainConfig.flat()``), named as the CLI spells them."""
    orders = tuple(f["oe_orders"])
    if not orders:
        if f["oe_rows"] or f["oe_slices"] != 1 or not f["oe_distinct"] or not f["oe_unigram"] or f["oe_lr_scale"] != 1:
            raise TfreeError("--oe-rows, --oe-slices, --oe-lr-scale, --oe-shared-moduli and --oe-no-unigram need "
                             "--oe-orders (the n-gram orders, e.g. 2,3)")
        return
    if not (isinstance(f["oe_lr_scale"], (int, float)) and math.isfinite(f["oe_lr_scale"]) and f["oe_lr_scale"] > 0):
        raise TfreeError(f"--oe-lr-scale must be a positive number, not {f['oe_lr_scale']!r}")
    if f["baseline"]:
        raise TfreeError("--oe-orders needs a T-FREE model, not --baseline bpe")
    if not all(isinstance(n, int) and 2 <= n <= 8 for n in orders) or len(set(orders)) != len(orders):
        raise TfreeError(f"--oe-orders must be distinct n-gram orders from 2 to 8 (e.g. 2,3), not {list(orders)}")
    if not (isinstance(f["oe_rows"], int) and 2 <= f["oe_rows"] <= 2**31 - 1):
        raise TfreeError(f"--oe-rows must be a table size from 2 to 2^31 - 1 (e.g. 262144), not {f['oe_rows']!r}"
                         if f["oe_rows"] else "--oe-orders needs --oe-rows (rows per n-gram table, e.g. 262144)")
    width = f["n_embd"] or ModelConfig.from_preset(f["preset"]).n_embd
    most = min(64, width) // len(orders)
    if not (isinstance(f["oe_slices"], int) and 1 <= f["oe_slices"] <= most):
        raise TfreeError(f"--oe-slices must be from 1 to {most} with {len(orders)} order(s) and width {width} "
                         f"(each slice is width / (orders x slices) wide), not {f['oe_slices']!r}")


def data_fingerprint(units) -> str:
    """What the data cursor indexes into: a re-encoded or edited data folder changes it."""
    h = hashlib.sha256()
    for a in (units.doc, units.start, units.stop, units.last, units.n_bytes):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def check_finite(model, step: int, loss=None) -> None:
    """A diverged model (nan/inf loss or weights) is not saved: the last good checkpoint stays the newest."""
    if (loss is not None and not math.isfinite(float(loss))) or not all(
            bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise TfreeError(f"training diverged at step {step} (the loss or the weights are nan/inf): nothing was "
                         "saved for it; lower --lr or raise --warmup")

