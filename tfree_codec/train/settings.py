"""A run's own settings: saved as ``train_config.json`` in each checkpoint (final/ included), and restored by
``tfree train --resume`` for every option not given again on the command line (``--save-every``, ``--eval-every``,
``--max-steps``, ...), as ``git commit --amend`` keeps what you don't change."""
from __future__ import annotations

import dataclasses
import json
import os

from ..config import TfreeError
from ..model import checkpoint as ckpt
from .loop import TrainConfig

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
    return dataclasses.replace(cfg, **changed), changed
