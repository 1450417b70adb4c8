"""Issue 25, items 3 and 4: hostile or buggy files (valid checksums, wrong contents) are refused in one line naming
the file, never a Python error, a deep recursion or a huge allocation, and nothing outside the folder is read."""
from __future__ import annotations

import json
import shutil
import struct

import pytest

from tfree_codec.config import file_sha256

from .conftest import TINY
from .harness import assert_refused, cli

GEN = ("-n", 2, "--seed", 0, "-t", 0, "--device", "cpu")


def _reseal(ckpt):
    """checkpoint.json with the sha256 of every file as it is now: the checksums pass, the contents are hostile."""
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta["files"] = {f: file_sha256(str(ckpt / f)) for f in meta["files"]}
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))


def _readers(ckpt, text_file, tmp_path):
    return [cli("generate", ckpt, "Emma", *GEN), cli("eval", ckpt, text_file, "--device", "cpu", "-q"),
            cli("export", ckpt, "-o", tmp_path / "exported")]


def test_a_checkpoint_naming_files_outside_itself_is_refused_unread(run_copy, text_file, tmp_path, monkeypatch):
    import tfree_codec.model.checkpoint as ck

    secret = tmp_path / "secret.txt"
    secret.write_text("not tfree's to read\n")
    hashed = []
    real = ck._sha256
    monkeypatch.setattr(ck, "_sha256", lambda p: hashed.append(p) or real(p))
    ckpt = run_copy / "final"
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    for name in ("../../secret.txt", str(secret), "..", "sub/x"):
        meta["files"] = {**meta["files"], name: file_sha256(str(secret))}
        (ckpt / "checkpoint.json").write_text(json.dumps(meta))
        for r in _readers(ckpt, text_file, tmp_path):
            line = assert_refused(r, "checkpoint.json", name)
            assert "missing" not in line and "match" not in line  # says nothing about the file it names
        del meta["files"][name]
    assert not [p for p in hashed if "secret" in str(p)]
    assert not (tmp_path / "exported").exists()


def _safetensors(path, header: bytes, body: bytes = b""):
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)


def _real_header(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _with_header(ckpt, change):
    header, body = _real_header(ckpt)
    change(header)
    _safetensors(ckpt / "model.safetensors", json.dumps(header).encode(), body)
    _reseal(ckpt)


def _first_weight(h):
    return next(k for k in h if k != "__metadata__")


WEIGHT_CASES = {
    "non-integer offsets": lambda h: h[_first_weight(h)].update(data_offsets=["0", "x"]),
    "float offsets": lambda h: h[_first_weight(h)].update(data_offsets=[0.0, 1.5]),
    "a boolean in the shape": lambda h: h[_first_weight(h)].update(shape=[True, 1]),
    "another dtype": lambda h: h[_first_weight(h)].update(
        dtype="I32", shape=h[_first_weight(h)]["shape"]),  # 4 bytes an element, as F32: the bytes fit
    "two names over one span": lambda h: h["blocks.0.norm2.weight"].update(  # both (d,): one weight read twice
        data_offsets=h["blocks.0.norm1.weight"]["data_offsets"]),
}


@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_hostile_safetensors_headers_are_refused(run_copy, text_file, tmp_path, case):
    ckpt = run_copy / "final"
    _with_header(ckpt, WEIGHT_CASES[case])
    for r in _readers(ckpt, text_file, tmp_path):
        assert_refused(r, "final")


def test_a_header_of_deeply_nested_brackets_is_refused(run_copy):
    ckpt = run_copy / "final"
    _safetensors(ckpt / "model.safetensors", b"[" * 200_000 + b"]" * 200_000)
    _reseal(ckpt)
    assert_refused(cli("generate", ckpt, "Emma", *GEN), "model.safetensors")


def test_a_model_config_far_bigger_than_its_weights_is_refused_before_allocating(run_copy, text_file, tmp_path):
    ckpt = run_copy / "final"
    cfg = json.loads((ckpt / "model_config.json").read_text())
    cfg["n_embd"], cfg["n_head"] = 1 << 20, 16  # 34 GB of float32 for the embedding and head alone
    (ckpt / "model_config.json").write_text(json.dumps(cfg))
    _reseal(ckpt)
    for r in _readers(ckpt, text_file, tmp_path):
        assert_refused(r, "final", "shape")


@pytest.mark.parametrize("value", ['"hot"', "null", "[1]", "true", "-1", "0"])
def test_calibration_with_a_wrong_value_is_refused(run_copy, text_file, tmp_path, value):
    ckpt = run_copy / "final"
    cal = json.loads((ckpt / "calibration.json").read_text())
    (ckpt / "calibration.json").write_text(json.dumps(cal).replace(f'"temperature": {cal["temperature"]}',
                                                                   f'"temperature": {value}'))
    _reseal(ckpt)
    for r in _readers(ckpt, text_file, tmp_path)[:2]:  # export copies the file; generate and eval read it
        assert_refused(r, "calibration.json", "temperature")


def test_init_from_a_source_whose_weights_do_not_load_writes_nothing(run_copy, text_file, tmp_path):
    _with_header(run_copy / "final", WEIGHT_CASES["another dtype"])
    out = tmp_path / "new"
    assert_refused(cli("train", text_file, "-o", out, "--init-from", run_copy, "--max-steps", 2, "--device", "cpu",
                       "-q"), "--init-from")
    assert not out.exists()


@pytest.mark.parametrize("log", ["[1, 2]\n", '"text"\n', '{"step": "one", "loss": 1.0}\n',
                                 '{"step": 1, "loss": [1]}\n', '{"bytes_seen": null, "val_bpb": 2.0}\n'])
def test_plot_of_a_log_that_is_not_records_is_refused(tmp_path, log):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n' + log)
    assert_refused(cli("plot", run, "-o", tmp_path / "p.png"), "log.jsonl", "line 2")
    assert not (tmp_path / "p.png").exists()


def test_shards_cat_with_a_separator_that_is_not_utf8(tmp_path, text_file):
    out = tmp_path / "s"
    assert cli("encode", text_file, "-o", out, "--num-proc", 1, "-q").exit_code == 0
    r = cli("shards", "cat", out, "--sep", "\udcff")  # what Python makes of the byte \xff in argv
    assert_refused(r, "--sep")


def test_encode_of_an_unreachable_url_is_one_line(tmp_path, monkeypatch):
    """No network (or a failing remote file system): the remote library's own exception is one line."""
    fsspec = pytest.importorskip("fsspec")

    class ConnectError(Exception):  # httpx's, as hf:// raised it: not an OSError
        pass

    class Down:
        def isdir(self, path):
            raise ConnectError("[Errno -2] Name or service not known")
        exists = isfile = glob = find = open = isdir

    monkeypatch.setattr(fsspec.core, "url_to_fs", lambda url, **kw: (Down(), url.split("://", 1)[1]))
    out = tmp_path / "s"
    assert_refused(cli("encode", "hf://datasets/someone/data/train.txt", "-o", out, "-q"), "hf://datasets/someone")
    assert not out.exists()


@pytest.mark.parametrize("field, value", [("ffn_hidden", "hot"), ("ffn_hidden", -1), ("n_embd", 2**70),
                                          ("pos_weight", [1]), ("n_layer", True), ("rope_base", None),
                                          ("oe_orders", None)])
def test_model_config_values_of_the_wrong_kind_are_refused(run_copy, field, value):
    ckpt = run_copy / "final"
    cfg = json.loads((ckpt / "model_config.json").read_text())
    cfg[field] = value
    (ckpt / "model_config.json").write_text(json.dumps(cfg))
    _reseal(ckpt)
    assert_refused(cli("generate", ckpt, "Emma", *GEN), field)


@pytest.mark.parametrize("change", ["cursor past the data", "step a string", "no optimizer"])
def test_a_train_state_that_does_not_fit_is_one_line(run_copy, text_file, change):
    import torch

    shutil.rmtree(run_copy / "final")
    ck = run_copy / "step-000004"
    state = torch.load(ck / "train_state.pt", weights_only=True)
    if change == "cursor past the data":
        state["cursor"] = {**state["cursor"], "index": 10**6}
    elif change == "step a string":
        state["step"] = "four"
    else:
        del state["optimizer"]
    torch.save(state, ck / "train_state.pt")
    _reseal(ck)
    r = cli("train", text_file, "-o", run_copy, "--max-steps", 6, "--resume", "auto", "--seed", 1, *TINY)
    assert_refused(r, "train_state.pt")


@pytest.mark.parametrize("field, value", [("keep_last", "hot"), ("logger", None), ("oe_orders", -1),
                                          ("unfreeze_lr", [1]), ("save_every", True)])
def test_train_config_values_of_the_wrong_kind_are_not_restored(run_copy, text_file, field, value):
    """--resume restores the run's settings from train_config.json: a value of another kind is refused there."""
    shutil.rmtree(run_copy / "final")
    ck = run_copy / "step-000004"
    cfg = json.loads((ck / "train_config.json").read_text())
    cfg[field] = value
    (ck / "train_config.json").write_text(json.dumps(cfg))
    _reseal(ck)
    r = cli("train", text_file, "-o", run_copy, "--max-steps", 6, "--resume", "auto", "--seed", 1, *TINY)
    assert_refused(r, "train_config.json", field)


@pytest.mark.parametrize("field, value", [("step", "hot"), ("step", None), ("chunk_words", [1]), ("chunk_words", 0)])
def test_checkpoint_json_values_of_the_wrong_kind_are_refused(run_copy, text_file, tmp_path, field, value):
    ckpt = run_copy / "final"
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    meta[field] = value
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    for r in _readers(ckpt, text_file, tmp_path):
        assert_refused(r, "checkpoint.json", field)
