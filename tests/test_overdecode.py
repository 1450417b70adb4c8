"""Over-Decoding training (issue 15): the word-after-next targets and their mask, the loss weight and its annealing,
checkpoints and resume of a model with the second head."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import cli as run, tiny_flags
from tfree_codec import Codec, CodecConfig
from tfree_codec.model.checkpoint import load_model, read_state_dict
from tfree_codec.model.overtok import AfterNext
from tfree_codec.model.transformer import Model, ModelConfig, Patterns, pattern_bce
from tfree_codec.shards.corpus import Corpus, make_units
from tfree_codec.train.data import Packer, PatternSource
from tfree_codec.train.settings import TrainConfig, od_weight_at

TINY = tiny_flags(device="cpu", sample_words=0)



def _items(source, segs):
    """(document, word position) of each item of a window; <|endoftext|> as (document it ends, -1), or (None, -1)
    at the window's start (then nothing before it tells which document it ends)."""
    out, prev_doc = [], None
    for u, a, b in segs:
        if u < 0:
            out.append((prev_doc, -1))
            prev_doc = None
            continue
        d, s = int(source.units.doc[u]), int(source.units.start[u])
        out += [(d, s + p) for p in range(a, b)]
        prev_doc = d
    return out


@pytest.mark.parametrize("chunk_words", [3, 1024])
def test_the_word_after_next_is_masked_at_sequence_and_document_ends(chunk_words):
    rng = np.random.default_rng(0)
    vocab = "the a cat dog sat on mat red big and then".split()
    texts = [" ".join(rng.choice(vocab, int(rng.integers(1, 9)))) for _ in range(12)]
    corpus = Corpus.from_texts(texts, Codec(CodecConfig(vocab_size=512, num_activations=4)))
    units = make_units(corpus, chunk_words)
    source = PatternSource(corpus, units)
    T, B = 8, 6
    packer = Packer(source.lengths, units.last, units.n_bytes, T, seed=3)
    masked = 0
    for _ in range(4):
        windows, _ = packer.next_windows(B)
        x, y, y2, m2 = source.batch(windows, T, od=True)
        assert y2.shape == (B, T) and m2.shape == (B, T) and m2.dtype == torch.bool
        lens2 = (y2.offsets[1:] - y2.offsets[:-1]).view(B, T)
        for b, segs in enumerate(windows):
            items = _items(source, segs)
            ids = np.concatenate([source.item_ids(*s) for s in segs])
            assert not m2[b, T - 1]  # its word after next lies beyond the window
            for t in range(T - 1):
                (d1, p1), (d2, p2) = items[t + 1], items[t + 2]
                same = d1 is not None and d2 == d1 and p1 >= 0 and (p2 == p1 + 1 or p2 == -1)
                assert bool(m2[b, t]) == same, (t, items)
                masked += not same
                if same:  # the target is the pattern of item t + 2
                    i = b * T + t
                    got = y2.indices[y2.offsets[i]:y2.offsets[i + 1]].numpy()
                    lo, hi = corpus.indptr[ids[t + 2]], corpus.indptr[ids[t + 2] + 1]
                    assert np.array_equal(got, corpus.indices[lo:hi]) and lens2[b, t] == hi - lo
        # the inputs and next-word targets are those of the plain batch
        x0, y0 = source.batch(windows, T)
        assert torch.equal(x0.indices, x.indices) and torch.equal(y0.indices, y.indices)
    assert masked > 4 * B  # document ends did occur (besides the window ends)


def _grid(model_vocab, B, T, seed):
    g = torch.Generator().manual_seed(seed)
    pats = [torch.randperm(model_vocab, generator=g)[:4] for _ in range(B * T)]
    return Patterns.from_lists(pats, (B, T))


def test_od_weight_zero_is_the_next_word_loss_and_a_weight_adds_the_second_head():
    c = ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, seq_len=8, od=True)
    torch.manual_seed(0)
    model = Model(c)
    assert "head2.weight" in model.state_dict() and "head2.weight" not in Model(ModelConfig(**{**vars(c), "od": False})).state_dict()
    x, y, y2 = _grid(64, 2, 8, 1), _grid(64, 2, 8, 2), _grid(64, 2, 8, 3)
    m2 = torch.rand(2, 8, generator=torch.Generator().manual_seed(4)) > 0.3
    logits, plain = model(x, y)
    _, zero = model(x, AfterNext(y, y2, m2, 0.0))
    assert torch.equal(zero, plain)
    _, loss = model(x, AfterNext(y, y2, m2, 0.25))
    nxt, od = model.loss_parts
    expect = pattern_bce(model.head2(model.trunk(x)), y2, m2, c.pos_weight)
    assert torch.allclose(od, expect) and torch.allclose(nxt, plain)
    assert torch.allclose(loss, plain + 0.25 * expect)
    loss.backward()  # the weight reaches the second head, and only a masked-in position does
    assert model.head2.weight.grad.abs().sum() > 0
    model.zero_grad()
    _, loss = model(x, AfterNext(y, y2, torch.zeros(2, 8, dtype=torch.bool), 1.0))
    loss.backward()
    assert model.head2.weight.grad.abs().sum() == 0


def test_the_od_weight_anneals_linearly_to_zero():
    cfg = TrainConfig.of(data="d", out_dir="o", od_weight=0.2)
    assert [od_weight_at(s, cfg, 10) for s in (0, 5, 9)] == [0.2, 0.2, 0.2]
    cfg = TrainConfig.of(data="d", out_dir="o", od_weight=0.2, od_anneal=True)
    w = [od_weight_at(s, cfg, 10) for s in range(11)]
    assert w[0] == 0.2 and w[10] == 0.0 and w[5] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(w, w[1:]))
    assert od_weight_at(12, cfg, 10) == 0.0


@pytest.fixture(scope="module")
def od_run(tmp_path_factory):
    from tfree_codec.assets import sample_text

    d = tmp_path_factory.mktemp("od")
    (d / "austen.txt").write_text(sample_text(20_000), encoding="utf-8")
    out = d / "run"
    r = run("train", d / "austen.txt", "-o", out, "--max-steps", 6, "--save-every", 3, "--seed", 1, *TINY,
            "--od-weight", "0.3", "--od-anneal")
    assert r.exit_code == 0, r.output
    return d


def _log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return {r["step"]: r for r in map(json.loads, f) if "loss" in r}


def test_training_logs_both_losses_and_saves_the_second_head(od_run):
    log = _log(od_run / "run")
    assert sorted(log) == [1, 2, 3, 4, 5, 6]
    for s, r in log.items():
        assert r["od_weight"] == pytest.approx(0.3 * (1 - (s - 1) / 6))
        assert r["loss"] == pytest.approx(r["loss_next"] + r["od_weight"] * r["loss_od"], rel=1e-5)
    model, _, _ = load_model(str(od_run / "run" / "final"), "cpu")
    assert model.config.od and model.head2.weight.shape == model.head.weight.shape
    with open(od_run / "run" / "final" / "train_config.json") as f:
        saved = json.load(f)
    assert saved["od_weight"] == 0.3 and saved["od_anneal"] is True
    # tfree eval reads the model as any other (next-word bits per byte; the second head is not used)
    r = run("eval", od_run / "run" / "final", od_run / "austen.txt", "--json", "-q")
    assert r.exit_code == 0, r.output
    assert 0 < json.loads(r.output)["bpb"] < 20


def test_resume_with_od_continues_exactly_and_keeps_its_settings(od_run, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(od_run / "run", b)
    shutil.rmtree(b / "step-000006")
    shutil.rmtree(b / "final")
    # the OD settings are the run's own: not typed again, they are restored
    r = run("train", od_run / "austen.txt", "-o", b, "--max-steps", 6, "--save-every", 3, "--resume", "auto",
            *TINY)
    assert r.exit_code == 0, r.output
    la, lb = _log(od_run / "run"), _log(b)
    assert [lb[s]["loss"] for s in (4, 5, 6)] == [la[s]["loss"] for s in (4, 5, 6)]
    wa, wb = read_state_dict(str(od_run / "run" / "final")), read_state_dict(str(b / "final"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and "head2.weight" in wa
    # another weight would train another model: refused in one line
    shutil.rmtree(b / "final")
    r = run("train", od_run / "austen.txt", "-o", b, "--max-steps", 9, "--resume", "auto", *TINY,
            "--od-weight", "0.1")
    assert r.exit_code == 1 and "does not match this run" in r.output and "od_weight 0.3 -> 0.1" in r.output


@pytest.mark.cuda
def test_cuda_od_loss_matches_the_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    c = ModelConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16, seq_len=8, od=True)
    torch.manual_seed(0)
    model = Model(c)
    x, y, y2 = _grid(64, 2, 8, 1), _grid(64, 2, 8, 2), _grid(64, 2, 8, 3)
    m2 = torch.rand(2, 8, generator=torch.Generator().manual_seed(4)) > 0.3
    _, cpu = model(x, AfterNext(y, y2, m2, 0.3))
    gpu_model = model.cuda()
    _, gpu = gpu_model(x.to("cuda"), AfterNext(y.to("cuda"), y2.to("cuda"), m2.cuda(), 0.3))
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)
    gpu.backward()
    assert gpu_model.head2.weight.grad.abs().sum() > 0
