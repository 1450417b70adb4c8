"""Decoding: scores, ranking, sampling, log-probabilities, the numba and torch paths agree, and spelling."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from tfree_codec import MARKERS, Codec, CodecConfig, TfreeError
from tfree_codec.assets import sample_text
from tfree_codec.decode.decoder import Decoder
from tfree_codec.decode.dictionary import Dictionary
from tfree_codec.decode.spell import Speller, spell
from tfree_codec.decode.wordscore import Ranking

V = 8192
OTHER_SCRIPTS = ("Привет мир как дела сегодня хорошо спасибо большое книга читать писать говорить "
                 "Größe Straße über schön Mädchen café naïve año señor niño 東京 大学 日本語 ありがとう "
                 "こんにちは 北京 中国 学生")


@pytest.fixture(scope="module")
def dictionary(codec):
    return Dictionary.from_texts(codec, [sample_text(150_000), OTHER_SCRIPTS], min_count=1)


@pytest.fixture(scope="module")
def decoder(dictionary):
    return Decoder(dictionary)


@pytest.fixture(scope="module", params=["numba", "torch"])
def either(request, dictionary):
    """The numba decoder and its torch twin: the same scores, the same greedy words, the same sampler."""
    if request.param == "torch":
        pytest.importorskip("torch")  # the codec-only install (.ci/codec-only) has no torch
    return Decoder(dictionary, backend=request.param)


def scores(decoder, x) -> np.ndarray:
    """(B, W) float64 scores in dictionary order, whichever path made them."""
    return np.asarray(decoder.scores(x), np.float64)


def reference_scores(dictionary, logits):
    """s(w) = mean(sigmoid[P_w]) - mean(sigmoid[not P_w]), in float64, word by word."""
    sig = 1 / (1 + np.exp(-logits.astype(np.float64)))
    total = sig.sum(1)
    out = np.empty((len(sig), len(dictionary)))
    for w in range(len(dictionary)):
        p = dictionary.pattern(w)
        inside = sig[:, p].sum(1)
        out[:, w] = inside / len(p) - (total - inside) / (V - len(p))
    return out


def exact(dictionary, ids):
    """Saturated logits of each word's own pattern: +10 on its rows, -10 elsewhere."""
    x = np.full((len(ids), V), -10, np.float32)
    for j, w in enumerate(ids):
        x[j, dictionary.pattern(w)] = 10
    return x


def random_logits(b, seed=0, shift=-3.0):
    return (np.random.default_rng(seed).standard_normal((b, V)) * 2 + shift).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 3, 70])  # one at a time, and in blocks of LANES (one partly filled)
def test_scores_follow_the_definition(dictionary, decoder, batch):
    x = random_logits(batch, seed=batch)
    assert np.abs(decoder.scores(x) - reference_scores(dictionary, x)).max() < 2e-6


def test_every_word_decodes_first_from_its_own_pattern(dictionary, decoder):
    ids = np.arange(len(dictionary))
    got = decoder.decode(exact(dictionary, ids), temperature=0)
    same = {w: {w} for w in dictionary.words}
    for group in dictionary.collisions():  # words with identical patterns cannot be told apart
        for w in group:
            same[w] = set(group)
    wrong = [(dictionary.words[i], w) for i, w in zip(ids, got.words) if w not in same[dictionary.words[i]]]
    assert wrong == []
    assert np.all(got.probs == 1) and np.all(got.scores > 0.99)


def test_parallel_scoring_equals_one_thread(dictionary, decoder):
    x = random_logits(70, seed=3)
    many = Decoder(dictionary, num_threads=2)
    assert np.array_equal(many.scores(x), decoder.scores(x))
    assert np.array_equal(many.scores(x[:2]), decoder.scores(x[:2]))


def test_torch_path_agrees_with_numba(dictionary, decoder):
    torch = pytest.importorskip("torch")
    x = random_logits(8, seed=4, shift=-1.0)
    tdec = Decoder(dictionary, backend="torch")
    s_numba, s_torch = decoder.scores(x), tdec.scores(torch.as_tensor(x)).numpy()
    assert np.abs(s_numba - s_torch).max() < 1e-5
    for b in range(len(x)):  # the same ranking wherever scores are not within rounding of each other
        top = np.argsort(-s_numba[b])[:50]
        clear = np.diff(s_numba[b][top]) < -2e-5
        assert np.all(np.diff(s_torch[b][top])[clear] < 0)
    ids = np.arange(16, len(dictionary), 97)
    assert np.array_equal(tdec.decode(exact(dictionary, ids), temperature=0).ids,
                          decoder.decode(exact(dictionary, ids), temperature=0).ids)
    t = np.arange(len(x)) * 13 + 20
    assert np.abs(tdec.log_probs(x, t, 0.05) - decoder.log_probs(x, t, 0.05)).max() < 1e-3


def test_greedy_is_temperature_zero_or_top_k_one(either):
    x = random_logits(4, seed=5)
    best = scores(either, x).argmax(1)
    assert np.array_equal(either.decode(x, temperature=0).ids, best)
    assert np.array_equal(either.decode(x, temperature=0.5, top_k=1, generator=1).ids, best)


def test_sampling_is_seeded(either):
    x = random_logits(5, seed=6)
    a = either.decode(x, temperature=0.05, generator=np.random.default_rng(7))
    b = either.decode(x, temperature=0.05, generator=np.random.default_rng(7))
    assert a.words == b.words and np.array_equal(a.probs, b.probs)
    draws = {tuple(either.decode(x, temperature=0.05, generator=s).words) for s in range(6)}
    assert len(draws) > 1


def softmax(s, t):
    z = np.exp((s - s.max()) / t)
    return z / z.sum()


def test_temperature_sampling_follows_the_softmax(dictionary, either):
    x = random_logits(1, seed=8, shift=-2.0)
    p = softmax(scores(either, x)[0], 0.01)
    rng = np.random.default_rng(0)
    got = either.decode(np.repeat(x, 600, axis=0), temperature=0.01, generator=rng)  # 600 draws, one per row
    freq = np.bincount(got.ids, minlength=len(dictionary)) / len(got.ids)
    top = np.argsort(-p)[:3]
    assert np.all(np.abs(freq[top] - p[top]) < 4 * np.sqrt(p[top] / len(got.ids)) + 0.01)
    assert all(abs(pr - p[i]) < 1e-4 for i, pr in zip(got.ids, got.probs))


def test_top_k_and_top_p_restrict_the_choice(either):
    x = random_logits(1, seed=9, shift=-2.0)
    s = scores(either, x)[0]
    order = np.argsort(-s)
    rng = np.random.default_rng(1)
    rows = np.repeat(x, 200, axis=0)  # 200 draws, one per row
    k_ids = set(either.decode(rows, temperature=1.0, top_k=5, generator=rng).ids.tolist())
    assert k_ids <= set(order[:5].tolist()) and len(k_ids) > 1
    p = softmax(s, 0.02)
    nucleus = order[:np.searchsorted(np.cumsum(p[order]), 0.5) + 1]
    d = either.decode(rows, temperature=0.02, top_p=0.5, generator=rng)
    for i, pr in zip(d.ids, d.probs):
        assert abs(pr - p[i] / p[nucleus].sum()) < 1e-4  # renormalised over the nucleus
    assert set(d.ids.tolist()) <= set(nucleus.tolist())
    tiny = set(either.decode(rows[:20], temperature=1.0, top_p=1e-9, generator=rng).ids.tolist())
    assert tiny == {int(order[0])}


def test_batched_sampling_restricts_every_row(either):
    x = random_logits(70, seed=11, shift=-2.0)  # 64 rows side by side, then 6
    s = scores(either, x)
    for _ in range(5):
        d = either.decode(x, temperature=0.5, top_k=3, generator=np.random.default_rng(_))
        assert all(i in np.argsort(-s[b])[:3] for b, i in enumerate(d.ids))
        d = either.decode(x, temperature=0.02, top_p=0.3, generator=np.random.default_rng(_))
        for b, i in enumerate(d.ids):
            p = softmax(s[b], 0.02)
            order = np.argsort(-p)
            assert i in order[:np.searchsorted(np.cumsum(p[order]), 0.3) + 1]
    a = either.decode(x, temperature=0.05, top_p=0.9, generator=3)
    b = either.decode(x, temperature=0.05, top_p=0.9, generator=3)
    assert a.words == b.words


def test_log_probs_are_a_normalised_softmax(codec):
    small = Dictionary.from_texts(codec, [sample_text(3_000)])
    dec = Decoder(small)
    x = np.repeat(random_logits(1, seed=10), len(small), axis=0)
    for t in (1.0, 0.05, 0.0005):  # the smallest underflows the fused normaliser: it must be redone
        lp = dec.log_probs(x, np.arange(len(small)), temperature=t)
        s = reference_scores(small, x[:1])[0]
        expect = (s - s.max()) / t - np.log(np.exp((s - s.max()) / t).sum())
        assert np.abs(lp - expect).max() < 1e-3 * max(1, 0.05 / t) and abs(np.exp(lp).sum() - 1) < 1e-4


def test_prompt_words_added_at_run_time_can_be_decoded(codec):
    d = Dictionary.from_texts(codec, [sample_text(20_000)])
    dec = Decoder(d)
    dec.decode(random_logits(1), temperature=0)  # the scorer exists now; it must follow the dictionary
    new = d.extend(["Quetzalcoatl", "zyzzyva"])
    assert dec.decode(exact(d, new), temperature=0).words == ["Quetzalcoatl", "zyzzyva"]
    x = random_logits(70, seed=12)  # every score still follows the definition after the scorer grew
    assert np.abs(dec.scores(x) - reference_scores(d, x)).max() < 2e-6
    if importlib.util.find_spec("torch"):  # and the torch backend too, where torch is installed
        assert np.array_equal(Decoder(d, backend="torch").decode(exact(d, new), temperature=0).ids, new)


def test_decoded_words_become_ordinary_text(codec):
    text = " Emma was not  sorry.\n\nShe said: “no”\t3.5%"
    d = Dictionary.from_texts(codec, [text])
    ids = [d.index(w) for w in codec.split(text)]
    dec = Decoder(d)
    got = dec.decode(exact(d, ids), temperature=0)
    assert "<|ws|>" in got.words and "<|\n|>" not in dec.text(got.words)
    assert dec.text(got.words) == text


def test_bad_arguments_fail_clearly(either):
    x = random_logits(1)
    bad = [dict(logits=x[:, :100]), dict(logits=np.full((1, V), np.nan)), dict(temperature=-1),
           dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5), dict(generator="seed")]
    for kw in bad:
        with pytest.raises(TfreeError):
            either.decode(kw.pop("logits", x), **kw)
    with pytest.raises(TfreeError):
        either.log_probs(x, [10 ** 9], 1.0)
    with pytest.raises(TfreeError):
        either.log_probs(x, [0], 0.0)
    with pytest.raises(TfreeError):
        Decoder(either.dictionary, backend="gpu")


def test_import_does_not_load_torch():
    code = "import tfree_codec.decode.decoder, tfree_codec.decode.dictionary, tfree_codec.decode.spell, sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# -- unseen words --------------------------------------------------------------------------------------------------
def held_out(dictionary, codec):
    """Words of 3-15 characters from later in the sample, not in the dictionary."""
    words = dict.fromkeys(w for w in codec.split(sample_text(400_000)[150_000:]) if 3 <= len(w) <= 15)
    return [w for w in words if w not in dictionary][:60]


def test_spelling_recovers_held_out_words(codec, dictionary):
    speller = Speller(codec, dictionary.words)
    words = held_out(dictionary, codec) + ["говорит", "Großmutter", "大学生"]
    indptr, indices = codec.encode_words(words)
    x = np.full((len(words), V), -10, np.float32)
    for i in range(len(words)):
        x[i, indices[indptr[i]:indptr[i + 1]]] = 10
    got = speller.spell(x)
    right = sum(g is not None and g[0] == w for g, w in zip(got, words))
    assert right >= 0.9 * len(words)
    assert [g[0] for g in got[-3:]] == words[-3:]  # other scripts and multi-byte characters


def test_spelling_needs_the_characters_and_a_matching_hash(codec):
    x = np.full(V, -10, np.float32)
    x[codec.encode_words(["cab"])[1]] = 10
    assert spell(x, codec, alphabet="abc")[0][0] == "cab"
    assert spell(x, codec, alphabet="xyz")[0] is None or spell(x, codec, alphabet="xyz")[0][0] != "cab"
    with pytest.raises(TfreeError, match="empty"):
        Speller(codec, list(MARKERS))
    aleph = Codec(CodecConfig(hash="aleph", vocab_size=4096))
    y = np.full(4096, -10, np.float32)
    y[aleph.encode_words(["bad"])[1]] = 10
    assert spell(y, aleph, alphabet="abd")[0][0] == "bad"


def test_decoder_falls_back_to_spelling_weak_positions(codec, dictionary):
    word = held_out(dictionary, codec)[0]
    x = np.full((2, V), -10, np.float32)
    x[0, codec.encode_words([word])[1]] = 10
    x[1, dictionary.pattern(dictionary.index("Emma"))] = 10
    plain = Decoder(dictionary).decode(x, temperature=0)
    assert plain.words[0] != word and plain.scores[0] < 0.9
    out = Decoder(dictionary, spell_below=0.9).decode(x, temperature=0)
    assert out.words == [word, "Emma"] and out.ids[0] == -1 and np.isnan(out.probs[0]) and out.scores[0] > 0.99


def test_spelling_is_compared_in_the_decoders_own_score(codec, dictionary):
    """A mean-logit decoder (a word-objective model) compares the spelling's mean logit with the best word's, not
    the spelling's sigmoid score (whose scale is another): the spelled word's score is its mean logit."""
    word = held_out(dictionary, codec)[0]
    x = np.full((1, V), -10, np.float32)
    x[0, codec.encode_words([word])[1]] = 10
    rank = Ranking("mean_logit")
    plain = Decoder(dictionary, rank=rank).decode(x, temperature=0)
    assert plain.words[0] != word and plain.scores[0] < 9.9
    out = Decoder(dictionary, spell_below=9.9, rank=rank).decode(x, temperature=0)
    assert out.words == [word] and out.ids[0] == -1 and out.scores[0] == pytest.approx(10.0)
    assert Decoder(dictionary, spell_below=plain.scores[0] - 1, rank=rank).decode(x, temperature=0).words == plain.words


@pytest.mark.parametrize("score", ["sigmoid_diff", "mean_logit"])
def test_a_patterns_score_in_float64_is_the_scorers(codec, dictionary, score):
    """WordScore.of_patterns (the greedy tie-break's and the spelling fallback's reference) gives each pattern the
    score the scorer gives its dictionary word, and a word outside the dictionary its own rows' score."""
    from tfree_codec.decode.wordscore import word_score

    x = np.random.default_rng(5).normal(-2.0, 2.0, (1, V)).astype(np.float32)
    ws = word_score(score)
    ids = np.arange(20, 60)
    got = ws.of_patterns(x[0], [dictionary.pattern(int(i)) for i in ids], V)
    assert np.allclose(got, Decoder(dictionary, rank=Ranking(score)).scores(x)[0, ids], atol=1e-5)
    word = held_out(dictionary, codec)[0]
    rows = codec.encode_words([word])[1]
    g = ws.transform64(x[0])
    want = g[rows].mean() if score == "mean_logit" else g[rows].mean() - (g.sum() - g[rows].sum()) / (V - len(rows))
    assert ws.of_patterns(x[0], [rows], V)[0] == pytest.approx(want, rel=1e-12)
