"""The pruned search (decode/search.py) against full scoring: the same greedy words (ties to the lowest id), every
word that can reach the top k, at most MASS_EPS of the mass left out, log-probabilities to float32 noise; over
random and trained-model logits, several codecs, dictionaries with collisions and extended words, score families,
calibrations (scale, count prior, any bias), temperatures, B = 1 and B > 1, numba and torch."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfree_codec import Codec, CodecConfig
from tfree_codec.assets import sample_text
from tfree_codec.decode import _prune
from tfree_codec.decode.decoder import Decoder
from tfree_codec.decode.dictionary import Dictionary, count_prior
from tfree_codec.decode.search import MASS_EPS
from tfree_codec.decode.wordscore import MEAN_LOGIT, VARIANT2, Ranking

CODECS = [Codec(), Codec(CodecConfig(vocab_size=1024, num_activations=4)),
          Codec(CodecConfig(vocab_size=2048, num_activations=6, k_lower=0))]
# words whose patterns collide (a trigram set forgets repetition), and near neighbours
COLLIDE = ["xxx", "xxxx", "xxxxx", "verwenden", "verwendenden", "много", "многого", "walk", "walks", "walked"]
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def dictionaries():
    """Per codec: a dictionary of ~600 words with counts (ties included), the colliding words among them."""
    out = []
    rng = np.random.default_rng(0)
    words = list(dict.fromkeys(Codec().split(sample_text(8_000))))
    for codec in CODECS:
        d = Dictionary.from_counts(codec, {w: int(c) for w, c in zip(words + COLLIDE, rng.integers(1, 6, 10_000))})
        out.append(d)
    return out


def reference_z(d, x, score=VARIANT2, scale=1.0, bias=None):
    """z = scale * s + bias of every word, float64, word by word (B, W)."""
    g = score.transform64(x)
    v = d.config.vocab_size
    sizes = np.diff(d.indptr)
    alpha, beta = score.alpha_beta(sizes, v)
    S = np.stack([g[:, d.pattern(w)].sum(1) for w in range(len(d))], 1)
    z = scale * (alpha * S + beta * g.sum(1, keepdims=True))
    return z if bias is None else z + np.asarray(bias, np.float64)


def logits_for(d, rng, kind: str, b: int):
    v = d.config.vocab_size
    if kind == "random":
        return (rng.normal(rng.uniform(-6, 0), rng.uniform(0.5, 3), (b, v))).astype(np.float32)
    x = rng.normal(-4, 1.5, (b, v)).astype(np.float32)  # a word's pattern (or two colliding ones) stands out
    for j in range(b):
        w = d.index(COLLIDE[rng.integers(0, 4)]) if kind == "tie" else int(rng.integers(16, len(d)))
        x[j, d.pattern(w)] += rng.uniform(3, 9)
    return x


def greedy_ok(z, ids):
    """ids are the argmax of each row of z (ties to the lowest id), where float32 noise cannot blur it."""
    for row, i in zip(z, ids):
        best = row.max()
        top = np.nonzero(row >= best - 1e-9)[0]
        second = np.max(row[row < best - 1e-9], initial=-np.inf)
        if best - second > 1e-4 * max(1, abs(best)):  # the reference decides: both paths must agree with it
            assert i == top[0]


SCORE_NAMES = ["sigmoid_diff", "mean_logit"]  # every property test runs for both (Calibration.score's names)


def setting(draw, d, name=None):
    score = {"sigmoid_diff": VARIANT2, "mean_logit": MEAN_LOGIT}[name] if name else draw(st.sampled_from([VARIANT2, MEAN_LOGIT]))
    scale = draw(st.sampled_from([1.0, 7.4, 14.0]))
    kind = draw(st.sampled_from(["none", "prior", "vector"]))
    if kind == "none":
        return score, scale, None, None
    if kind == "prior":
        w = (draw(st.floats(0, 1.5)), draw(st.floats(-2, 2)))
        return score, scale, w, count_prior(d.counts, *w)
    vec = np.round(np.random.default_rng(draw(st.integers(0, 99))).normal(0, 2, len(d)), 1).astype(np.float32)
    return score, scale, (lambda dd: vec[:len(dd)]), vec  # rounded: many words share a bias


@pytest.mark.parametrize("name", SCORE_NAMES)
@FAST
@given(data=st.data())
def test_greedy_words_are_full_scorings(dictionaries, name, data):
    d = dictionaries[data.draw(st.integers(0, len(CODECS) - 1))]
    score, scale, bias, vec = setting(data.draw, d, name)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = logits_for(d, rng, data.draw(st.sampled_from(["random", "peaked", "tie"])), data.draw(st.sampled_from([1, 3, 9])))
    pruned = Decoder(d, rank=Ranking(score, scale, bias)).decode(x, temperature=0)
    full = Decoder(d, rank=Ranking(score, scale, bias), search="full").decode(x, temperature=0)
    assert list(pruned.ids) == list(full.ids)
    greedy_ok(reference_z(d, x, score, scale, vec), pruned.ids)
    one = [Decoder(d, rank=Ranking(score, scale, bias)).decode(x[j], temperature=0).ids[0] for j in range(len(x))]
    assert one == list(pruned.ids)  # B > 1 decodes each row as B = 1 does


@pytest.mark.parametrize("name", SCORE_NAMES)
@FAST
@given(data=st.data())
def test_top_k_and_mass_keep_what_full_scoring_needs(dictionaries, name, data):
    d = dictionaries[data.draw(st.integers(0, len(CODECS) - 1))]
    score, scale, bias, vec = setting(data.draw, d, name)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = logits_for(d, rng, data.draw(st.sampled_from(["random", "peaked", "tie"])), 2)
    dec = Decoder(d, rank=Ranking(score, scale, bias))
    z = reference_z(d, x, score, scale, vec)
    order = dec.scorer().order
    k = data.draw(st.sampled_from([1, 5, 40]))
    for row, (cand, cz, _, _) in zip(z, dec.ranker().rows(x, _prune.TOP, k)):
        kth = np.sort(row)[::-1][k - 1]
        need = np.nonzero(row >= kth - 1e-4 * max(1, abs(kth)))[0]
        assert set(need) <= set(order[cand].tolist())
        assert np.allclose(cz, row[order[cand]], atol=1e-4 * max(1, np.abs(row).max()))
    t = data.draw(st.sampled_from([0.05, 0.5, 1.0, 2.0]))
    for row, (cand, cz, tail, _) in zip(z, dec.ranker().rows(x, _prune.MASS, 1, 1 / t)):
        e = np.exp((row - row.max()) / t)
        kept = np.zeros(len(d), bool)
        kept[order[cand]] = True
        assert tail <= MASS_EPS
        assert e[~kept].sum() <= (MASS_EPS + 1e-6) * e[kept].sum()


@pytest.mark.parametrize("name", SCORE_NAMES)
@FAST
@given(data=st.data())
def test_log_probs_match_full_scoring(dictionaries, name, data):
    d = dictionaries[data.draw(st.integers(0, len(CODECS) - 1))]
    score, scale, bias, vec = setting(data.draw, d, name)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = logits_for(d, rng, data.draw(st.sampled_from(["random", "peaked"])), 3)
    t = data.draw(st.sampled_from([0.07, 1.0]))
    targets = rng.integers(0, len(d), 3)
    got = Decoder(d, rank=Ranking(score, scale, bias)).log_probs(x, targets, t)
    z = reference_z(d, x, score, scale, vec) / t
    want = z[np.arange(3), targets] - (np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1))
    assert np.allclose(got, want, atol=2e-3 * max(1, scale / t / 100), rtol=1e-4)


def test_sampling_follows_the_softmax_and_is_seeded(dictionaries):
    d = dictionaries[1]
    rng = np.random.default_rng(5)
    x = np.repeat(logits_for(d, rng, "peaked", 1), 3000, 0)
    x[:, d.pattern(40)] += 2.5  # a second word that holds some of the mass
    dec = Decoder(d, rank=Ranking(scale=6.0, bias=(0.3, 0.0)))
    for kw in ({}, {"top_k": 3}, {"top_p": 0.9}):
        out = dec.decode(x, temperature=1.0, generator=1, **kw)
        assert list(out.ids) == list(dec.decode(x, temperature=1.0, generator=1, **kw).ids)
        z = reference_z(d, x[:1], scale=6.0, bias=count_prior(d.counts, 0.3))[0]
        p = np.exp(z - z.max())
        keep = np.ones(len(d), bool)
        if "top_k" in kw:
            keep = z >= np.sort(z)[::-1][2]
        if "top_p" in kw:
            srt = np.sort(p)[::-1]
            keep = p >= srt[np.searchsorted(np.cumsum(srt) / srt.sum(), 0.9)]
        p = np.where(keep, p, 0) / p[keep].sum()
        freq = np.bincount(out.ids, minlength=len(d)) / len(x)
        assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / len(x)) + 1e-9)


def test_extended_words_are_searched(dictionaries):
    d = Dictionary.from_counts(CODECS[0], {w: 3 for w in COLLIDE})
    dec = Decoder(d, rank=Ranking(scale=20.0, bias=(0.5, -1.0)))
    dec.decode(logits_for(d, np.random.default_rng(0), "peaked", 1), temperature=0)  # index built before extend
    new = d.extend(["Quixotic", "zephyrs", "xxx"])
    x = np.full((2, d.config.vocab_size), -8, np.float32)
    x[0, d.pattern(int(new[0]))] = 8
    x[1, d.pattern(int(new[1]))] = 8
    assert list(dec.decode(x, temperature=0).ids) == list(new[:2])
    assert list(Decoder(d, rank=Ranking(scale=20.0, bias=(0.5, -1.0)), search="full").decode(x, temperature=0).ids) == list(new[:2])


def test_trained_model_logits(dictionaries):
    torch = pytest.importorskip("torch")  # the codec-only install (.ci/codec-only) has no torch

    import tfree_codec
    from tfree_codec import batch_encode

    lm = tfree_codec.load(device="cpu")
    b = batch_encode(lm.codec, ["It is a truth universally acknowledged, that a single man in possession of"])
    with torch.no_grad():
        x = lm.model(b.lm_inputs()[0])[0][0].float().numpy()  # inputs only: the logits (no loss)
    d = lm.vocab
    d.extend(["Quixotic", "zephyrs"])
    cal = lm.calibration
    scores = ("sigmoid_diff", "mean_logit")  # the bundled model's own (the word objective's), and the SPEC's
    assert lm.vocabulary.calibration.score in scores
    for score, bias in [(s, b) for s in scores for b in ((cal["prior_weight"], cal["zero_count_weight"]), None)]:
        kw = dict(rank=Ranking(score, scale=1 / cal["temperature"], bias=bias))
        pruned, full = Decoder(d, **kw), Decoder(d, search="full", **kw)
        assert list(pruned.decode(x, temperature=0).ids) == list(full.decode(x, temperature=0).ids)
        assert np.allclose(pruned.log_probs(x, np.arange(len(x)) + 20, 0.8),
                           full.log_probs(x, np.arange(len(x)) + 20, 0.8), atol=1e-4)
        torch_ids = Decoder(d, backend="torch", **kw).decode(x, temperature=0).ids
        assert list(torch_ids) == list(full.decode(x, temperature=0).ids)


def test_bad_settings_fail_clearly(dictionaries):
    from tfree_codec import TfreeError

    with pytest.raises(TfreeError):
        Decoder(dictionaries[0], search="fast")
    for kw in ({"scale": 0}, {"bias": [1, 2]}, {"score": "variant2"}):
        with pytest.raises(TfreeError):
            Decoder(dictionaries[0], rank=Ranking(**kw))
    with pytest.raises(TfreeError, match="one per dictionary word"):
        Decoder(dictionaries[0], rank=Ranking(bias=lambda d: np.zeros(3))).decode(np.zeros(8192, np.float32), temperature=0)


@pytest.mark.slow
def test_a_word_objective_model_generates_and_evaluates_the_same_pruned_and_full(tiny_run, austen):
    """mean_logit end to end: `tfree generate` (greedy, spelled, sampled, top-k) and `tfree eval` give the same
    bytes with --search pruned and --search full, and the search does prune on that model's logits."""
    import json
    import os

    import torch
    from conftest import cli

    import tfree_codec
    from tfree_codec import batch_encode

    final = os.path.join(tiny_run("word"), "final")
    with open(os.path.join(final, "calibration.json")) as f:
        cal = json.load(f)
    assert cal["score"] == "mean_logit"
    for args in (["-t", "0"], ["-t", "0", "--spell"], ["--seed", "3"], ["--seed", "4", "-t", "1.0", "--top-k", "20"]):
        out = [cli("generate", final, "It is a truth", "-n", "30", "--device", "cpu", "--search", s, *args)
               for s in ("pruned", "full")]
        assert out[0].exit_code == 0, out[0].output
        assert out[0].stdout == out[1].stdout, args
    ev = [cli("eval", final, austen["shards"], "--json", "-q", "--device", "cpu", "--search", s) for s in ("pruned", "full")]
    rep = [json.loads(r.output) for r in ev]
    for key in ("bpb", "bpb_plain_score", "bpb_unk_bytes", "words", "unseen_words"):
        assert rep[0][key] == rep[1][key], key
    lm = tfree_codec.load(final, device="cpu")
    b = batch_encode(lm.codec, [lm.codec.split("It is a truth universally acknowledged, that a single man")])
    with torch.no_grad():
        x = lm.model(b.lm_inputs()[0])[0][0].float().numpy()  # no targets: the word head's loss is not asked for
    rank = Ranking("mean_logit", 1 / cal["temperature"], (cal["prior_weight"], cal.get("zero_count_weight", 0.0)))
    pruned, full = Decoder(lm.vocab, rank=rank), Decoder(lm.vocab, rank=rank, search="full")
    assert list(pruned.decode(x, temperature=0).ids) == list(full.decode(x, temperature=0).ids)
    assert np.allclose(pruned.log_probs(x, np.arange(len(x)) + 20, 1.0), full.log_probs(x, np.arange(len(x)) + 20, 1.0),
                       atol=1e-5)
    read = pruned.ranker().read
    print(f"word model: {read[0]} rows pruned reading {read[1] / max(read[0], 1):.1%} of {len(lm.vocab)} words, "
          f"{read[2]} rows scored in full")


def test_top_k_backs_off_from_searches_that_keep_giving_up(dictionaries):
    """Mean-logit top-k over logits that are almost all negative: the bounds (sums of positive parts) cannot rule out
    any word, so every search gives up and pays for full scoring too. Rows one at a time (as generation asks):
    after two give-ups the calls go straight to full scoring, 2, 4, 8, ... at a time (a rule of the logits alone,
    not of timing: a sampled word must not depend on which path ran); the answers are full scoring's."""
    EXPLORE = 16

    d = dictionaries[0]
    rng = np.random.default_rng(0)
    x = rng.normal(-4.0, 1.5, (48, d.config.vocab_size)).astype(np.float32)
    for j, w in enumerate(rng.integers(16, len(d), len(x))):
        x[j, d.pattern(int(w))] += 8.0
    rank = Ranking("mean_logit", 1.0, (0.5, -1.0))
    rk = Decoder(d, rank=rank).ranker()
    tried = []
    search_row = rk._row
    rk._row = lambda *a: tried.append(search_row(*a)) or tried[-1]
    got = [rk.rows(x[j:j + 1], _prune.TOP, 50, 1.0)[0] for j in range(len(x))]
    every = Decoder(d, rank=rank, search="full").ranker()
    full = [every.rows(x[j:j + 1], _prune.TOP, 50, 1.0)[0] for j in range(len(x))]
    assert all(t is None for t in tried) and 1 <= len(tried) <= 1 + len(x) // EXPLORE + 1
    for (c1, z1, _, _), (c2, z2, _, _) in zip(got, full):
        assert np.array_equal(c1, c2) and np.array_equal(z1, z2)


def test_costs_pick_the_cheaper_path_and_time_the_other_now_and_then():
    """The dearer path is tried once every EXPLORE calls times how much dearer it is (at most 16 times that)."""
    from tfree_codec.decode.search import EXPLORE, Costs

    cheap = Costs()  # searches that prune: 1 ms a row, against full scoring's 5 ms
    assert cheap.search_next()  # nothing timed yet: search
    cheap.add(True, 1e-3)
    assert not cheap.search_next()  # then full scoring, once, to compare
    picks = [cheap.search_next() for _ in range(4 * EXPLORE - 2)]
    assert picks.count(False) == 4  # not timed (say its call failed): one call in EXPLORE goes there
    cheap.add(False, 5e-3)
    picks = [cheap.search_next() for _ in range(4 * 5 * EXPLORE)]  # full scoring is 5x dearer
    assert picks.count(False) == 4
    futile = Costs()  # searches that give up: 4 ms a row with the full scoring after them, against 3 ms
    futile.add(True, 4e-3)
    futile.add(False, 3e-3)
    every = int(EXPLORE * 4 / 3)
    assert [futile.search_next() for _ in range(4 * every)].count(True) == 4
    for _ in range(40):  # the dictionary grew: full scoring now costs 20 ms; the tries see it
        futile.add(False, 20e-3)
    assert [futile.search_next() for _ in range(5 * EXPLORE)].count(False) == 1
    far = Costs()  # however much dearer a path is, it is tried again within 16 * EXPLORE calls
    far.add(True, 1e-4)
    far.add(False, 1.0)
    assert [far.search_next() for _ in range(16 * EXPLORE)].count(False) == 1
