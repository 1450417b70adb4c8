"""The model: T-FREE embedding and loss, the KV cache, the BPE baseline body, the packer and bits per byte."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tfree_codec import Codec, CodecConfig, TfreeError
from tfree_codec.decode.calibration import Calibration, fit_scale, log_softmax_at
from tfree_codec.decode.spelling import SpellingModel
from tfree_codec.generate.bits import tfree_bpb, windows
from tfree_codec.shards.corpus import Corpus, make_units, split_units
from tfree_codec.train.data import Packer, PatternSource
from tfree_codec.model.transformer import Model, ModelConfig, Patterns, multi_hot, pattern_bce
from tfree_codec.model.step import CpuStep

V = 512


def random_patterns(B, T, v=V, seed=0, max_len=12):
    g = torch.Generator().manual_seed(seed)
    pats = [torch.randperm(v, generator=g)[:int(torch.randint(0, max_len, (1,), generator=g))].sort().values
            for _ in range(B * T)]
    return pats, Patterns.from_lists(pats, (B, T))


def tiny(mode="tfree", **kw):
    return ModelConfig(**{"mode": mode, "vocab_size": V, "n_layer": 2, "n_head": 2, "n_embd": 32, "seq_len": 16, **kw})


def test_embedding_is_the_sum_of_the_patterns_rows():
    torch.manual_seed(0)
    model = Model(tiny())
    pats, x = random_patterns(2, 3)
    emb = model.embed_inputs(x)  # (2, 3, d)
    table = model.embed.weight
    for i, p in enumerate(pats):
        want = table[p].sum(0) if len(p) else torch.zeros(table.shape[1])
        torch.testing.assert_close(emb.view(6, -1)[i], want)


@pytest.mark.parametrize("pos_weight", [1.0, 100.0])
def test_sparse_loss_equals_bce_with_logits_on_the_multi_hot(pos_weight):
    torch.manual_seed(0)
    pats, y = random_patterns(3, 5)
    x = torch.randn(3, 5, V, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 5) > 0.3
    loss = pattern_bce(x, y, mask, pos_weight)
    loss.backward()
    got_grad, x.grad = x.grad.clone(), None
    dense = multi_hot(y, V, torch.float64)  # (15, v), built by a scatter
    assert dense.sum() == sum(len(p) for p in pats)
    per_row = F.binary_cross_entropy_with_logits(x.view(15, V), dense, reduction="none",
                                                 pos_weight=torch.tensor(pos_weight, dtype=torch.float64)).sum(1)
    ref = (per_row * mask.view(-1)).sum() / (mask.sum() * V)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(got_grad, x.grad)


@pytest.mark.parametrize("mode", ["tfree", "bpe"])
def test_kv_cache_gives_the_uncached_logits(mode):
    torch.manual_seed(0)
    model = Model(tiny(mode)).eval()
    B, T = 2, 11
    if mode == "tfree":
        pats, x = random_patterns(B, T)
        def part(a, b):
            return Patterns.from_lists([pats[i * T + t] for i in range(B) for t in range(a, b)], (B, b - a))
    else:
        ids = torch.randint(0, V, (B, T))
        def part(a, b):
            return ids[:, a:b]
    with torch.no_grad():
        full, _ = model(part(0, T))
        cache = model.new_kv_cache(B, max_len=16)
        pieces = [model(part(a, b), kv_cache=cache)[0] for a, b in [(0, 4), (4, 5), (5, 9), (9, 10), (10, 11)]]
    assert cache.pos == T
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(TfreeError, match="KV cache"):
        model(part(0, 6), kv_cache=cache)
    with torch.no_grad():  # generation asks for the last position's logits only, cached or not
        cache.reset()
        model(part(0, 9), kv_cache=cache, last=True)
        last_cached, _ = model(part(9, 11), kv_cache=cache, last=True)
        last_full, _ = model(part(0, T), last=True)
    torch.testing.assert_close(last_full, full[:, -1:])
    torch.testing.assert_close(last_cached, full[:, -1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["tfree", "bpe"])
def test_cpu_step_gives_the_models_logits_and_shares_its_cache(mode):
    torch.manual_seed(0)
    model = Model(tiny(mode)).eval()
    T = 12
    if mode == "tfree":
        pats, x = random_patterns(1, T, max_len=30)
        rows = [p.numpy() for p in pats]
        def part(a, b):
            return Patterns.from_lists(pats[a:b])
    else:
        ids = torch.randint(0, V, (1, T))
        rows = [[int(i)] for i in ids[0]]
        def part(a, b):
            return ids[:, a:b]
    with torch.no_grad():
        full, _ = model(part(0, T))
        cache = model.new_kv_cache(1, max_len=T)
        model(part(0, 5), kv_cache=cache)                 # the prompt through torch, then numpy steps
        step = CpuStep(model, cache)
        got = [step.step(rows[t]) for t in range(5, 9)]
        assert cache.pos == 9
        last, _ = model(part(9, T), kv_cache=cache, last=True)  # and torch goes on from numpy's cache
    torch.testing.assert_close(torch.from_numpy(np.stack(got)), full[0, 5:9], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last[0, -1], full[0, -1], rtol=1e-5, atol=1e-5)
    with pytest.raises(TfreeError, match="KV cache"):
        step.step(rows[0])
    assert CpuStep.fits(model) and not CpuStep.fits(Model(tiny(mode)).to(torch.float64))


def test_parameter_counts_split_embedding_head_body():
    c = tiny()
    p = Model(c).num_params()
    assert p["embedding"] == p["head"] == V * 32
    assert p["total"] == p["embedding"] + p["head"] + p["body"]
    b = Model(tiny("bpe", vocab_size=4 * V)).num_params()
    assert b["embedding"] == b["head"] == 4 * V * 32 and b["body"] == p["body"]  # same body in both modes


def test_config_presets_json_and_bad_values():
    c = ModelConfig.from_preset("tiny", vocab_size=1024)
    assert ModelConfig.from_json(c.to_json()) == c
    assert ModelConfig.from_preset("base").n_embd == 768
    with pytest.raises(TfreeError, match="unknown preset"):
        ModelConfig.from_preset("huge")
    with pytest.raises(TfreeError, match="divisible"):
        ModelConfig(n_embd=30, n_head=4)
    with pytest.raises(TfreeError, match="unknown fields"):
        ModelConfig.from_json('{"n_layers": 3}')


REPETITIVE = "the cat sat on the mat and the dog sat on the log . " * 40


@pytest.mark.slow
def test_a_tiny_model_learns_a_repetitive_text():
    codec = Codec(CodecConfig(vocab_size=V, num_activations=4))
    corpus = Corpus.from_texts([REPETITIVE] * 4, codec)
    units = make_units(corpus, 64)
    source = PatternSource(corpus, units)
    packer = Packer(source.lengths, units.last, units.n_bytes, 16, seed=0)
    torch.manual_seed(0)
    model = Model(tiny(pos_weight=10.0))
    opt = model.configure_optimizer(lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(60):
        x, y = source.batch(packer.next_windows(8)[0], 16)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.25 * np.mean(losses[:3])


def test_packer_targets_every_item_once_and_restores_its_cursor():
    lengths, last = np.array([5, 0, 7, 3]), np.array([True, True, False, True])
    p = Packer(lengths, last, np.ones(4), seq_len=4, seed=1)
    stream_len = int((lengths + last).sum())  # 18 items per epoch
    seen = []
    for _ in range(stream_len // 4 + 1):
        (segs,), _ = p.next_windows(1)
        items = [(u, i) for u, a, b in segs for i in range(a, b)]
        assert len(items) == 5  # seq_len + 1
        seen += items[1:]
    epoch_one = seen[:stream_len - 1]  # the first item of the stream is never a target
    assert sum(1 for u, _ in epoch_one if u == -1) == int(last.sum()) and len(set(x for x in epoch_one if x[0] >= 0)) == 14
    state = p.state_dict()
    a = p.next_windows(3)
    p.load_state_dict(state)
    assert p.next_windows(3) == a
    big = Packer(np.full(50, 3), np.ones(50, bool), np.ones(50), 4, seed=1)
    assert np.array_equal(big.order(0), Packer(np.full(50, 3), np.ones(50, bool), np.ones(50), 4, seed=1).order(0))
    assert not np.array_equal(big.order(0), Packer(np.full(50, 3), np.ones(50, bool), np.ones(50), 4, seed=2).order(0))
    assert not np.array_equal(big.order(0), big.order(1))  # a fresh shuffle every epoch


def test_validation_units_do_not_depend_on_the_seed_and_are_held_out():
    corpus = Corpus.from_texts([f"document {i} " + "word " * (i % 7 + 3) for i in range(200)])
    train, val = split_units(make_units(corpus, 4), val_bytes=300)
    train2, val2 = split_units(make_units(corpus, 4), val_bytes=300)
    assert 0 < len(val) <= len(train) // 9 and np.array_equal(val.doc, val2.doc)
    both = set(zip(train.doc.tolist(), train.start.tolist())) & set(zip(val.doc.tolist(), val.start.tolist()))
    assert not both


def test_eval_windows_cover_every_target_once():
    for n in [1, 2, 5, 17, 33]:
        targets = [i for s, e in windows(n, 8) for i in range(s + 1, e)]
        assert targets == list(range(1, n)) and all(e - s <= 9 for s, e in windows(n, 8))


def test_spelling_model_is_a_sub_probability_that_prefers_familiar_spellings():
    import itertools
    words = ["".join(t) for n in (1, 2, 3) for t in itertools.product("ab", repeat=n)]
    sm = SpellingModel(words, order=3)
    strings = [""] + ["".join(t) for n in range(1, 9) for t in itertools.product("ab", repeat=n)]
    total = float(np.exp2(sm.log2prob(strings)).sum())
    assert 0.5 < total <= 1.0
    lp = sm.log2prob(["ab", "qz"])
    assert lp[0] > lp[1] + 10


def test_unseen_words_are_charged_by_the_chosen_convention():
    acc = {"items": 10, "unseen": 1, "spell_bits": 12.0, "unseen_bytes": 3, "log_probs": np.array([-9 * math.log(2)]),
           "bytes": 40.0, "covered_words": 9, "words": 10, "covered_bytes": 37, "word_bytes": 40}
    cal = Calibration(temperature=0.1, p_unk=0.25, unk_charge="bytes")
    r = tfree_bpb(acc, cal)
    want = 9 - 9 * math.log2(0.75) + 2 + 8 * (3 + 1)  # in-dictionary bits + p_unk + 256^-(bytes+1)
    assert r["bpb"][0] == pytest.approx(want / 40)
    r2 = tfree_bpb(acc, Calibration(temperature=0.1, p_unk=0.25, unk_charge="spell"))
    assert r2["bpb"][0] == pytest.approx((9 - 9 * math.log2(0.75) + 2 + 12) / 40)


def test_temperature_and_prior_weight_are_recovered_by_maximum_likelihood():
    g = torch.Generator().manual_seed(0)
    N, W = 3000, 50
    scores = torch.rand(N, W, generator=g) * 2 - 1           # like s(w) in [-1, 1]
    counts = (torch.rand(W, generator=g) * 6).exp().floor()   # some words never counted
    counts[:10] = 0
    feats = torch.stack([torch.log1p(counts), (counts == 0).float()], 1)
    a, b, c = 12.0, 0.6, -1.5                                  # temperature 1/12, prior weights 0.6 and -1.5
    target = torch.multinomial(torch.softmax(a * scores + feats @ torch.tensor([b, c]), 1), 1, generator=g)[:, 0]
    fa, fb, fc = fit_scale(scores, target, feats, prior=True)
    assert fa == pytest.approx(a, rel=0.1) and fb == pytest.approx(b, abs=0.1) and fc == pytest.approx(c, abs=0.5)
    ll = log_softmax_at(scores, target, [(fa, (fb, fc)), (a, (b, c)), (fa * 1.3, (fb, fc)), (fa, (fb, 0.0))], feats)
    assert ll[0] >= ll[1] - 1e-3 and ll[0] > ll[2] and ll[0] > ll[3]  # the fit is the best of its neighbours
    fa0, fb0, fc0 = fit_scale(scores, target, feats, prior=False)
    assert fb0 == fc0 == 0.0 and log_softmax_at(scores, target, [(fa0, (0.0, 0.0))], feats)[0] < ll[0]


def test_a_feature_constant_over_the_dictionary_keeps_weight_zero():
    """Every word counted (no [count = 0] word): that weight moves no probability, so it stays 0, not NaN."""
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(500, 20, generator=g) * 2 - 1
    counts = torch.arange(1, 21).float()
    feats = torch.stack([torch.log1p(counts), (counts == 0).float()], 1)
    target = torch.multinomial(torch.softmax(10 * scores + 0.5 * feats[:, 0], 1), 1, generator=g)[:, 0]
    fa, fb, fc = fit_scale(scores, target, feats, prior=True)
    assert fc == 0.0 and fa == pytest.approx(10, rel=0.2) and fb == pytest.approx(0.5, abs=0.2)


def test_count_prior_is_the_calibrated_prior():
    from tfree_codec.decode.dictionary import count_prior

    p = count_prior(np.array([0, 1, 9]), 0.5, -2.0)
    assert p.dtype == np.float32 and np.allclose(p, [-2.0, 0.5 * math.log(2), 0.5 * math.log(10)])
    assert np.allclose(count_prior(np.array([0, 3]), 1.0), [0.0, math.log(4)])
