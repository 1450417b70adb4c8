"""Habits users bring from HF, litgpt and nanoGPT: `tfree train --config FILE` (YAML or JSON, a run's own
train_config.json included, flags winning), gradient accumulation, the W&B logger (a stand-in module: no
network), `return_tensors` as HF tokenizers take it, and py.typed."""
import json
import os
import sys
import types

import pytest
import torch
from click.testing import CliRunner

from tfree_cli.main import main
from tfree_codec import Codec, TfreeError, batch_encode
from tfree_codec.model.weights import load_weights_file

# A hand-written config: only what differs from the defaults; `-` or `_` in the names alike.
CONFIG = """# tiny and fast
preset: tiny
n-layer: 1
n_head: 2
n_embd: 32
seq_len: 16
batch_size: 8
max_steps: 2
warmup: 2
lr: 3.0e-3
val_bytes: 400
log_every: 1
seed: 5
plot: false
sample_words: 0
device: cpu
"""


def tfree(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


class FakeWandb(types.ModuleType):
    """What the logger calls of wandb: init(...) -> a run with log(...) and finish()."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kw):
        self.inits.append(kw)
        return self

    def log(self, data, step):
        self.logged.append((step, data))

    def finish(self):
        self.finished += 1


@pytest.fixture(scope="module")
def runs(make_tiny_shards, tmp_path_factory):
    """Run A from a YAML config (batch 8); run B from A's saved train_config.json with flags: batch 4 twice per
    step (--grad-accum 2), logging to a stand-in wandb."""
    shards = make_tiny_shards(seed=6)
    tmp = tmp_path_factory.mktemp("habits")
    (tmp / "a.yaml").write_text(CONFIG, encoding="utf-8")
    tfree("train", shards, "--config", tmp / "a.yaml", "-o", tmp / "a", "-q")
    fake = FakeWandb()
    saved, sys.modules["wandb"] = sys.modules.get("wandb"), fake
    try:
        tfree("train", "--config", tmp / "a" / "final" / "train_config.json", "-o", tmp / "b", "--batch-size", 4,
              "--grad-accum", 2, "--logger", "wandb", "-q")
    finally:
        sys.modules.pop("wandb")
        if saved is not None:
            sys.modules["wandb"] = saved
    return tmp, fake


def settings(run):
    return json.loads((run / "final" / "train_config.json").read_text())


def test_a_yaml_config_sets_the_run_and_flags_win(runs):
    tmp, _ = runs
    a, b = settings(tmp / "a"), settings(tmp / "b")
    assert (a["n_layer"], a["seq_len"], a["batch_size"], a["lr"], a["seed"], a["plot"]) == (1, 16, 8, 3e-3, 5, False)
    assert (b["batch_size"], b["grad_accum"], b["logger"]) == (4, 2, ["wandb"])  # typed: they win over the file
    same = {k: v for k, v in a.items() if k not in ("out_dir", "batch_size", "grad_accum", "logger", "progress")}
    assert same == {k: b[k] for k in same}  # the rest came from A's saved settings, DATA included


def test_accumulating_two_half_batches_is_one_whole_batch(runs):
    tmp, _ = runs
    wa = load_weights_file(str(tmp / "a" / "final" / "model.safetensors"))
    wb = load_weights_file(str(tmp / "b" / "final" / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=2e-5) for k in wa)
    la = [json.loads(x) for x in (tmp / "a" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la if "loss" in r] == pytest.approx([r["loss"] for r in lb if "loss" in r], rel=1e-4)
    # bytes seen are whole bytes in the log and the checkpoint (the step's share of each document, rounded)
    meta = json.loads((tmp / "b" / "final" / "checkpoint.json").read_text())
    assert all(type(r["bytes_seen"]) is int for r in la + lb) and type(meta["bytes_seen"]) is int


def test_the_wandb_logger_gets_the_settings_and_every_record(runs):
    tmp, fake = runs
    (init,) = fake.inits
    assert init["name"] == "b" and init["config"]["grad_accum"] == 2 and init["config"]["seed"] == 5
    assert init["resume"] == "allow" and init["dir"] == str(tmp / "b")
    steps = [s for s, _ in fake.logged]
    assert steps[:2] == [1, 2] and all("loss" in d for s, d in fake.logged[:2]) and fake.finished == 1


def test_a_bad_config_is_one_line(tmp_path):
    (tmp_path / "c.json").write_text('{"max_stepz": 3}')
    r = CliRunner().invoke(main, ["train", "--config", str(tmp_path / "c.json"), "-o", str(tmp_path / "r")])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        f"Error: {tmp_path / 'c.json'}: unknown setting 'max_stepz' (the settings are tfree train's options, as a "
        "run's train_config.json holds them)"]


def test_return_tensors_as_hf_passes_it():
    codec = Codec()
    b = batch_encode(codec, ["It is a truth", "Emma"], padding=True, return_tensors="pt")
    assert b.attention_mask.shape == (2, 4) and isinstance(b.lengths, torch.Tensor)
    with pytest.raises(TfreeError, match="only 'pt'"):
        batch_encode(codec, ["It is"], return_tensors="np")


def test_the_package_says_it_is_typed():
    import importlib.resources

    assert importlib.resources.files("tfree_codec").joinpath("py.typed").is_file()
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml"),
              encoding="utf-8") as f:
        assert '"tfree_codec" = ["py.typed"]' in f.read()  # and wheels ship it


@pytest.mark.slow  # a tfree subprocess
def test_shell_completion_as_the_readme_sets_it_up():
    import subprocess

    env = {**os.environ, "COMP_WORDS": "tfree train --grad", "COMP_CWORD": "2", "_TFREE_COMPLETE": "bash_complete"}
    r = subprocess.run([sys.executable, "-m", "tfree_cli"], env=env, capture_output=True, text=True, timeout=60)
    assert "plain,--grad-accum" in r.stdout.splitlines()
