"""A run's settings (TrainConfig, the learning-rate schedule, the process group) and how they persist: saved as
``train_config.json`` in each checkpoint (final/ included), and restored by ``tfree train --resume`` for every
option not given again on the command line (``--save-every``, ``--eval-every``, ``--max-steps``, ...), as
``git commit --amend`` keeps what you don't change."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

import torch

from ..config import TfreeError
from ..model import checkpoint as ckpt

# Changing these on resume would silently train another model or read another stream.
RESUME_FIXED = ("data", "preset", "n_layer", "n_head", "n_embd", "seq_len", "batch_size", "baseline", "bpe_vocab",
                "pos_weight", "chunk_words", "val_bytes", "lr", "warmup", "weight_decay", "od_weight", "od_anneal",
                "oe_orders", "oe_rows", "oe_slices", "oe_distinct", "oe_unigram", "oe_lr_scale", "freeze_body",
                "unfreeze_after", "unfreeze_lr", "init_from")


@dataclass
class TrainConfig:
    data: str
    out_dir: str
    preset: str = "small"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    seq_len: int | None = None
    batch_size: int = 16              # per process; the global batch is batch_size * world size
    max_steps: int | None = None
    max_bytes: float | None = None    # alternative to max_steps: stop after about this many bytes of text
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int | None = None           # random (and printed) unless given
    device: str = "auto"
    dtype: str = "auto"
    eval_every: int | None = None     # 0: only at the end; None: about 10 times in runs of 1,000+ steps
    save_every: int = 0               # 0: only final/
    log_every: int = 10
    val_bytes: int = 65536            # held-out validation text (bytes), chosen independently of the seed
    resume: str | None = None         # "auto" or a checkpoint directory
    baseline: str | None = None       # None (T-FREE) or "bpe"
    bpe_vocab: int = 32000
    pos_weight: float = 100.0
    chunk_words: int = 1024
    compile: bool = False
    progress: bool = True
    keep_last: int = 0                # 0: keep every step-NNNNNN/ checkpoint; N: only the newest N
    logger: tuple = ()                # extra logs beside log.jsonl: "csv", "tensorboard" (report.py)
    plot: bool = True                 # plot.png at each evaluation (needs matplotlib)
    sample_words: int = 24            # a greedy sample of this many words at each evaluation (0: none)
    init_from: str | None = None      # continue a trained model (run or checkpoint) on this data: init_from.py
    od_weight: float = 0.0            # Over-Decoding: > 0 adds a head for the word after next, its loss this weight
    od_anneal: bool = False           # ... the weight falling linearly to 0 over the run (od_weight_at)
    # Over-Encoding (ModelConfig's oe_* fields; docs/training.md): hashed word n-gram tables; () = none
    oe_orders: tuple = ()
    oe_rows: int = 0
    oe_slices: int = 1
    oe_distinct: bool = True
    oe_unigram: bool = True
    oe_lr_scale: float = 1.0          # the tables' learning rate, as a multiple of lr
    freeze_body: bool = False         # train only the embedding, head and final norm (tfree retok: retok.py) ...
    unfreeze_after: int | None = None  # ... until this step, then everything (None: frozen to the end)
    unfreeze_lr: float = 0.3          # after unfreezing: a new warmup and cosine at lr times this

    def __post_init__(self) -> None:
        self.oe_orders = tuple(self.oe_orders)  # a list when read back from train_config.json


def oe_options(cfg) -> dict:
    """The Over-Encoding settings as ModelConfig fields (none for a model without n-gram tables)."""
    if not cfg.oe_orders:
        return {}
    return {"oe_orders": tuple(cfg.oe_orders), "oe_rows": cfg.oe_rows, "oe_slices": cfg.oe_slices,
            "oe_distinct": cfg.oe_distinct, "oe_unigram": cfg.oe_unigram}


# -- devices and processes ----------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist(device_name: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist  # noqa: PLC0415

    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(d.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return d


def reproducible(device) -> None:
    """On the CPU, a run with a seed is bit-reproducible, run to run and across a kill and resume: torch's
    deterministic kernels replace the multi-threaded scatter-adds whose float sums land in a different order each
    run (the index backward of the batch's word embeddings, the loss's index_put_ with accumulate). GPUs are left
    as they are: their deterministic kernels need CUBLAS_WORKSPACE_CONFIG and refuse some ops (docs/training.md)."""
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)


def lr_at(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """Linear warmup, then cosine decay to a tenth of ``lr`` at ``max_steps`` (step counts from 0)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, max_steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def od_weight_at(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """The Over-Decoding loss weight at ``step``: ``od_weight``, or with ``od_anneal`` falling linearly from it at
    step 0 to 0 at ``max_steps`` (small models' next-word loss suffers from a constant extra-token weight)."""
    if not cfg.od_anneal:
        return float(cfg.od_weight)
    return float(cfg.od_weight) * max(0.0, 1.0 - step / max(1, max_steps))


def body_frozen(cfg: TrainConfig, step: int) -> bool:
    """Whether step ``step`` (from 0) trains only the embedding, head and final norm."""
    return bool(cfg.freeze_body) and (cfg.unfreeze_after is None or step < cfg.unfreeze_after)


def lr_for(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """``lr_at``; with the body frozen until ``unfreeze_after``, two schedules: the frozen phase's over its own
    steps, then a fresh warmup and cosine at ``lr * unfreeze_lr`` over the remaining ones."""
    n = cfg.unfreeze_after if cfg.freeze_body else None
    if n is None:
        return lr_at(step, cfg, max_steps)
    if step < n:
        return lr_at(step, cfg, min(n, max_steps))
    return cfg.unfreeze_lr * lr_at(step - n, cfg, max_steps - n)


SETTINGS_FILE = ckpt.SETTINGS_FILE
# Where the run is and how this invocation looks are this command's, never the saved run's: the data path
# and run directory are given anyway, and devices belong to the machine that resumes.
NOT_RESTORED = ("data", "out_dir", "resume", "progress", "device", "compile", "seed")  # the seed: train_state's


def saved_settings(path: str) -> dict:
    """The settings a checkpoint was trained with: its train_config.json, else (checkpoints from before it) the
    copy inside train_state.pt; {} when it holds neither."""
    fpath = os.path.join(path, SETTINGS_FILE)
    if os.path.isfile(fpath):
        try:
            with open(fpath, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            raise TfreeError(f"{fpath}: unreadable ({e})") from None
        if not isinstance(d, dict):
            raise TfreeError(f"{fpath}: not a JSON object")
        return d
    if os.path.isfile(os.path.join(path, "train_state.pt")):
        return dict(ckpt.load_train_state(path).get("train_config", {}))
    return {}


def resume_settings(cfg: TrainConfig, given: set[str]) -> tuple[TrainConfig, dict]:
    """With ``cfg.resume`` set, ``cfg`` with the resumed run's saved value of every setting not in ``given`` (the
    options the user typed); -> (config, the settings restored that differ from ``cfg``'s defaults)."""
    if not cfg.resume:
        return cfg, {}
    src = ckpt.latest_checkpoint(os.path.abspath(cfg.out_dir)) if cfg.resume == "auto" else cfg.resume
    if src is None or not os.path.isdir(src):
        return cfg, {}
    saved = saved_settings(src)
    names = {f.name for f in dataclasses.fields(TrainConfig)} - set(NOT_RESTORED) - set(given)
    changed = {k: saved[k] for k in sorted(names) if k in saved and saved[k] != getattr(cfg, k)}
    for k, v in changed.items():  # the file may say anything: a value of another kind is refused, not restored
        kind = TrainConfig.__dataclass_fields__[k].type
        if not _of_kind(v, kind):
            raise TfreeError(f"{os.path.join(src, SETTINGS_FILE)}: {k} is {v!r}, not {kind}")
    return dataclasses.replace(cfg, **changed), changed


def _of_kind(v, annotation: str) -> bool:
    """Whether a JSON value fits a TrainConfig annotation ("int | None", "float", "tuple", ...)."""
    if v is None:
        return "None" in annotation
    if isinstance(v, bool):
        return annotation.startswith("bool")
    if isinstance(v, (list, tuple)):
        return annotation == "tuple" and all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in v)
    return isinstance(v, {"int": int, "float": (int, float), "str": str}.get(annotation.split(" ")[0], ()))
