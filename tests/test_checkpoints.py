"""Checkpoints users can share: model.safetensors (a round trip, read by and reading the safetensors package, damage
refused in one line), older model.pt checkpoints still load, train_config.json in final/, --keep-last, and
--resume auto restoring the run's own settings."""
import json
import os
import shutil
import sys

import pytest
import torch

from conftest import cli as run, tiny_flags
from tfree_codec import TfreeError
from tfree_codec.model import checkpoint as ckpt
from tfree_codec.model.weights import load_weights_file, save_weights

TINY = tiny_flags(lr=None, seed=3)



def tensors():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 5, generator=g), "h": torch.randn(4, generator=g).half(),
            "b": torch.randn(2, 2, generator=g).bfloat16(), "i": torch.arange(7), "m": torch.tensor([True, False]),
            "s": torch.tensor(2.5, dtype=torch.float64), "e": torch.zeros(0, 3)}


@pytest.fixture(params=["safetensors", "ours"])
def reader(request, monkeypatch):
    """Both ways a file is read: the safetensors package's memory map where it is installed, our reader elsewhere."""
    try:
        import safetensors.torch as st  # imported first: the interop test writes files with it in both cases
    except ImportError:
        st = None
    if request.param == "safetensors" and st is None:
        pytest.skip("safetensors is not installed")
    if request.param == "ours":
        monkeypatch.setitem(sys.modules, "safetensors", None)  # `from safetensors import ...` -> ImportError
    return st


def test_safetensors_round_trip(tmp_path, reader):
    t = tensors()
    save_weights(t, tmp_path / "a.safetensors", {"format": "pt"})
    back = load_weights_file(str(tmp_path / "a.safetensors"))
    assert list(back) == list(t)
    for k in t:
        assert back[k].dtype == t[k].dtype and back[k].shape == t[k].shape and torch.equal(back[k], t[k])


def test_safetensors_files_are_the_standard_format(tmp_path, reader):
    st = reader or pytest.skip("safetensors is not installed")
    t = tensors()
    save_weights(t, tmp_path / "ours.safetensors")
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    assert all(torch.equal(theirs[k], t[k]) for k in t)
    st.save_file(t, str(tmp_path / "theirs.safetensors"), metadata={"format": "pt"})
    ours = load_weights_file(str(tmp_path / "theirs.safetensors"))
    assert set(ours) == set(t) and all(torch.equal(ours[k], t[k]) for k in t)


@pytest.mark.parametrize("damage", ["truncate", "header", "length"])
def test_a_damaged_safetensors_file_is_one_line(tmp_path, damage, reader):
    p = tmp_path / "w.safetensors"
    save_weights(tensors(), p)
    data = bytearray(p.read_bytes())
    if damage == "truncate":
        data = data[:len(data) - 5]
    elif damage == "header":
        data[8:12] = b"\xff\xfe{]"
    else:
        data[:8] = (1 << 40).to_bytes(8, "little")
    p.write_bytes(bytes(data))
    with pytest.raises(TfreeError, match="is not a valid safetensors file"):
        load_weights_file(str(p))


@pytest.fixture(scope="module")
def shards(make_tiny_shards):
    return make_tiny_shards(seed=1)


@pytest.fixture(scope="module")
def pruned(shards, tmp_path_factory):
    """6 steps, a checkpoint every 2, only the newest 2 kept; a user's own step-000001/ beside them (put there
    between a first run of 4 steps and its resume: a new run refuses a folder that holds someone else's files)."""
    out = tmp_path_factory.mktemp("runs") / "a"
    r = run("train", shards, "-o", out, "--max-steps", 4, "--save-every", 2, "--keep-last", 2, *TINY)
    assert r.exit_code == 0, r.output
    shutil.rmtree(out / "final")
    os.makedirs(out / "step-000001")
    (out / "step-000001" / "notes.txt").write_text("mine")
    r = run("train", shards, "-o", out, "--resume", "auto", "--max-steps", 6, "-q")
    assert r.exit_code == 0, r.output
    return str(out)


def test_keep_last_keeps_the_newest_checkpoints_and_final(pruned):
    steps = sorted(d for d in os.listdir(pruned) if d.startswith("step-"))
    assert steps == ["step-000001", "step-000004", "step-000006"]  # 2 was pruned; the user's directory stays
    assert open(os.path.join(pruned, "step-000001", "notes.txt")).read() == "mine"
    assert os.path.isfile(os.path.join(pruned, "final", ckpt.META))


def test_final_holds_the_training_settings_as_json(pruned, shards):
    s = json.load(open(os.path.join(pruned, "final", "train_config.json")))
    assert s["save_every"] == 2 and s["keep_last"] == 2 and s["batch_size"] == 4 and s["seed"] == 3
    assert s["data"] == shards and s["max_steps"] == 6


def test_resume_auto_restores_the_runs_own_settings(pruned, shards, tmp_path):
    b = str(tmp_path / "b")
    shutil.copytree(pruned, b)
    shutil.rmtree(os.path.join(b, "final"))
    # only the data, the run and a new length: batch size, model shape, --save-every and --keep-last come back
    r = run("train", shards, "-o", b, "--resume", "auto", "--max-steps", 10, "-q")
    assert r.exit_code == 0, r.output
    assert "settings of the run restored" in r.output and "save_every 2" in r.output and "batch_size 4" in r.output
    assert "resumed from" in r.output and "step 6" in r.output
    steps = sorted(d for d in os.listdir(b) if d.startswith("step-"))
    assert steps == ["step-000001", "step-000008", "step-000010"]
    s = json.load(open(os.path.join(b, "final", "train_config.json")))
    assert s["max_steps"] == 10 and s["save_every"] == 2
    # an option given again wins over the saved one
    shutil.rmtree(os.path.join(b, "final"))
    r = run("train", shards, "-o", b, "--resume", "auto", "--max-steps", 12, "--keep-last", 1, "-q")
    assert r.exit_code == 0, r.output
    assert sorted(d for d in os.listdir(b) if d.startswith("step-")) == ["step-000001", "step-000012"]


def test_checkpoints_with_only_model_pt_still_load(pruned, tmp_path):
    old = str(tmp_path / "old")
    shutil.copytree(os.path.join(pruned, "final"), old)
    sd = load_weights_file(os.path.join(old, "model.safetensors"))
    torch.save(sd, os.path.join(old, "model.pt"))
    os.remove(os.path.join(old, "model.safetensors"))
    meta = json.load(open(os.path.join(old, ckpt.META)))
    del meta["files"]["model.safetensors"]
    meta["files"]["model.pt"] = ckpt._sha256(os.path.join(old, "model.pt"))
    json.dump(meta, open(os.path.join(old, ckpt.META), "w"))
    model, _, _ = ckpt.load_model(old)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    # and it exports to a checkpoint with model.safetensors
    r = run("export", old, "-o", str(tmp_path / "exp"))
    assert r.exit_code == 0, r.output
    assert "model.safetensors" in os.listdir(tmp_path / "exp") and "model.pt" not in os.listdir(tmp_path / "exp")
