"""``tfree train --config FILE``: a run's settings from a YAML or JSON file, as litgpt and nanoGPT take them.

The keys are ``TrainConfig``'s flat names (``max_steps`` or ``max-steps``; ``TrainConfig.names()``), exactly what
every checkpoint's ``train_config.json`` holds, so a finished run's file starts the same run again (``--config
RUN/final/train_config.json -o RUN2``) and a hand-written one needs only the settings that differ from the
defaults. Options typed on the command line override the file. A run's saved file leaves out a BCE run's objective
(it predates the word objective's default), so there a missing objective is ``bce``, as ``--resume`` reads it; in
a hand-written file it is the default, ``word``.
"""
from __future__ import annotations

import json
import os

from ..config import TfreeError
from .settings import TrainConfig


def read_settings(path: str) -> dict:
    """{TrainConfig flat name: value} of a YAML (``.yaml``/``.yml``) or JSON file; anything else is one TfreeError
    naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TfreeError(f"cannot read the config {path}: {getattr(e, 'strerror', None) or e}") from None
    if os.path.splitext(path)[1].lower() in (".yaml", ".yml"):
        try:
            import yaml  # noqa: PLC0415
        except ImportError:
            raise TfreeError(f"{path}: reading YAML needs PyYAML (pip install 'tfree-codec[train]'), or give "
                             "the settings as JSON") from None
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise TfreeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    else:
        try:
            d = json.loads(text)
        except ValueError as e:
            raise TfreeError(f"{path}: not valid JSON ({e}); YAML files end in .yaml or .yml") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise TfreeError(f"{path}: a config is a mapping of settings to values, not a {type(d).__name__}")
    fields = TrainConfig.names()
    out = {}
    for key, value in d.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise TfreeError(f"{path}: unknown setting {key!r} (the settings are tfree train's options, as "
                             "a run's train_config.json holds them)")
        out[name] = value
    if "out_dir" in out:  # a run's own train_config.json (a hand-written config leaves -o to the command line):
        out.setdefault("objective", "bce")  # its file leaves a BCE run's objective out, as --resume reads it
    return out
