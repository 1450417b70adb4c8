"""Which device a model runs on, and the autocast context that suits it: shared by training, evaluation and
generation (so none of them imports another for it)."""
from __future__ import annotations

import contextlib

import torch

from ..config import TfreeError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TfreeError("--device cuda: no CUDA device is available (this torch build or machine has none)")
        return torch.device("cuda", local_rank)
    if name in ("cpu", "mps"):
        return torch.device(name)
    raise TfreeError(f"unknown device {name!r} (auto, cpu, cuda, mps)")


def autocast_for(device: torch.device, dtype: str):
    """A bf16 autocast context where it helps (and is supported), else a null context; 'auto' = bf16 on CUDA
    devices that support it, float32 elsewhere (CPU bf16 autocast is slower than float32 on most CPUs)."""
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    if dtype == "float32":
        return contextlib.nullcontext, "float32"
    if dtype != "bfloat16":
        raise TfreeError(f"--dtype {dtype}: use auto, float32 or bfloat16")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TfreeError("--dtype bfloat16: this GPU does not support bf16")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), "bfloat16"
