"""Generation with Over-Encoding and Over-Decoding models (issue 15): the n-gram rows of the cached and CPU-step
paths against a full forward, self-speculative greedy == plain greedy word for word, the speculative accept/reject
rule's exactness, --draft on the command line, checkpoints and export of OE/OD models."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import cli
from tfree_codec import Codec, CodecConfig, TfreeError
from tfree_codec.generate.context import Window, pattern_inputs, pattern_rows
from tfree_codec.decode.dictionary import Dictionary
from tfree_codec.generate import LanguageModel, export
from tfree_codec.generate import stream as gen_stream
from tfree_codec.model import checkpoint as ckpt
from tfree_codec.model.transformer import Model, ModelConfig
from tfree_codec.decode.sampling import Sampler, Sampling
from tfree_codec.generate.speculative import DraftStats, accept_or_resample
from tfree_codec.text.ngrams import ngram_rows_reference, word_keys
from tfree_codec.text.words import EOT

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
        "of a wife. However little known the feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the surrounding families.")


pytestmark = pytest.mark.usefixtures("one_thread")  # as the CLI generates (conftest.py)


@pytest.fixture(scope="module")
def codec():
    return Codec(CodecConfig(vocab_size=1024, num_activations=4))


def oe_model(codec, od=True, seed=0, dtype=torch.float32, unigram=True):
    """A tiny model with bigram and trigram tables (two slices each) and random, non-zero projections."""
    torch.manual_seed(seed)
    c = ModelConfig(vocab_size=codec.vocab_size, n_layer=2, n_head=2, n_embd=32, seq_len=24, oe_orders=(2, 3),
                    oe_rows=61, oe_slices=2, od=od, oe_unigram=unigram)
    m = Model(c)
    with torch.no_grad():
        m.oe.proj.weight.normal_(0, 0.3)
        for t in m.oe.tables:
            t.weight.normal_(0, 0.5)
    return m.to(dtype).eval()


def _ids(codec, dictionary, words):
    new = [w for w in dict.fromkeys(words) if w not in dictionary]
    dictionary.extend(new, counts=np.ones(len(new), np.int64))
    return dictionary.extend(words).tolist()


def _full(model, dictionary, ids):
    """Every position's logits of one full forward, the n-gram rows from the reference (a document starts at the
    first item and after each <|endoftext|>)."""
    words = [dictionary.words[i] for i in ids]
    starts = np.array([k == 0 or words[k - 1] == EOT for k in range(len(ids))])
    c = model.config
    rows = ngram_rows_reference(word_keys(words), starts, c.oe_orders, c.oe_slices, c.oe_rows, c.oe_distinct)
    x = pattern_inputs(dictionary, "cpu")(ids, rows)
    with torch.no_grad():
        logits, _ = model(x)
    return logits[0].double().numpy(), rows


@pytest.mark.parametrize("dtype, unigram", [(torch.float32, True), (torch.float64, True), (torch.float32, False)])
def test_over_encoding_generation_reads_the_rows_a_full_forward_reads(codec, dtype, unigram):
    # float32: the numba step; float64: torch's cache; unigram False: the n-gram tables alone (an ablation)
    model = oe_model(codec, dtype=dtype, unigram=unigram)
    dictionary = Dictionary.from_texts(codec, [TEXT])
    words = [EOT, *codec.split(TEXT)[:9], EOT, *codec.split("Emma Woodhouse, handsome, clever")]
    ids = _ids(codec, dictionary, words)
    full, rows = _full(model, dictionary, ids)
    assert np.abs(model.oe.proj.weight.detach().double().numpy()).sum() > 0
    w = Window(model, ids[:4], pattern_inputs(dictionary, "cpu"), pattern_rows(dictionary), True,
               words=dictionary.words.__getitem__)
    assert (w.step is not None) == (dtype == torch.float32)
    got = [w.next_logits()]
    for i in ids[4:]:
        w.append(i)
        got.append(w.next_logits())
    assert np.array_equal(np.stack(w.oe), rows)  # the window's rows are the reference's, EOT boundaries included
    np.testing.assert_allclose(np.stack(got).astype(np.float64), full[3:], rtol=1e-4, atol=1e-4)
    # the two-position pass (speculative.py) and the rollback give the same numbers
    w.append(ids[5])
    w.append(ids[6])
    h = w.hidden(2)
    extended, _ = _full(model, dictionary, ids + ids[5:7])
    for k in range(2):
        np.testing.assert_allclose(np.asarray(w.logits(h[k]), np.float64), extended[len(ids) + k], rtol=1e-4, atol=1e-4)
    w.pop()
    w.pop()
    w.append(ids[7])
    again, _ = _full(model, dictionary, ids + ids[7:8])
    np.testing.assert_allclose(np.asarray(w.next_logits(), np.float64), again[-1], rtol=1e-4, atol=1e-4)
    # without Over-Encoding inputs the model refuses in one line
    with pytest.raises(TfreeError, match="oe_rows"):
        model(pattern_inputs(dictionary, "cpu")(ids[:3]))


def test_the_window_drops_the_oldest_half_and_keeps_each_items_rows(codec):
    model = oe_model(codec)
    dictionary = Dictionary.from_texts(codec, [TEXT])
    ids = _ids(codec, dictionary, [EOT, *codec.split(TEXT)])
    assert len(ids) > 40
    w = Window(model, ids[:5], pattern_inputs(dictionary, "cpu"), pattern_rows(dictionary), True,
               words=dictionary.words.__getitem__)
    for i in ids[5:40]:
        w.next_logits()
        w.append(i)
    assert w.start > 0
    _, rows = _full(model, dictionary, ids[:40])
    assert np.array_equal(np.stack(w.oe), rows)  # the rows keep the history the window dropped
    expect = model(pattern_inputs(dictionary, "cpu")(ids[w.start:40], rows[w.start:]), last=True)[0][0, -1]
    np.testing.assert_allclose(w.next_logits(), expect.detach().numpy(), rtol=1e-4, atol=1e-4)


# -- the accept/reject rule -------------------------------------------------------------------------------------
def test_accept_or_resample_draws_exactly_from_p():
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.25, 0.15, 0.1, 0.0])
    q = np.array([0.1, 0.5, 0.1, 0.1, 0.2])  # q puts mass where p has none
    n = 40_000
    counts = np.zeros(5)
    kept = 0
    for d in rng.choice(5, size=n, p=q):
        i, ok = accept_or_resample(p, q, int(d), rng)
        counts[i] += 1
        kept += ok
    freq = counts / n
    assert np.abs(freq - p).max() < 4 * np.sqrt(0.25 / n)  # within 4 standard errors of p
    assert counts[4] == 0
    assert abs(kept / n - np.minimum(p, q).sum()) < 0.01  # acceptance is sum(min(p, q))
    # p == q: every draft stays; a draft p never draws: always replaced by a draw from p
    assert all(accept_or_resample(p, p, 1, rng) == (1, True) for _ in range(100))
    one = np.eye(5)[4]
    assert all(not accept_or_resample(p, one, 4, rng)[1] for _ in range(100))


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.7, 3, None), (1.0, None, 0.8), (0, None, None)])
def test_the_distribution_is_what_the_sampler_draws(temperature, top_k, top_p):
    z = np.array([2.0, 1.5, 1.4, 0.3, -1.0, -60.0], np.float32)
    sampler = Sampler(Sampling(temperature, top_k, top_p, seed=1))
    p = sampler.probs(z)
    n = 20_000
    counts = np.bincount([sampler.pick(z)[0] for _ in range(n)], minlength=len(z))
    assert p.sum() == pytest.approx(1.0)
    assert np.abs(counts / n - p).max() < 4 * np.sqrt(0.25 / n)


# -- self-speculative generation on a trained model --------------------------------------------------------------
@pytest.fixture(scope="module")
def od_run(tmp_path_factory):
    """A tiny model trained with the Over-Decoding head (60 steps, ~7 s) on sentences of a small grammar: enough
    to continue them, so that some drafts hold and some do not."""
    import random

    from tfree_codec.train.loop import TrainConfig, train

    rng = random.Random(0)
    adj, noun = "big small red old quick".split(), "cat dog man lady horse".split()
    verb, prep = "sat ran slept waited".split(), "on under near behind".split()
    text = " ".join(f"the {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)} {rng.choice(prep)} the "
                    f"{rng.choice(noun)}." for _ in range(1500))
    d = tmp_path_factory.mktemp("spec")
    (d / "grammar.txt").write_text(text, encoding="utf-8")
    cfg = TrainConfig.of(data=str(d / "grammar.txt"), out_dir=str(d / "run"), preset="tiny", n_layer=1, n_head=2,
                         n_embd=32, seq_len=32, batch_size=8, max_steps=60, lr=1e-2, warmup=5, seed=3,
                         val_bytes=2000, log_every=100, eval_every=0, progress=False, plot=False, sample_words=0,
                         od_weight=0.5, device="cpu")
    train(cfg, log=lambda *a, **k: None)
    return d / "run"


PROMPTS = ["the big", "the old lady", "a horse", "It is a truth"]


@pytest.mark.parametrize("use_cache", [True, False])
def test_speculative_greedy_is_plain_greedy_word_for_word(od_run, use_cache):
    lm = LanguageModel.load(str(od_run), device="cpu")
    drafted = accepted = 0
    for prompt in PROMPTS:
        kw = dict(max_new_tokens=45, temperature=0, stop_at_eot=False, use_cache=use_cache)
        plain = [p.word for p in lm.stream(prompt, **kw)]
        stats = DraftStats()
        spec = [p.word for p in lm.stream(prompt, draft=stats, **kw)]
        assert spec == plain, prompt
        drafted += stats.drafted
        accepted += stats.accepted
    assert 0 < accepted < drafted  # both ways: drafts kept, and drafts taken back out of the cache


def test_speculative_sampling_keeps_stops_and_seeds(od_run):
    lm = LanguageModel.load(str(od_run), device="cpu")
    kw = dict(max_new_tokens=30, temperature=0.8, seed=5, draft=True)
    a = lm.generate("the big", **kw)
    assert a == lm.generate("the big", **kw)  # a seed fixes the draws
    stats = DraftStats()
    pieces = list(lm.stream("the big", draft_stats=stats, **kw))
    assert "".join(p.text for p in pieces) == a and stats.drafted > 0
    assert all(0 < p.prob <= 1 for p in pieces)
    cut = lm.generate("the big", stop=[a[3:6]], **kw)
    assert cut == a[:a.index(a[3:6])]


def test_draft_needs_an_over_decoding_head(codec):
    dictionary = Dictionary.from_texts(codec, [TEXT])
    model = oe_model(codec, od=False)
    with pytest.raises(TfreeError, match="Over-Decoding head"):
        gen_stream(model, codec, dictionary, "It is", draft=True)


def test_cli_draft_reports_the_acceptance_rate(od_run):
    r = cli("generate", str(od_run), "the big", "-t", "0", "-n", "30", "--ignore-eot",
                                  "--draft")
    assert r.exit_code == 0, r.output
    plain = cli("generate", str(od_run), "the big", "-t", "0", "-n", "30", "--ignore-eot")
    assert r.stdout == plain.stdout
    assert "second-word acceptance" in r.stderr and "second-word" not in plain.stderr


# -- checkpoints and export ----------------------------------------------------------------------------------------
def test_over_encoding_and_decoding_models_survive_checkpoints_and_export(codec, tmp_path):
    model = oe_model(codec)
    dictionary = Dictionary.from_texts(codec, [TEXT])
    dictionary.save(tmp_path / "dictionary.arrow")
    src = ckpt.save_checkpoint(str(tmp_path / "ck"), model, codec, files={"dictionary.arrow": str(tmp_path / "dictionary.arrow")},
                               step=3)
    dst = export(src, str(tmp_path / "exported"))
    for path in (src, dst):
        back, _, _ = ckpt.load_model(path, "cpu")
        assert back.config == model.config and back.config.oe_orders == (2, 3) and back.config.od
        sd, own = back.state_dict(), model.state_dict()
        assert sorted(sd) == sorted(own) and all(torch.equal(sd[k], own[k]) for k in own)
    with open(os.path.join(dst, "model_config.json")) as f:
        assert json.load(f)["oe_rows"] == 61
    a = LanguageModel.load(src, device="cpu").generate("It is a truth", temperature=0, max_new_tokens=8)
    b = LanguageModel.load(dst, device="cpu").generate("It is a truth", temperature=0, max_new_tokens=8)
    assert a == b


# -- CUDA ------------------------------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_over_encoding_cache_and_speculative_greedy(codec, od_run):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    model = oe_model(codec).cuda()
    dictionary = Dictionary.from_texts(codec, [TEXT])
    ids = _ids(codec, dictionary, [EOT, *codec.split(TEXT)[:14]])
    full, _ = _full(model.cpu(), dictionary, ids)
    model.cuda()
    w = Window(model, ids[:4], pattern_inputs(dictionary, "cuda"), pattern_rows(dictionary), True,
               words=dictionary.words.__getitem__)
    got = [w.next_logits()]
    for i in ids[4:]:
        w.append(i)
        got.append(w.next_logits())
    np.testing.assert_allclose(np.stack(got), full[3:], rtol=1e-3, atol=1e-3)
    lm = LanguageModel.load(str(od_run), device="cuda")
    for prompt in PROMPTS[:2]:
        kw = dict(max_new_tokens=30, temperature=0, stop_at_eot=False)
        assert [p.word for p in lm.stream(prompt, draft=True, **kw)] == [p.word for p in lm.stream(prompt, **kw)]


def test_the_training_sample_of_an_over_encoding_model_is_its_greedy_generation(codec):
    """report.greedy_sample (the sample printed at each evaluation) feeds the n-gram rows as generation does."""
    from types import SimpleNamespace

    from tfree_codec.decode.calibration import Calibration
    from tfree_codec.generate import generate
    from tfree_codec.generate.vocab import Words
    from tfree_codec.train.report import greedy_sample

    model = oe_model(codec, od=False)
    dictionary = Dictionary.from_texts(codec, [TEXT])
    cal = Calibration()
    run = SimpleNamespace(model=model, codec=codec, sample_prompt=lambda n: codec.split(TEXT)[:n],
                          sampling_vocabulary=lambda: Words(Dictionary.from_texts(codec, [TEXT]), cal))
    got = greedy_sample(run, n_words=12, prompt_words=8)
    prompt = codec.join(codec.split(TEXT)[:8])
    want = generate(model, codec, dictionary, prompt, temperature=0, max_new_tokens=12,
                    calibration={"temperature": cal.temperature, "prior_weight": cal.prior_weight})
    assert got == prompt + want
