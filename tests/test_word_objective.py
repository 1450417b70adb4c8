"""The word objective (model/word_head.py): the loss is the cross-entropy of the dictionary softmax that evaluation
reads, exactly up to the budget and an unbiased-in-the-tail sampled softmax past it; a run trained with it is
evaluated, calibrated and generated from under the distribution it trained for."""
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cli
from tfree_codec.model.word_head import WordHead


def dictionary_patterns(W, v, m, seed=0):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, m + 1, W)
    indptr = np.concatenate([[0], np.cumsum(lens)])
    indices = np.concatenate([rng.choice(v, n, replace=False) for n in lens])
    counts = np.sort(rng.integers(0, 50, W))[::-1]
    feats = np.stack([np.log1p(counts), counts == 0], 1).astype(np.float32)
    return indptr, indices, feats


def reference_logits(head, H, h, indptr, indices, feats):
    """z(w) = a * mean of the row logits over P_w + b log(count+1) + c [count=0], word by word."""
    x = h @ H.T                                                   # (N, v) row logits
    a, (b, c) = head.log_scale.exp(), head.prior
    cols = [x[:, indices[indptr[w]:indptr[w + 1]]].mean(1) for w in range(len(indptr) - 1)]
    return a * torch.stack(cols, 1) + torch.as_tensor(feats) @ torch.stack([b, c])


@pytest.mark.parametrize("objective_dtype", [torch.float32, torch.float64])
def test_the_exact_loss_is_the_cross_entropy_of_the_word_softmax(objective_dtype):
    torch.manual_seed(0)
    W, v, d, N = 50, 64, 8, 20
    indptr, indices, feats = dictionary_patterns(W, v, 5)
    head = WordHead(budget=64).set_dictionary(indptr, indices, feats)
    with torch.no_grad():
        head.log_scale.fill_(0.7), head.prior.copy_(torch.tensor([0.3, -1.5]))
    H, h = torch.randn(v, d, dtype=objective_dtype), torch.randn(N, d)
    t = torch.randint(0, W, (N,))
    t[3] = -1  # not in the dictionary: not counted
    got = head.loss(h, H, t)
    keep = t >= 0
    want = F.cross_entropy(reference_logits(head, H.float(), h, indptr, indices, feats)[keep], t[keep])
    assert torch.allclose(got, want, atol=1e-5)


def test_masked_positions_and_unseen_targets_do_not_count():
    torch.manual_seed(1)
    indptr, indices, feats = dictionary_patterns(30, 64, 4)
    head = WordHead(budget=64).set_dictionary(indptr, indices, feats)
    H, h = torch.randn(64, 8), torch.randn(10, 8)
    t = torch.randint(0, 30, (10,))
    mask = torch.ones(10, dtype=torch.bool)
    mask[5:] = False
    assert torch.allclose(head.loss(h, H, t, mask), head.loss(h[:5], H, t[:5]))
    assert head.loss(h, H, torch.full((10,), -1)).item() == 0.0


def test_the_sampled_softmax_estimates_the_exact_loss_and_its_gradient():
    """Past the budget: half exact (the frequent words), half drawn. Averaged over draws the loss is close to the
    exact one (the log of an unbiased sum is biased low by at most its variance), and the gradient points the same
    way."""
    torch.manual_seed(2)
    W, v, d, N = 400, 128, 16, 64
    indptr, indices, feats = dictionary_patterns(W, v, 6, seed=3)
    exact = WordHead(budget=W).set_dictionary(indptr, indices, feats)
    sampled = WordHead(budget=100).set_dictionary(indptr, indices, feats)
    H = (torch.randn(v, d) * 0.5).requires_grad_()
    h = torch.randn(N, d)
    t = torch.randint(0, W, (N,))
    want = exact.loss(h, H, t)
    g_want, = torch.autograd.grad(want, H)
    losses, grads = [], []
    for _ in range(200):
        loss = sampled.loss(h, H, t)
        g, = torch.autograd.grad(loss, H)
        losses.append(float(loss.detach())), grads.append(g)
    assert abs(np.mean(losses) - float(want)) < 0.03 * float(want)
    g_mean = torch.stack(grads).mean(0)
    assert F.cosine_similarity(g_mean.reshape(1, -1), g_want.reshape(1, -1)).item() > 0.95


def test_a_target_among_the_drawn_words_is_counted_once():
    """With every tail word drawn (budget covers all but a few), the sampled loss equals the exact one."""
    torch.manual_seed(4)
    W = 20
    indptr, indices, feats = dictionary_patterns(W, 64, 4)
    head = WordHead(budget=W - 1).set_dictionary(indptr, indices, feats)  # top = 9, draws 10 of the 11 others
    exact = WordHead(budget=W).set_dictionary(indptr, indices, feats)
    H, h = torch.randn(64, 8), torch.randn(6, 8)
    t = torch.tensor([0, 3, 9, 12, 15, 19])
    for _ in range(5):  # every draw: the loss is at least the exact one minus the missing word's share
        assert head.loss(h, H, t).item() == pytest.approx(exact.loss(h, H, t).item(), abs=0.5)


def test_calibration_is_the_learnt_distribution():
    head = WordHead()
    with torch.no_grad():
        head.log_scale.fill_(math.log(4.0)), head.prior.copy_(torch.tensor([0.5, -2.0]))
    cal = head.calibration()
    assert cal == {"score": "mean_logit", "temperature": pytest.approx(0.25), "temperature_plain": pytest.approx(0.25),
                   "prior_weight": 0.5, "zero_count_weight": -2.0}


def test_objective_needs_a_tfree_model_and_a_known_name():
    from tfree_codec import TfreeError
    from tfree_codec.model.transformer import ModelConfig

    with pytest.raises(TfreeError, match="objective"):
        ModelConfig(mode="bpe", objective="word")
    with pytest.raises(TfreeError, match="objective"):
        ModelConfig(objective="softmax")


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["word", "mix"])
def test_a_word_objective_run_trains_evaluates_and_generates_under_its_own_distribution(make_tiny_shards, tmp_path,
                                                                                        objective):
    shards = make_tiny_shards(0)
    out = str(tmp_path / "run")
    args = ["train", shards, "-o", out, "--preset", "tiny", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
            "--seq-len", "16", "--batch-size", "4", "--max-steps", "30", "--lr", "1e-2", "--warmup", "2",
            "--val-bytes", "400", "--seed", "3", "--objective", objective, "--word-budget", "8", "-q"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    with open(os.path.join(out, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    loss = [x["loss"] for x in log if "loss" in x]
    assert loss[-1] < loss[0] - 0.5  # it learns (a 15-word language: the unigram loss is ~2.7 nats)
    with open(os.path.join(out, "final", "calibration.json")) as f:
        cal = json.load(f)
    assert cal["score"] == "mean_logit"
    from tfree_codec.model.checkpoint import load_model
    model, _, _ = load_model(os.path.join(out, "final"), "cpu")
    assert model.config.objective == objective
    assert cal["temperature"] == pytest.approx(float(torch.exp(-model.word_head.log_scale)), rel=1e-6)
    assert cal["prior_weight"] == pytest.approx(float(model.word_head.prior[0]), rel=1e-6)
    ev = cli("eval", os.path.join(out, "final"), shards, "--json", "-q")
    assert ev.exit_code == 0, ev.output
    rep = json.loads(ev.output)
    assert rep["bpb"] == pytest.approx(log[-1]["val_bpb"], rel=0.5) and rep["bpb"] > 0
    assert "mean_logit" in rep["convention"]
    import tfree_codec
    lm = tfree_codec.load(os.path.join(out, "final"), device="cpu")
    assert lm.generate("the cat", max_new_tokens=12, temperature=0) == lm.generate("the cat", max_new_tokens=12,
                                                                                    temperature=0)
    assert lm.generate("the cat", max_new_tokens=12, seed=1)


def test_mean_logit_scores_agree_between_the_numba_and_torch_scorers():
    """Generation scores with the numba scorer, evaluation with the torch one: both read the same mean logits."""
    from tfree_codec import Codec, CodecConfig
    from tfree_codec.decode.dictionary import Dictionary
    from tfree_codec.decode.scorer import Scorer
    from tfree_codec.decode.torch_decoder import TorchDecoder

    codec = Codec(CodecConfig(vocab_size=512, num_activations=4))
    words = "the a cat dog sat ran on under mat log big small red quickly slowly and then catalogue dogma".split()
    d = Dictionary.from_texts(codec, [" ".join(words)])
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((3, 512)) * 3).astype(np.float32)
    want = TorchDecoder(d, "mean_logit").scores(torch.from_numpy(logits)).numpy()
    ptr, idx = d.indptr, d.indices
    manual = np.array([[row[idx[ptr[w]:ptr[w + 1]]].mean() for w in range(len(d))] for row in logits])
    assert np.allclose(want, manual, atol=1e-5)
    sc = Scorer(codec, "mean_logit")
    sc.add(d.words, ptr, idx)
    for b in range(3):
        got = np.empty(len(d), np.float32)
        got[sc.order] = sc.score_one(logits[b])
        assert np.allclose(got, manual[b], atol=1e-4)


@pytest.mark.slow
def test_the_breakdown_adds_up_to_each_models_bits_per_byte(make_tiny_shards, tmp_path):
    """`tfree eval --breakdown --against BPE`: the classes' bits sum to what `tfree eval` reports for each model."""
    from tfree_codec.generate.breakdown import CLASSES, breakdown, format_table, word_class

    shards = make_tiny_shards(1)
    common = ["--preset", "tiny", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--seq-len", "16",
              "--batch-size", "4", "--max-steps", "4", "--val-bytes", "400", "--seed", "0", "-q"]
    for name, extra in (("t", []), ("b", ["--baseline", "bpe", "--bpe-vocab", "300"])):
        r = cli("train", shards, "-o", str(tmp_path / name), *common, *extra)
        assert r.exit_code == 0, r.output
    t, b = str(tmp_path / "t" / "final"), str(tmp_path / "b" / "final")
    got = breakdown(t, shards, b, "cpu")
    for path, key in ((t, "tfree_bpb"), (b, "bpe_bpb")):
        ev = json.loads(cli("eval", path, shards, "--json", "-q").output)
        assert got[key] == pytest.approx(ev["bpb"], rel=1e-5)
    assert set(got["classes"]) == set(CLASSES)
    assert got["classes"]["marker"]["words"] > 0 and got["classes"]["top 1k"]["words"] > 0
    assert sum(c["bytes"] for c in got["classes"].values()) == got["bytes"]
    assert "T-FREE/BPE" in format_table(got)
    out = cli("eval", t, shards, "--breakdown", "--against", b, "-q")
    assert out.exit_code == 0 and "top 1k" in out.output, out.output
    refused = cli("eval", t, shards, "--against", b, "-q")
    assert refused.exit_code != 0 and "--breakdown" in refused.output
    assert [word_class(w, i) for w, i in (("<|endoftext|>", 0), (",", 20), ("42", 30), ("cat", -1), ("cat", 20),
                                          ("dog", 2000), ("emu", 20000))] == \
        ["marker", "punctuation", "number", "unseen", "top 1k", "1k-10k", "rare"]


def test_the_default_objective_is_word_and_the_bpe_baseline_ignores_it():
    from tfree_codec.train.settings import TrainConfig, model_config

    assert TrainConfig.of(data="d", out_dir="o").shape.objective == "word"
    bpe = TrainConfig.of(data="d", out_dir="o", baseline="bpe")
    assert bpe.shape.objective == "bce" and model_config(bpe, vocab_size=300).objective == "bce"
    assert TrainConfig.of(data="d", out_dir="o", objective="bce").shape.objective == "bce"


def test_an_explicit_word_objective_with_the_bpe_baseline_is_refused_before_work(tmp_path):
    (tmp_path / "data.txt").write_text("some text\n")
    r = cli("train", tmp_path / "data.txt", "-o", tmp_path / "run", "--baseline", "bpe", "--objective", "word",
            "--max-steps", "1")
    assert r.exit_code != 0 and "needs a T-FREE model" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_bce_run_resumes_as_bce_though_the_default_is_word(tiny_run, austen, tmp_path):
    """A BCE run's train_config.json leaves the objective out (as runs from before the word objective did): a
    resumed run reads that as bce, not as today's default."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run("tfree"), run)
    shutil.rmtree(run / "final")
    with open(run / "step-000006" / "train_config.json") as f:
        assert "objective" not in json.load(f)
    from conftest import RUN_FLAGS
    r = cli("train", austen["shards"], "-o", run, "--max-steps", "7", "--resume", "auto",
            *RUN_FLAGS)
    assert r.exit_code == 0, r.output
    from tfree_codec.model.checkpoint import read_model_config
    assert read_model_config(str(run / "final")).objective == "bce"
