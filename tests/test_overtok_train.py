"""Over-Encoding in training: the loader's n-gram rows, document locality, the exact plain start, sparse tables,
checkpoints and exact resume, evaluation, and the CUDA path."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import cli as run, tiny_flags
from tfree_codec import Codec, CodecConfig
from tfree_codec.model.checkpoint import load_model, read_state_dict
from tfree_codec.model.optim import SplitAdam, clip_grad_norm
from tfree_codec.model.transformer import Model, ModelConfig, Patterns
from tfree_codec.text.ngrams import EOT_KEY, ngram_rows, stream_boundary, word_keys
from tfree_codec.text.words import EOT
from tfree_codec.shards.corpus import Corpus, make_units
from tfree_codec.train.data import Packer, PatternSource

V = 512
OE = dict(oe_orders=(2, 3), oe_rows=97, oe_slices=2)
TINY = tiny_flags(device="cpu")
OE_FLAGS = ["--oe-orders", "2,3", "--oe-rows", "997", "--oe-slices", "2"]



def config(**over):
    return ModelConfig(**{"mode": "tfree", "vocab_size": V, "seq_len": 12, "n_layer": 1, "n_head": 2, "n_embd": 16,
                          **OE, **over})


def corpus_and_source(chunk_words=7, oe=None):
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat and dog ran to log , .".split()
    texts = [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(12)] + [""]
    corpus = Corpus.from_texts(texts, Codec(CodecConfig(vocab_size=V, num_activations=4)))
    units = make_units(corpus, chunk_words)
    return corpus, units, PatternSource(corpus, units, oe)


def items_of(source, segs, T):
    """(unit, offset in the unit's items) of a window's first T items; an <|endoftext|> is item `length` of the
    unit it ends (the segment before it)."""
    out, prev = [], None
    for u, a, b in segs:
        if u >= 0:
            out += [(u, i) for i in range(a, b)]
            prev = u
        else:
            out.append((prev, int(source.lengths[prev])))
    return out[:T]


def unit_rows(corpus, units, u, cfg):
    """A direct ngram_rows over unit u's own items alone (its words, then <|endoftext|> if it ends a document)."""
    ids = corpus.ids(int(units.doc[u]), int(units.start[u]), int(units.stop[u]))
    keys = corpus.word_keys()[ids]
    if units.last[u]:
        keys = np.append(keys, np.uint64(EOT_KEY))
    bnd = np.zeros(len(keys), bool)
    bnd[:1] = True
    return ngram_rows(keys, bnd, cfg.oe_orders, cfg.oe_slices, cfg.oe_rows, cfg.oe_distinct)


@pytest.mark.parametrize("chunk_words", [7, 1000])
def test_loader_rows_equal_a_direct_ngram_rows_of_each_unit_across_window_cuts(chunk_words):
    cfg = config()
    corpus, units, source = corpus_and_source(chunk_words, cfg)
    assert corpus.word_keys().tolist() == word_keys(corpus.lexicon_words).tolist()
    packer = Packer(source.lengths, units.last, units.n_bytes, 12, seed=3)
    direct = {u: unit_rows(corpus, units, u, cfg) for u in range(len(units))}
    starts_mid_unit = crosses_units = 0
    for _ in range(8):
        windows, _ = packer.next_windows(4)
        x, _ = source.batch(windows, 12)
        assert x.oe_rows.shape == (4 * 12, 4) and x.oe_rows.dtype == torch.int64
        want = [direct[u][i] for segs in windows for u, i in items_of(source, segs, 12)]
        assert x.oe_rows.numpy().tolist() == np.array(want).tolist()
        for segs in windows:
            starts_mid_unit += segs[0][1] > 0
            crosses_units += len({u for u, _, _ in segs if u >= 0}) > 1
    assert starts_mid_unit and crosses_units  # the cases that can go wrong were there


def test_keys_never_cross_documents_in_training_batches():
    # the same words in another order around a document leave its rows unchanged: nothing leaks across
    cfg = config()
    corpus, units, source = corpus_and_source(1000, cfg)
    packer = Packer(source.lengths, units.last, units.n_bytes, 12, seed=5)
    for _ in range(6):
        windows, _ = packer.next_windows(3)
        rows = source.batch(windows, 12)[0].oe_rows.numpy().reshape(3, 12, -1)
        for w, segs in enumerate(windows):
            for t, (u, i) in enumerate(items_of(source, segs, 12)):
                doc = int(units.doc[u])
                alone = Corpus.from_texts([corpus.text(doc, 0, int(corpus.doc_words[doc]))], corpus.codec)
                keys = alone.word_keys()[alone.ids(0, 0, int(alone.doc_words[0]))]
                keys = np.append(keys, np.uint64(EOT_KEY))  # whole documents: each ends with <|endoftext|>
                want = ngram_rows(keys, stream_boundary(keys), cfg.oe_orders, cfg.oe_slices, cfg.oe_rows)
                assert rows[w, t].tolist() == want[i].tolist()


def test_zero_projection_gives_the_plain_models_loss_exactly_on_a_real_batch():
    corpus, units, source = corpus_and_source(7, config())
    windows, _ = Packer(source.lengths, units.last, units.n_bytes, 12, seed=1).next_windows(4)
    x, y = source.batch(windows, 12)
    torch.manual_seed(0)
    plain = Model(config(oe_orders=(), oe_rows=0, oe_slices=1))
    torch.manual_seed(0)
    over = Model(config())
    assert all(torch.equal(p, over.state_dict()[k]) for k, p in plain.state_dict().items())  # same seed, same body
    lp, loss_p = plain(x, y)
    lo, loss_o = over(x, y)
    assert torch.equal(loss_p, loss_o) and torch.equal(lp, lo)
    torch.manual_seed(0)
    assert not torch.equal(Model(config(oe_unigram=False))(x, y)[1], loss_p)  # without the word itself: another model


def test_sparse_tables_update_only_the_rows_read_and_clip_like_torch():
    torch.manual_seed(0)
    corpus, units, source = corpus_and_source(7, config())
    x, y = source.batch(Packer(source.lengths, units.last, units.n_bytes, 12, seed=1).next_windows(2)[0], 12)
    dense, sparse = Model(config()), Model(config()).sparse_tables()
    sparse.load_state_dict(dense.state_dict())
    with torch.no_grad():
        for m in (dense, sparse):
            m.oe.proj.weight.normal_(generator=torch.Generator().manual_seed(1))  # so the tables get gradients
    for m in (dense, sparse):
        m(x, y)[1].backward()
    assert sparse.oe.tables[0].weight.grad.is_sparse and not dense.oe.tables[0].weight.grad.is_sparse
    n_dense = torch.nn.utils.clip_grad_norm_(dense.parameters(), 0.05)
    n_sparse = clip_grad_norm(sparse.parameters(), 0.05)
    assert float(n_sparse) == pytest.approx(float(n_dense), rel=1e-5)
    for (name, p), q in zip(dense.named_parameters(), sparse.parameters()):
        assert torch.allclose(p.grad, q.grad.to_dense(), atol=1e-7), name
    opt = sparse.configure_optimizer(1e-2, table_lr_scale=3.0)
    assert isinstance(opt, SplitAdam) and isinstance(dense.configure_optimizer(1e-2), torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-2, 3e-2]  # the tables' group learns 3x faster
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(sparse.parameters()))
    before = sparse.oe.tables[0].weight.detach().clone()
    opt.step()
    read = np.unique(x.oe_rows[:, 0].numpy())
    changed = np.flatnonzero((sparse.oe.tables[0].weight.detach() != before).any(1).numpy())
    assert changed.tolist() == read.tolist()
    state = opt.state_dict()
    fresh = Model(config()).sparse_tables().configure_optimizer(1e-2)
    fresh.load_state_dict(state)
    assert fresh.state_dict()["sparse"]["state"].keys() == state["sparse"]["state"].keys()


def test_evaluation_rows_keep_their_history_across_window_cuts():
    from tfree_codec.generate.bits import unit_ngram_rows

    cfg = config()
    words = [EOT, "a", " b", " c", EOT, "d", " e"]
    rows = unit_ngram_rows(cfg, words)
    keys = word_keys(words)
    assert stream_boundary(keys).tolist() == [True, True, False, False, False, True, False]
    assert rows.tolist() == ngram_rows(keys, stream_boundary(keys), (2, 3), 2, 97).tolist()
    assert rows[5].tolist() == unit_ngram_rows(cfg, ["d"])[0].tolist()  # after <|endoftext|>: a new document


@pytest.fixture(scope="module")
def oe_run(make_tiny_shards, tmp_path_factory):
    shards = make_tiny_shards(11)
    out = str(tmp_path_factory.mktemp("oe") / "a")
    r = run("train", shards, "-o", out, "--max-steps", 6, "--save-every", 3, "--seed", 7, *TINY, *OE_FLAGS)
    assert r.exit_code == 0, r.output
    assert "n-gram tables" in r.output
    return shards, out


def losses(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def test_oe_settings_are_saved_in_the_model_config_and_checked_on_load(oe_run, tmp_path):
    _, out = oe_run
    model, _, _ = load_model(os.path.join(out, "final"))
    assert model.config.oe_orders == (2, 3) and model.config.oe_rows == 997 and len(model.oe.tables) == 4
    saved = json.load(open(os.path.join(out, "final", "train_config.json")))
    assert saved["oe_orders"] == [2, 3] and saved["oe_slices"] == 2
    bad = tmp_path / "ck"
    shutil.copytree(os.path.join(out, "final"), bad)
    cfg = json.load(open(bad / "model_config.json"))
    cfg["oe_rows"] = 998
    (bad / "model_config.json").write_text(json.dumps(cfg))
    from tfree_codec import TfreeError
    from tfree_codec.model.checkpoint import load_weights
    with pytest.raises(TfreeError, match="oe_tables"):
        load_weights(Model(ModelConfig.from_json(json.dumps(cfg))), read_state_dict(str(bad)), str(bad))


def test_oe_resume_equals_the_uninterrupted_run(oe_run, tmp_path):
    shards, out = oe_run
    b = str(tmp_path / "b")
    shutil.copytree(out, b)
    shutil.rmtree(os.path.join(b, "step-000006"))
    shutil.rmtree(os.path.join(b, "final"))
    r = run("train", shards, "-o", b, "--max-steps", 6, "--save-every", 3, "--resume", "auto", *TINY)
    assert r.exit_code == 0, r.output
    assert "resumed from" in r.output
    la, lb = losses(out), losses(b)
    assert [lb[s] for s in range(4, 7)] == [la[s] for s in range(4, 7)]  # bit-exact on CPU
    wa, wb = read_state_dict(os.path.join(out, "final")), read_state_dict(os.path.join(b, "final"))
    assert any(k.startswith("oe_tables.") for k in wa) and all(torch.equal(wa[k], wb[k]) for k in wa)
    state = torch.load(os.path.join(out, "step-000003", "train_state.pt"), weights_only=True)
    assert set(state["optimizer"]) == {"dense", "sparse"}
    r = run("train", shards, "-o", b, "--max-steps", 9, "--resume", "auto", *TINY, "--oe-rows", 1001)
    assert r.exit_code == 1 and "oe_rows 997 -> 1001" in r.output


def test_eval_of_an_oe_checkpoint(oe_run):
    shards, out = oe_run
    r = run("eval", os.path.join(out, "final"), shards, "--json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert 0 < rep["bpb"] < 20 and rep["params"]["oe"] == (997 + 999 + 1001 + 1003) * 8 + 32 * 32
    assert "n-gram tables" in run("eval", os.path.join(out, "final"), shards, "-q").output


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_training_step_with_over_encoding_on_cuda():
    from tfree_codec.train.loop import TrainConfig  # noqa: F401  (the trainer's module imports on a GPU machine)

    corpus, units, source = corpus_and_source(7, config())
    x, y = source.batch(Packer(source.lengths, units.last, units.n_bytes, 12, seed=1).next_windows(4)[0], 12)
    torch.manual_seed(0)
    cpu = Model(config()).sparse_tables()
    gpu = Model(config()).sparse_tables()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    with torch.no_grad():
        assert float(gpu(x.to("cuda"), y.to("cuda"))[1]) == pytest.approx(float(cpu(x, y)[1]), rel=1e-4)
    opt = gpu.configure_optimizer(1e-2, device_type="cuda")
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = gpu(x.to("cuda"), y.to("cuda"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(gpu.parameters(), 1.0)
        opt.step()
    assert torch.isfinite(loss) and gpu.oe.tables[0].weight.grad.is_sparse
    assert not torch.equal(gpu.oe.proj.weight.cpu(), cpu.oe.proj.weight)  # it trained


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tfree_train_with_over_encoding_on_cuda_resumes_and_evaluates(make_tiny_shards, tmp_path):
    shards, out = make_tiny_shards(12), str(tmp_path / "gpu")
    r = run("train", shards, "-o", out, "--max-steps", 4, "--save-every", 2, "--seed", 3, *TINY, *OE_FLAGS,
            "--device", "cuda")
    assert r.exit_code == 0, r.output
    assert "device cuda" in r.output
    shutil.rmtree(os.path.join(out, "step-000004"))
    shutil.rmtree(os.path.join(out, "final"))
    r = run("train", shards, "-o", out, "--max-steps", 4, "--resume", "auto", *TINY, "--device", "cuda")
    assert r.exit_code == 0 and "resumed from" in r.output, r.output
    r = run("eval", os.path.join(out, "final"), shards, "--json", "-q", "--device", "cuda")
    assert r.exit_code == 0 and 0 < json.loads(r.output)["bpb"] < 20, r.output
