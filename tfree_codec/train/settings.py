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
RESUME_FIXED = ("data", "preset", "n_layer", "n_head", "n_embd", "seq_len", "batch_size", "grad_accum", "baseline",
                "bpe_vocab", "pos_weight", "chunk_words", "val_bytes", "lr", "warmup", "weight_decay", "od_weight",
                "od_anneal", "oe_orders", "oe_rows", "oe_slices", "oe_distinct", "oe_unigram", "oe_lr_scale",
                "freeze_body", "unfreeze_after", "unfreeze_lr", "objective", "word_budget", "mix_bce", "init_from")


def resume_differences(old: dict, now: dict) -> list[str]:
    """The fixed settings (RESUME_FIXED) in which a checkpoint's saved settings ``old`` and this run's ``now``
    differ, as "name old -> new". ``init_from`` inside its run folder (tfree retok's OUT/init) is compared by its
    place in the folder, not its absolute path, so a retok run that was moved or copied still resumes."""
    def seen(d: dict, k: str):
        v, out = d.get(k), d.get("out_dir")
        if k == "init_from" and isinstance(v, str) and isinstance(out, str):
            rel = os.path.relpath(os.path.abspath(v), os.path.abspath(out))
            if rel != ".." and not rel.startswith(".." + os.sep):
                return ("in the run folder", rel)
        return v

    return [f"{k} {old.get(k)!r} -> {now[k]!r}" for k in RESUME_FIXED if k in old and seen(old, k) != seen(now, k)]

@dataclass(frozen=True)
class Shape:
    """The model: a preset, the overrides of its size, and T-FREE or the BPE baseline."""

    preset: str = "small"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    seq_len: int | None = None
    baseline: str | None = None       # None (T-FREE) or "bpe"
    bpe_vocab: int = 32000
    pos_weight: float = 100.0
    objective: str = "word"           # what the T-FREE head trains for: "word", "bce", "mix" (model/word_head.py)
    word_budget: int = 4096           # dictionary words scored exactly per step (past it: a sampled softmax)
    mix_bce: float = 0.1              # "mix": the BCE term's weight beside the word objective

    def __post_init__(self):
        # The BPE baseline has a softmax head of its own: the T-FREE default objective does not apply to it (an
        # explicit word objective with --baseline is refused by train/checks.py; "bce" is what its files record).
        if self.baseline and self.objective == "word":
            object.__setattr__(self, "objective", "bce")


@dataclass(frozen=True)
class Optimiser:
    """AdamW and its schedule: how big a step, how many, how fast."""

    batch_size: int = 16              # per process; the global batch is batch_size * grad_accum * world size
    grad_accum: int = 1               # batches whose gradients make one optimizer step
    max_steps: int | None = None
    max_bytes: float | None = None    # alternative to max_steps: stop after about this many bytes of text
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0


@dataclass(frozen=True)
class Data:
    """What the run reads: a shard directory or a text file, cut into units, a slice held out."""

    path: str = ""                    # the CLI's DATA ("data" in train_config.json)
    val_bytes: int = 65536            # held-out validation text (bytes), chosen independently of the seed
    chunk_words: int = 1024


@dataclass(frozen=True)
class Logging:
    """What the run shows and keeps as it goes."""

    eval_every: int | None = None     # 0: only at the end; None: about 10 times in runs of 1,000+ steps
    save_every: int = 0               # 0: only final/
    log_every: int = 10
    keep_last: int = 0                # 0: keep every step-NNNNNN/ checkpoint; N: only the newest N
    logger: tuple = ()                # extra logs beside log.jsonl: "csv", "tensorboard", "wandb" (report.py)
    plot: bool = True                 # plot.png at each evaluation (needs matplotlib)
    sample_words: int = 24            # a greedy sample of this many words at each evaluation (0: none)
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "logger", tuple(self.logger))  # a list when read back from train_config.json


@dataclass(frozen=True)
class Extras:
    """Beyond a plain T-FREE run (``TrainConfig.extras``; None for none of it): Over-Decoding, Over-Encoding
    (ModelConfig's oe_* fields; docs/training.md) and a frozen body (tfree retok: retok.py)."""

    od_weight: float = 0.0            # Over-Decoding: > 0 adds a head for the word after next, its loss this weight
    od_anneal: bool = False           # ... the weight falling linearly to 0 over the run (od_weight_at)
    oe_orders: tuple = ()             # Over-Encoding: hashed word n-gram tables of these orders; () = none
    oe_rows: int = 0
    oe_slices: int = 1
    oe_distinct: bool = True
    oe_unigram: bool = True
    oe_lr_scale: float = 1.0          # the tables' learning rate, as a multiple of lr
    freeze_body: bool = False         # train only the embedding, head and final norm ...
    unfreeze_after: int | None = None  # ... until this step, then everything (None: frozen to the end)
    unfreeze_lr: float = 0.3          # after unfreezing: a new warmup and cosine at lr times this

    def __post_init__(self) -> None:
        object.__setattr__(self, "oe_orders", tuple(self.oe_orders))  # a list when read back from train_config.json


PLAIN = Extras()
_GROUPS = {"shape": Shape, "optimiser": Optimiser, "data": Data, "logging": Logging, "extras": Extras}
_FLAT_NAME = {("data", "path"): "data"}  # the rest: a setting's flat name is its field's


@dataclass(frozen=True)
class TrainConfig:
    """A run's settings, one frozen object in groups; the CLI, train_config.json and ``--resume`` know them by
    their flat names (``--lr`` is ``lr``: ``TrainConfig.of(data=..., out_dir=..., lr=...)``, ``flat()``)."""

    out_dir: str
    data: Data
    shape: Shape = Shape()
    optimiser: Optimiser = Optimiser()
    logging: Logging = Logging()
    extras: Extras | None = None
    seed: int | None = None           # random (and printed) unless given
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    resume: str | None = None         # "auto" or a checkpoint directory
    init_from: str | None = None      # continue a trained model (run or checkpoint) on this data: init_from.py

    @classmethod
    def of(cls, **flat) -> "TrainConfig":
        """From flat settings (``data``, ``out_dir``, ``lr``, ``oe_orders``, ...); an unknown name is refused."""
        groups = {g: {} for g in _GROUPS}
        top = {}
        where = _where()
        for name, value in flat.items():
            if name not in where:
                raise TypeError(f"TrainConfig has no setting {name!r}")
            group, field = where[name]
            (groups[group] if group else top)[field] = value
        made = {g: _GROUPS[g](**kw) for g, kw in groups.items()}
        if made["extras"] == PLAIN:
            made["extras"] = None
        return cls(**top, **made)

    def flat(self) -> dict:
        """Every setting by its flat name (train_config.json; the extras' defaults when there are none)."""
        out = {"out_dir": self.out_dir}
        for g in _GROUPS:
            group = getattr(self, g) or PLAIN
            out.update({_FLAT_NAME.get((g, f.name), f.name): getattr(group, f.name) for f in dataclasses.fields(group)})
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.name not in _GROUPS and f.name != "out_dir"})
        return out

    @classmethod
    def names(cls) -> frozenset:
        """Every setting's flat name (what ``of`` takes, ``flat`` gives and train_config.json holds)."""
        return frozenset(_where())

    def replace(self, **flat) -> "TrainConfig":
        """This config with the flat settings given changed."""
        return TrainConfig.of(**{**self.flat(), **flat})

    @property
    def mode(self) -> str:
        """The ModelConfig mode this run trains: the BPE baseline or T-FREE."""
        return self.shape.baseline or "tfree"


def _where() -> dict:
    """Flat name -> (group or None, field)."""
    out = {f.name: (None, f.name) for f in dataclasses.fields(TrainConfig) if f.name not in _GROUPS}
    for g, kind in _GROUPS.items():
        out.update({_FLAT_NAME.get((g, f.name), f.name): (g, f.name) for f in dataclasses.fields(kind)})
    return out


def model_config(cfg: TrainConfig, vocab_size: int, seq_len: int | None = None, od: bool = False):
    """The ModelConfig these settings ask for: the preset, its overrides, the mode and the Over-Encoding tables."""
    from ..model.transformer import ModelConfig  # noqa: PLC0415

    s = cfg.shape
    return ModelConfig.from_preset(s.preset, mode=cfg.mode, vocab_size=vocab_size, seq_len=seq_len or s.seq_len,
                                   n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd, pos_weight=s.pos_weight,
                                   od=od, **oe_options(cfg), **objective_options(cfg))


def settings_to_save(cfg: TrainConfig) -> dict:
    """train_config.json's settings: ``flat()``, less the objective's fields where it is BCE and ``grad_accum``
    where it is 1 (so a plain run's file is as before those settings existed; a missing field reads back as its
    default)."""
    out = cfg.flat()
    if out["objective"] == "bce":
        for name in ("objective", "word_budget", "mix_bce"):
            del out[name]
    if out["grad_accum"] == 1:
        del out["grad_accum"]
    return out


def objective_options(cfg: TrainConfig) -> dict:
    """The objective's ModelConfig fields (a BPE baseline has only its softmax)."""
    s = cfg.shape
    if s.baseline:
        return {}
    return {"objective": s.objective, "word_budget": s.word_budget, "mix_bce": float(s.mix_bce)}


def oe_options(cfg: TrainConfig) -> dict:
    """The Over-Encoding settings as ModelConfig fields (none for a model without n-gram tables)."""
    x = cfg.extras or PLAIN
    if not x.oe_orders:
        return {}
    return {"oe_orders": tuple(x.oe_orders), "oe_rows": x.oe_rows, "oe_slices": x.oe_slices,
            "oe_distinct": x.oe_distinct, "oe_unigram": x.oe_unigram}


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
    o = cfg.optimiser
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    frac = min(1.0, (step - o.warmup) / max(1, max_steps - o.warmup))
    return o.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def od_weight_at(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """The Over-Decoding loss weight at ``step``: ``od_weight``, or with ``od_anneal`` falling linearly from it at
    step 0 to 0 at ``max_steps`` (small models' next-word loss suffers from a constant extra-token weight)."""
    x = cfg.extras or PLAIN
    if not x.od_anneal:
        return float(x.od_weight)
    return float(x.od_weight) * max(0.0, 1.0 - step / max(1, max_steps))


def body_frozen(cfg: TrainConfig, step: int) -> bool:
    """Whether step ``step`` (from 0) trains only the embedding, head and final norm."""
    x = cfg.extras or PLAIN
    return bool(x.freeze_body) and (x.unfreeze_after is None or step < x.unfreeze_after)


def lr_for(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """``lr_at``; with the body frozen until ``unfreeze_after``, two schedules: the frozen phase's over its own
    steps, then a fresh warmup and cosine at ``lr * unfreeze_lr`` over the remaining ones."""
    x = cfg.extras or PLAIN
    n = x.unfreeze_after if x.freeze_body else None
    if n is None:
        return lr_at(step, cfg, max_steps)
    if step < n:
        return lr_at(step, cfg, min(n, max_steps))
    return x.unfreeze_lr * lr_at(step - n, cfg, max_steps - n)


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
    if os.path.isfile(os.path.join(path, ckpt.TRAIN_STATE_FILE)):
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
    saved, now = saved_settings(src), cfg.flat()
    if saved:
        saved.setdefault("objective", "bce")  # a BCE run's file leaves it out (and runs from before it existed)
    names = set(now) - set(NOT_RESTORED) - set(given)
    changed = {k: saved[k] for k in sorted(names) if k in saved and saved[k] != now[k]}
    for k, v in changed.items():  # the file may say anything: a value of another kind is refused, not restored
        kind = _annotation(k)
        if not _of_kind(v, kind):
            raise TfreeError(f"{os.path.join(src, SETTINGS_FILE)}: {k} is {v!r}, not {kind}")
    return cfg.replace(**changed), changed


def _annotation(name: str) -> str:
    """The annotation of the setting of flat name ``name`` ("int | None", "float", "tuple", ...)."""
    group, field = _where()[name]
    return (_GROUPS[group] if group else TrainConfig).__dataclass_fields__[field].type


def _of_kind(v, annotation: str) -> bool:
    """Whether a JSON value fits a TrainConfig annotation ("int | None", "float", "tuple", ...)."""
    if v is None:
        return "None" in annotation
    if isinstance(v, bool):
        return annotation.startswith("bool")
    if isinstance(v, (list, tuple)):
        return annotation == "tuple" and all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in v)
    return isinstance(v, {"int": int, "float": (int, float), "str": str}.get(annotation.split(" ")[0], ()))
