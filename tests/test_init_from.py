"""`tfree train --init-from`: continued training from a trained model (weights and shape kept, a T-FREE dictionary
grown with the new data's words, a BPE tokenizer kept), refusals in one line, resume of such a run."""
import json
import os
import random
import shutil

import pytest
import torch

from conftest import cli as run
from tfree_codec import CodecConfig
from tfree_codec.decode.dictionary import Dictionary
from tfree_codec.model.checkpoint import read_state_dict
from tfree_codec.shards.writer import encode_to_shards
from tfree_codec.train.loop import Run, TrainConfig

# the shape of the source models; a continued run gets it from the source, so BODY is not given again
BODY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--seq-len", "16"]
REST = ["--preset", "tiny", "--batch-size", "4", "--warmup", "2", "--lr", "3e-3", "--val-bytes", "400", "--log-every",
        "1", "--seed", "3", "--sample-words", "0", "--no-plot", "-q"]
NEW_WORDS = "der die das hund katze lief auf unter matte und dann klein rot".split()



def one_line_error(r):
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def _shards(tmp_path_factory, words, v=1024, seed=0):
    d = tmp_path_factory.mktemp("new")
    rng = random.Random(seed)
    with open(d / "docs.jsonl", "w") as f:
        for _ in range(40):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(40)) + "."}) + "\n")
    encode_to_shards([str(d / "docs.jsonl")], str(d / "shards"), CodecConfig(vocab_size=v, num_activations=4),
                     num_proc=1, progress=False)
    return str(d / "shards")


@pytest.fixture(scope="module")
def new_lang(tmp_path_factory):
    return _shards(tmp_path_factory, NEW_WORDS)


@pytest.fixture(scope="module")
def sources(make_tiny_shards, tmp_path_factory):
    """A T-FREE and a BPE model trained 3 steps on the English-like tiny shards."""
    data = make_tiny_shards(0)
    root = tmp_path_factory.mktemp("src")
    out = {}
    for name, extra in (("tfree", []), ("bpe", ["--baseline", "bpe", "--bpe-vocab", "300"])):
        out[name] = str(root / name)
        r = run("train", data, "-o", out[name], "--max-steps", 3, *BODY, *REST, *extra)
        assert r.exit_code == 0, r.output
    return out


def test_step0_weights_are_the_source_s(sources, new_lang, tmp_path):
    for mode, src in sources.items():
        cfg = TrainConfig.of(data=new_lang, out_dir=str(tmp_path / mode), preset="tiny", n_layer=1, n_head=2, n_embd=32,
                             seq_len=16, batch_size=4, max_steps=2, baseline="bpe" if mode == "bpe" else None,
                             init_from=src, progress=False, device="cpu", seed=5)
        model = Run(cfg, log=lambda *a: None).model
        want = read_state_dict(os.path.join(src, "final"))
        got = model.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_continued_run_keeps_the_shape_and_grows_the_dictionary(sources, new_lang, tmp_path):
    out = str(tmp_path / "de")
    r = run("train", new_lang, "-o", out, "--init-from", sources["tfree"], "--max-steps", 2, *REST)  # no shape flags
    assert r.exit_code == 0, r.output
    assert "initialised from" in r.output
    src, new = os.path.join(sources["tfree"], "final"), os.path.join(out, "final")
    assert open(os.path.join(src, "model_config.json")).read() == open(os.path.join(new, "model_config.json")).read()
    old = Dictionary.load(os.path.join(src, "dictionary.arrow"))
    grown = Dictionary.load(os.path.join(new, "dictionary.arrow"))
    assert set(old.words) < set(grown.words) and {"hund", "katze"} <= set(grown.words)
    assert grown.counts[grown.index("cat")] == 0 and grown.counts[grown.index("hund")] > 0  # prior: the new text's
    cal = json.load(open(os.path.join(new, "calibration.json")))
    assert cal["zero_count_weight"] < 0  # the source's words, never in the new text, priced below words seen once
    w_src, w_new = read_state_dict(src), read_state_dict(new)
    assert all(w_src[k].shape == w_new[k].shape for k in w_src)
    assert not all(torch.equal(w_src[k], w_new[k]) for k in w_src)  # and it trained


def test_continued_bpe_run_keeps_its_tokenizer(sources, new_lang, tmp_path):
    out = str(tmp_path / "bpe-de")
    r = run("train", new_lang, "-o", out, "--init-from", sources["bpe"], "--max-steps", 2, *REST)  # --baseline from it
    assert r.exit_code == 0, r.output
    tok = open(os.path.join(sources["bpe"], "final", "tokenizer.json"), "rb").read()
    assert open(os.path.join(out, "tokenizer.json"), "rb").read() == tok
    assert open(os.path.join(out, "final", "tokenizer.json"), "rb").read() == tok
    cfg = json.load(open(os.path.join(out, "final", "model_config.json")))
    assert cfg["mode"] == "bpe" and cfg["vocab_size"] == json.load(open(
        os.path.join(sources["bpe"], "final", "model_config.json")))["vocab_size"]


def test_refusals_are_one_line_before_work(sources, new_lang, tmp_path_factory, tmp_path):
    other_codec = _shards(tmp_path_factory, NEW_WORDS, v=2048)
    cases = {
        "another codec": (other_codec, ["--init-from", sources["tfree"]], "another codec"),
        "another shape": (new_lang, ["--init-from", sources["tfree"], "--n-embd", 64], "n_embd 32 (asked 64)"),
        "another mode": (new_lang, ["--init-from", sources["tfree"], "--baseline", "bpe"], "drop --baseline"),
        "no source": (new_lang, ["--init-from", tmp_path / "nothing"], "no such run or checkpoint"),
    }
    for name, (data, flags, says) in cases.items():
        out = tmp_path / name.replace(" ", "-")
        line = one_line_error(run("train", data, "-o", out, "--max-steps", 2, *REST, *flags))
        assert says in line, (name, line)
        assert not out.exists() or not os.listdir(out), name  # refused before anything was written

    damaged = str(tmp_path / "damaged")
    shutil.copytree(sources["tfree"], damaged)
    with open(os.path.join(damaged, "final", "model.safetensors"), "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    line = one_line_error(run("train", new_lang, "-o", tmp_path / "d", "--max-steps", 2, *REST, "--init-from", damaged))
    assert "model.safetensors" in line and "sha256" in line


def test_resume_of_a_continued_run_is_exact(sources, new_lang, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    flags = ["--init-from", sources["tfree"], "--max-steps", 4, "--save-every", 2, *REST]
    r = run("train", new_lang, "-o", a, *flags)
    assert r.exit_code == 0, r.output
    shutil.copytree(a, b)
    shutil.rmtree(os.path.join(b, "step-000004"))
    shutil.rmtree(os.path.join(b, "final"))  # killed between step 2 and step 4
    r = run("train", new_lang, "-o", b, "--resume", "auto", "-q")  # settings, --init-from among them, restored
    assert r.exit_code == 0, r.output
    assert "resumed from" in r.output and "initialised from" not in r.output
    wa, wb = read_state_dict(os.path.join(a, "final")), read_state_dict(os.path.join(b, "final"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
