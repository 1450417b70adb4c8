"""`tfree train` and `tfree eval`: checkpoints, exact resume, refusals in one line, DDP on CPU, the BPE baseline."""
import json
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import cli as run, tiny_flags
from tfree_codec import CodecConfig, TfreeError
from tfree_codec.model.checkpoint import load_model, read_state_dict
from tfree_codec.shards.writer import encode_to_shards

TINY = tiny_flags()
WORDS = "the a cat dog sat ran on under mat log big small red quickly slowly and then".split()


def losses(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """60 small documents of simple sentences, encoded with a small codec (v = 1024)."""
    d = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    docs = [" ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "." for _ in range(6))
            for _ in range(60)]
    with open(d / "docs.jsonl", "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in docs)
    encode_to_shards([str(d / "docs.jsonl")], str(d / "shards"), CodecConfig(vocab_size=1024, num_activations=4),
                     num_proc=1, progress=False)
    return str(d / "shards")


@pytest.fixture(scope="module")
def finished(shards, tmp_path_factory):
    """A run of 8 steps with checkpoints at 4 and 8."""
    out = str(tmp_path_factory.mktemp("runs") / "a")
    r = run("train", shards, "-o", out, "--max-steps", 8, "--save-every", 4, "--seed", 7, *TINY)
    assert r.exit_code == 0, r.output
    return out


def test_checkpoints_are_self_describing(finished):
    for name in ("step-000004", "step-000008", "final"):
        files = set(os.listdir(os.path.join(finished, name)))
        assert {"model.safetensors", "train_config.json", "model_config.json", "codec.json", "dictionary.arrow", "calibration.json",
                "checkpoint.json"} <= files
    assert "train_state.pt" in os.listdir(os.path.join(finished, "step-000004"))
    assert "model.pt" not in files  # weights once, without pickle
    sd = read_state_dict(os.path.join(finished, "final"))
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in sd)
    state = torch.load(os.path.join(finished, "step-000004", "train_state.pt"), weights_only=True)
    assert state["step"] == 4 and set(state["cursor"]) == {"epoch", "index", "offset"} and state["seed"] == 7
    cal = json.load(open(os.path.join(finished, "final", "calibration.json")))
    # the default (word) objective: the calibration is the learnt scale and prior, read with mean-logit scores
    assert cal["score"] == "mean_logit" and cal["temperature"] > 0 and 0 < cal["p_unk"] < 1
    model, codec, meta = load_model(os.path.join(finished, "final"))
    assert codec.vocab_size == 1024 and meta["step"] == 8 and model.config.n_embd == 32


def test_eval_reports_bits_per_byte_params_and_coverage(finished, shards):
    r = run("eval", os.path.join(finished, "final"), shards, "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert 0 < rep["bpb"] < 20 and rep["bpb"] <= rep["bpb_unk_bytes"]
    assert rep["params"]["embedding"] == rep["params"]["head"] == 1024 * 32
    assert rep["coverage_words"] > 0.9 and "spelling" in rep["convention"]
    text = run("eval", os.path.join(finished, "final"), shards, "-q").output
    assert "bits per byte" in text and "embedding 32,768 + head 32,768" in text
    full = json.loads(run("eval", os.path.join(finished, "final"), shards, "--json", "-q", "--search", "full").output)
    assert abs(full["bpb"] - rep["bpb"]) < 1e-4 and abs(full["bpb_plain_score"] - rep["bpb_plain_score"]) < 1e-4
    from tfree_codec.generate.score import evaluate_checkpoint  # every word as one torch product: the same figures
    torch_path = evaluate_checkpoint(os.path.join(finished, "final"), shards, "cpu", search=None)
    assert abs(torch_path["bpb"] - rep["bpb"]) < 1e-4


@pytest.mark.parametrize("kind", ["tfree", "bpe"])
def test_eval_reports_either_kind_in_one_shape(kind, tiny_run, austen):
    final = os.path.join(tiny_run(kind), "final")
    r = run("eval", final, austen["shards"], "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["mode"] == kind and 0 < rep["bpb"] < 20 and rep["params"]["total"] > 0 and rep["bytes"] > 0
    if kind == "tfree":  # words, the dictionary's coverage and both unseen-word charges
        assert rep["bpb"] <= rep["bpb_unk_bytes"] and 0 < rep["coverage_words"] <= 1 and rep["words"] > 0
    else:  # tokens, the model's own softmax
        assert rep["tokens"] > 0 and "dictionary_words" not in rep
    text = run("eval", final, austen["shards"], "-q").output
    assert "bits per byte" in text and ("dictionary" in text) == (kind == "tfree")


def test_resume_auto_continues_exactly(finished, tmp_path):
    b = str(tmp_path / "b")
    shutil.copytree(finished, b)
    shutil.rmtree(os.path.join(b, "step-000008"))
    shutil.rmtree(os.path.join(b, "final"))  # as if killed between step 4 and step 8
    r = run("train", _data(finished), "-o", b, "--max-steps", 8, "--save-every", 4, "--resume", "auto", *TINY)
    assert r.exit_code == 0, r.output
    assert "resumed from" in r.output and "step 4" in r.output
    la, lb = losses(finished), losses(b)
    assert [lb[s] for s in range(5, 9)] == [la[s] for s in range(5, 9)]  # bit-exact on CPU
    wa = read_state_dict(os.path.join(finished, "final"))
    wb = read_state_dict(os.path.join(b, "final"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _data(run_dir):
    state = torch.load(os.path.join(run_dir, "step-000004", "train_state.pt"), weights_only=True)
    return state["train_config"]["data"]


def test_resume_with_other_settings_or_into_a_used_dir_is_refused(finished, tmp_path):
    b = str(tmp_path / "b")
    shutil.copytree(finished, b)
    r = run("train", _data(finished), "-o", b, "--max-steps", 8, "--resume", "auto", *tiny_flags(batch_size=8))
    assert r.exit_code == 1 and "does not match this run" in r.output and "batch_size 4 -> 8" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    r = run("train", _data(finished), "-o", b, "--max-steps", 8, *TINY)
    assert r.exit_code == 1 and "--resume auto" in r.output
    with open(os.path.join(b, "step-000008", "train_state.pt"), "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 8)
    r = run("train", _data(finished), "-o", b, "--max-steps", 12, "--resume", "auto", *TINY)
    assert r.exit_code == 1 and "corrupt: train_state.pt" in r.output


def test_corrupt_or_mismatched_checkpoints_are_refused_in_one_line(finished, shards, tmp_path):
    bad = str(tmp_path / "bad")
    shutil.copytree(os.path.join(finished, "final"), bad)
    with open(os.path.join(bad, "model.safetensors"), "r+b") as f:
        f.seek(200)
        f.write(b"\xff" * 16)
    r = run("eval", bad, shards, "-q")
    assert r.exit_code == 1 and "corrupt: model.safetensors" in r.output and len(r.output.strip().splitlines()) == 1
    os.remove(os.path.join(bad, "checkpoint.json"))
    r = run("eval", bad, shards, "-q")
    assert r.exit_code == 1 and "not a tfree checkpoint" in r.output
    # a model config that does not fit the weights (checksums recomputed, so only the content is wrong)
    mism = str(tmp_path / "mism")
    shutil.copytree(os.path.join(finished, "final"), mism)
    cfg = json.load(open(os.path.join(mism, "model_config.json")))
    cfg["n_layer"] = 2
    json.dump(cfg, open(os.path.join(mism, "model_config.json"), "w"))
    meta = json.load(open(os.path.join(mism, "checkpoint.json")))
    from tfree_codec.model.checkpoint import _sha256
    meta["files"]["model_config.json"] = _sha256(os.path.join(mism, "model_config.json"))
    json.dump(meta, open(os.path.join(mism, "checkpoint.json"), "w"))
    with pytest.raises(TfreeError, match="do not fit the model config"):
        load_model(mism)
    # data encoded with another codec
    other = str(tmp_path / "other.txt")
    open(other, "w").write("the cat sat.")
    other_shards = str(tmp_path / "other_shards")
    encode_to_shards([other], other_shards, CodecConfig(vocab_size=2048), num_proc=1, progress=False)
    r = run("eval", os.path.join(finished, "final"), other_shards, "-q")
    assert r.exit_code == 1 and "made with codec" in r.output


@pytest.mark.slow
def test_bpe_baseline_trains_and_evaluates(shards, tmp_path):
    out = str(tmp_path / "bpe")
    r = run("train", shards, "-o", out, "--baseline", "bpe", "--bpe-vocab", 300, "--max-steps", 30, "--seed", 1,
            *TINY)
    assert r.exit_code == 0, r.output
    ls = losses(out)
    assert sum(ls[s] for s in (28, 29, 30)) < 0.75 * sum(ls[s] for s in (1, 2, 3))  # random sentences: ~2.8 nats floor
    assert os.path.isfile(os.path.join(out, "final", "tokenizer.json"))
    rep = json.loads(run("eval", os.path.join(out, "final"), shards, "--json", "-q").output)
    assert rep["mode"] == "bpe" and 0 < rep["bpb"] < 10 and rep["params"]["head"] == 300 * 32


@pytest.mark.slow
def test_max_bytes_sets_the_number_of_steps(shards, tmp_path):
    r = run("train", shards, "-o", tmp_path / "m", "--max-bytes", "2KB", "--seed", 3, *TINY)
    assert r.exit_code == 0, r.output
    with open(tmp_path / "m" / "log.jsonl") as f:
        last = [json.loads(line) for line in f][-1]
    per_step = last["bytes_seen"] / last["step"]
    assert 2000 - per_step < last["bytes_seen"] < 2000 + 1.5 * per_step  # steps from the corpus' bytes per word
    assert "seed 3" in r.output


@pytest.mark.slow
def test_two_process_ddp_on_cpu_matches_one_process_with_the_global_batch(shards, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = ["train", shards, "--max-steps", "2", "--seed", "5", "--device", "cpu", *TINY]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tfree_cli",
           *args, "-o", str(tmp_path / "ddp")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "2 process(es)" in p.stdout and p.stdout.count("saved ") == 1  # only rank 0 logs and saves
    r = run("train", shards, "--max-steps", "2", "--seed", "5", "--device", "cpu", *tiny_flags(batch_size=8), "-o",
            tmp_path / "one")
    assert r.exit_code == 0, r.output
    ld, l1 = losses(str(tmp_path / "ddp")), losses(str(tmp_path / "one"))
    assert ld[1] == pytest.approx(l1[1], rel=1e-5) and ld[2] == pytest.approx(l1[2], rel=1e-4)


def test_a_batch_embeds_its_distinct_words_once_and_equals_the_per_occurrence_embedding():
    import numpy as np
    import torch

    from tfree_codec import Codec, CodecConfig
    from tfree_codec.model.transformer import Model, ModelConfig, Patterns, multi_hot
    from tfree_codec.shards.corpus import Corpus, make_units
    from tfree_codec.train.data import Packer, PatternSource

    codec = Codec(CodecConfig(vocab_size=512, num_activations=4))
    corpus = Corpus.from_texts(["the cat sat on the mat . " * 9, "a dog , the log\n\nand the end"] * 3, codec)
    units = make_units(corpus, 16)
    source = PatternSource(corpus, units)
    windows, _ = Packer(source.lengths, units.last, units.n_bytes, 12, seed=0).next_windows(4)
    x, y = source.batch(windows, 12)
    assert x.words is not None and len(x.offsets) - 1 < 4 * 12  # fewer distinct words than positions

    def per_occurrence(segs_list, lo, hi):  # the old form: every position's own pattern
        lens, rows = [], []
        for segs in segs_list:
            parts = [source.item_patterns(*s) for s in segs]
            l, r = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            cut = np.concatenate([[0], np.cumsum(l)])
            lens.append(l[lo:hi]), rows.append(r[cut[lo]:cut[hi]])
        lens = np.concatenate(lens)
        return Patterns(torch.from_numpy(np.concatenate(rows).astype(np.int64)),
                        torch.from_numpy(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)), (4, 12))

    torch.manual_seed(0)
    model = Model(ModelConfig(mode="tfree", vocab_size=512, seq_len=12, n_layer=1, n_head=2, n_embd=16))
    old_x, old_y = per_occurrence(windows, 0, 12), per_occurrence(windows, 1, 13)
    assert torch.allclose(model.embed_inputs(x), model.embed_inputs(old_x), atol=1e-6)
    assert torch.equal(multi_hot(y, 512), multi_hot(old_y, 512))
    assert torch.allclose(model(x, y)[1], model(old_x, old_y)[1], atol=1e-6)
