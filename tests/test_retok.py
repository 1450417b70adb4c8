"""`tfree retok`: a trained BPE model becomes a T-FREE model (ReTok). The least-squares init, the conversion end to
end, a frozen body that stays bit-identical (also across a resume), unfreezing, and refusals in one line."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import cli as run
from tfree_codec import CodecConfig
from tfree_codec.assets import sample_text
from tfree_codec.model.checkpoint import read_state_dict
from tfree_codec.shards.writer import encode_to_shards
from tfree_codec.train import retok, retok_fit
from tfree_codec.train.settings import TrainConfig, body_frozen, lr_for

BODY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--seq-len", "24"]
REST = ["--batch-size", "4", "--warmup", "2", "--lr", "3e-3", "--val-bytes", "2000", "--log-every", "1",
        "--seed", "3", "--no-plot", "-q", "--device", "cpu", "--dtype", "float32"]


def one_line_error(r):
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The bundled Austen sample's first 40 kB as shards (v = 1024, m = 4) and a BPE-300 model trained 6 steps."""
    d = tmp_path_factory.mktemp("retok")
    text = sample_text(40_000)
    paras = text.split("\n\n")
    with open(d / "docs.jsonl", "w") as f:
        for i in range(0, len(paras), 12):
            f.write(json.dumps({"text": "\n\n".join(paras[i:i + 12])}) + "\n")
    shards = str(d / "shards")
    encode_to_shards([str(d / "docs.jsonl")], shards, CodecConfig(vocab_size=1024, num_activations=4), num_proc=1,
                     progress=False)
    bpe = str(d / "bpe")
    r = run("train", shards, "-o", bpe, "--preset", "tiny", "--baseline", "bpe", "--bpe-vocab", "300",
            "--max-steps", 6, "--sample-words", 0, *BODY, *REST)
    assert r.exit_code == 0, r.output
    return {"shards": shards, "bpe": bpe, "root": d}


@pytest.fixture(scope="module")
def inits(data, tmp_path_factory):
    """init -> a converted starting point (RUN/init) as `tfree retok ... REST` makes it, built once: a run directory
    that holds it reuses it (the CLI checks its settings), so the tests that train from it skip the conversion."""
    made = {}

    def get(init: str) -> str:
        if init not in made:
            out = str(tmp_path_factory.mktemp("inits") / init / retok.INIT_DIR)
            retok.build(data["bpe"], data["shards"], out, retok.RetokConfig(init=init, seed=3), val_bytes=2000,
                        log=lambda *a: None)
            made[init] = out
        return made[init]
    return get


def _from_init(inits, out: str, init: str = "mean") -> str:
    """A new run directory ``out`` holding the shared conversion ``init`` (as a first `tfree retok` would leave it)."""
    import shutil

    shutil.copytree(inits(init), os.path.join(out, retok.INIT_DIR))
    return out


# -- the least squares ------------------------------------------------------------------------------------------
def _patterns(n, v, m, seed=0):
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.choice(v, m, replace=False) for _ in range(n)])
    return np.arange(0, n * m + 1, m, dtype=np.int64), rows.reshape(-1).astype(np.int64)


def test_solve_recovers_a_known_embedding():
    """Targets made from a chosen E (each word the sum of its rows): with more words than rows the patterns pin E
    down, and the solve returns it, for any frequency weights."""
    v, d = 40, 6
    indptr, indices = _patterns(300, v, 4)
    e = torch.randn(v, d, dtype=torch.float64)
    t = retok_fit.pattern_sum(indptr, indices, e)
    counts = np.random.default_rng(1).integers(1, 50, 300)
    (got,) = retok_fit.solve(indptr, indices, counts, [t], v, alpha=1.0, ridge=1e-12)
    assert torch.allclose(got, e, atol=1e-6)


def test_solve_reproduces_targets_when_the_patterns_allow_it():
    """Fewer words than rows: any targets at all are met exactly (R^2 = 1, cosine 1), both tables in one solve."""
    v, d = 64, 5
    indptr, indices = _patterns(20, v, 4, seed=2)
    t1, t2 = torch.randn(20, d, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    counts = np.arange(1, 21)
    a, b = retok_fit.solve(indptr, indices, counts, [t1, t2], v, ridge=1e-10)
    assert a.shape == (v, d) and b.shape == (v, 3)
    assert torch.allclose(retok_fit.pattern_sum(indptr, indices, a), t1, atol=1e-5)
    assert torch.allclose(retok_fit.pattern_sum(indptr, indices, b), t2, atol=1e-5)
    q = retok_fit.fit_quality(indptr, indices, a, t1, counts)
    assert q and all(abs(r["r2"] - 1) < 1e-6 and abs(r["cosine"] - 1) < 1e-6 for r in q)
    assert sum(r["words"] for r in q) == 20


def test_gram_counts_co_activations():
    indptr, indices = np.array([0, 2, 5]), np.array([0, 1, 1, 2, 3])
    g = retok_fit.gram(indptr, indices, np.array([2.0, 3.0]), 4).numpy()
    want = np.zeros((4, 4))
    for w, rows in ((2.0, [0, 1]), (3.0, [1, 2, 3])):
        for i in rows:
            for j in rows:
                want[i, j] += w
    assert np.array_equal(g, want)


def test_targets_mean_first_and_omp():
    table = torch.arange(12, dtype=torch.float32).view(4, 3)
    pieces = [[0], [1, 3], []]
    assert torch.equal(retok_fit.mean_rows(pieces, table)[1], (table[1] + table[3]).double() / 2)
    assert torch.equal(retok_fit.first_rows(pieces, table)[1], table[1].double())
    assert not retok_fit.mean_rows(pieces, table)[2].any()
    atoms = torch.eye(5, dtype=torch.float64)[:, :4] * torch.tensor([1.0, 2, 3, 4])  # 4-dim, one zero atom
    x = (2 * atoms[1] - 0.5 * atoms[3])[None]
    idx, w = retok_fit.omp(x, atoms, 2)
    got = (w[:, :, None] * atoms[idx]).sum(1)
    assert set(idx[0].tolist()) == {1, 3} and torch.allclose(got, x)


# -- the schedule -----------------------------------------------------------------------------------------------
def test_freeze_schedule():
    cfg = TrainConfig.of(data="x", out_dir="y", lr=1.0, warmup=2, freeze_body=True, unfreeze_after=10, unfreeze_lr=0.5)
    assert body_frozen(cfg, 9) and not body_frozen(cfg, 10)
    assert lr_for(0, cfg, 30) == 0.5 and lr_for(10, cfg, 30) == 0.25  # a fresh warmup at half the rate
    assert not body_frozen(TrainConfig.of(data="x", out_dir="y"), 0)


# -- end to end -------------------------------------------------------------------------------------------------
def _body(sd):
    return {k: v for k, v in sd.items() if not k.startswith(("embed.", "head.", "norm."))}


@pytest.mark.parametrize("init", ["mean", "sparse", "random"])
def test_conversion_end_to_end(data, tmp_path, init):
    out = str(tmp_path / init)
    r = run("retok", data["bpe"], data["shards"], "-o", out, "--init", init, "--max-steps", 3, "--sample-words", 0,
            "--sparse-k", 3, *REST)
    assert r.exit_code == 0, r.output
    src = read_state_dict(os.path.join(data["bpe"], "final"))
    for ck in ("init", "final"):  # the body is the source's, bit for bit, before and after training
        got = read_state_dict(os.path.join(out, ck))
        assert set(_body(got)) == set(_body(src)) and all(torch.equal(got[k], src[k]) for k in _body(src))
        assert got["embed.weight"].shape == (1024, 32) and got["head.weight"].shape == (1024, 32)
    init_sd, final_sd = read_state_dict(os.path.join(out, "init")), read_state_dict(os.path.join(out, "final"))
    assert not torch.equal(init_sd["embed.weight"], final_sd["embed.weight"])  # the new layers did train
    assert torch.equal(init_sd["norm.weight"], src["norm.weight"]) and not torch.equal(final_sd["norm.weight"], src["norm.weight"])
    rec = retok.read_record(os.path.join(out, "init"))
    assert rec["settings"]["init"] == init and np.isfinite(rec["val_bpb_step0"])
    if init != "random":
        assert rec["fit_input"] and all(-1 <= q["cosine"] <= 1 for q in rec["fit_input"])
    # an ordinary T-FREE checkpoint: eval and generate use it unchanged
    r = run("eval", os.path.join(out, "final"), data["shards"], "--json", "-q", "--device", "cpu")
    assert r.exit_code == 0 and json.loads(r.output)["mode"] == "tfree", r.output
    r = run("generate", os.path.join(out, "final"), "Emma", "-n", 4, "--seed", 1, "--no-cache", "--no-echo")
    assert r.exit_code == 0 and "4 words" in r.output, r.output
    r = run("export", os.path.join(out, "final"), "-o", tmp_path / "exported")
    assert r.exit_code == 0 and os.path.isfile(tmp_path / "exported" / "checkpoint.json"), r.output


def test_mean_init_fits_better_than_random_at_step_0(data, inits, tmp_path):
    bpb = {init: retok.read_record(inits(init))["val_bpb_step0"] for init in ("mean", "random")}
    assert bpb["mean"] < bpb["random"], bpb
    rec = retok.build(data["bpe"], data["shards"], str(tmp_path / "meanfit" / "init"),
                      retok.RetokConfig(head_fit="mean"), val_bytes=2000, log=lambda *a: None)
    assert rec["head_scale"] > 0 and np.isfinite(rec["val_bpb_step0"])


def test_frozen_body_is_bit_identical_across_resume_then_unfreezes(data, inits, tmp_path):
    out = _from_init(inits, str(tmp_path / "run"))
    common = ["--unfreeze-after", 4, "--save-every", 2, "--sample-words", 0, *REST]
    r = run("retok", data["bpe"], data["shards"], "-o", out, "--max-steps", 5, *common)
    assert r.exit_code == 0, r.output
    for d in ("step-000004", "step-000005", "final"):  # as if killed after step 2 (--unfreeze-after must fall
        shutil.rmtree(os.path.join(out, d))          # inside the run, so a run cannot simply stop at step 2)
    src = _body(read_state_dict(os.path.join(data["bpe"], "final")))
    r = run("retok", data["bpe"], data["shards"], "-o", out, "--max-steps", 5, *common)
    assert "--resume auto" in one_line_error(r)
    r = run("retok", data["bpe"], data["shards"], "-o", out, "--max-steps", 6, "--resume", "auto", *common)
    assert r.exit_code == 0 and "resumed from" in r.output, r.output
    at4 = read_state_dict(os.path.join(out, "step-000004"))
    assert all(torch.equal(at4[k], v) for k, v in src.items())  # frozen through step 4, across the resume
    at6 = read_state_dict(os.path.join(out, "final"))
    assert any(not torch.equal(at6[k], v) for k, v in src.items())  # unfrozen from step 4 on


def test_resumed_run_equals_uninterrupted(data, inits, tmp_path):
    a, b = _from_init(inits, str(tmp_path / "a")), str(tmp_path / "b")
    common = ["--unfreeze-after", 2, "--save-every", 1, "--sample-words", 0, *REST]
    assert run("retok", data["bpe"], data["shards"], "-o", a, "--max-steps", 3, *common).exit_code == 0
    # b: run a as if killed after step 2 (a run of 2 steps with --unfreeze-after 2 is refused: the unfreezing must
    # fall inside the run), so its resume crosses the unfreezing
    shutil.copytree(a, b)
    for d in ("step-000003", "final"):
        shutil.rmtree(os.path.join(b, d))
    r = run("retok", data["bpe"], data["shards"], "-o", b, "--max-steps", 3, "--resume", "auto", *common)
    assert r.exit_code == 0 and "resumed from" in r.output, r.output
    sa, sb = read_state_dict(os.path.join(a, "final")), read_state_dict(os.path.join(b, "final"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# -- refusals ---------------------------------------------------------------------------------------------------
def test_bad_sources_and_outputs_are_refused(data, tmp_path):
    shards, bpe = data["shards"], data["bpe"]
    go = ["--max-steps", 1, *REST]
    tfree_run = str(tmp_path / "tf")
    assert run("train", shards, "-o", tfree_run, "--preset", "tiny", "--max-steps", 1, "--sample-words", 0, *BODY,
               *REST).exit_code == 0
    assert "not a --baseline bpe run" in one_line_error(run("retok", tfree_run, shards, "-o", tmp_path / "o1", *go))
    assert "not a tfree run" in one_line_error(run("retok", str(tmp_path), shards, "-o", tmp_path / "o2", *go))
    broken = tmp_path / "broken"
    import shutil
    shutil.copytree(os.path.join(bpe, "final"), broken)
    (broken / "tokenizer.json").write_text("{not json")
    assert "tokenizer.json" in one_line_error(run("retok", broken, shards, "-o", tmp_path / "o3", *go))
    (broken / "tokenizer.json").unlink()
    assert "tokenizer.json" in one_line_error(run("retok", broken, shards, "-o", tmp_path / "o4", *go))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert "not a tfree retok run" in one_line_error(run("retok", bpe, shards, "-o", theirs, *go))
    assert (theirs / "notes.txt").read_text() == "mine" and os.listdir(theirs) == ["notes.txt"]
    assert "--max-steps or --max-bytes" in one_line_error(run("retok", bpe, shards, "-o", tmp_path / "o5", *REST))
    assert "--unfreeze-after" in one_line_error(run("retok", bpe, shards, "-o", tmp_path / "o6", "--unfreeze-after",
                                                    0, *go))
    assert "--ridge" in one_line_error(run("retok", bpe, shards, "-o", tmp_path / "o7", "--ridge", -1, *go))
    for o in ("o1", "o2", "o3", "o4", "o5", "o6", "o7"):
        assert not os.path.exists(tmp_path / o)  # nothing written for a refused command


def test_init_made_with_other_options_is_refused(data, inits, tmp_path):
    out = _from_init(inits, str(tmp_path / "r"))
    assert run("retok", data["bpe"], data["shards"], "-o", out, "--max-steps", 1, "--sample-words", 0,
               *REST).exit_code == 0
    shutil_out = os.path.join(out, "final")
    assert os.path.isdir(shutil_out)
    r = run("retok", data["bpe"], data["shards"], "-o", out, "--max-steps", 2, "--resume", "auto",
            "--head-target", "mean", *REST)
    assert "--head-target" in one_line_error(r)
