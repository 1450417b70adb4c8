"""Generation: greedy is deterministic, a seed reproduces sampling, the KV cache changes nothing but the speed,
words stream one by one and join into text by the codec's rules, prompts grow the dictionary, stop strings cut,
BPE checkpoints generate too, and the CLI (with its bundled model) answers in one line on bad input."""
import os

import numpy as np
import pytest
import torch

from conftest import cli, tiny_model
from tfree_codec import TfreeError
from tfree_codec.model import checkpoint as ckpt
from tfree_codec.model.checkpoint import DICT_FILE
from tfree_codec.assets import sample_text
from tfree_codec.decode.dictionary import Dictionary
from tfree_codec.generate import BUNDLED_MODEL, LanguageModel, Piece, generate, sample_logits, stream
from tfree_codec.generate.language_model import _Stops
from tfree_codec.model.transformer import ModelConfig
from tfree_codec.text.words import EOT, MARKERS

SEQ = 16  # short context: 40 new words exercise the window being cut and re-read
PROMPT = "Emma Woodhouse, handsome, clever, and rich,\nwith a comfortable home"


pytestmark = pytest.mark.usefixtures("one_thread")  # as the CLI generates (conftest.py)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture()
def dictionary(codec):
    return Dictionary.from_texts(codec, [sample_text(20_000)])


@pytest.fixture(scope="module")
def bpe():
    from tfree_codec.train.loop import train_bpe

    tok = train_bpe([sample_text(30_000)], 400)
    return tok, tiny_model("bpe", tok.get_vocab_size(), seed=1)


@pytest.fixture(params=["tfree", "bpe"])
def parts(request, model, dictionary, bpe):
    """(model, vocabulary) of a T-FREE model (with a fresh dictionary) and of a BPE baseline: the tests that take
    it hold for both kinds."""
    if request.param == "tfree":
        return model, dictionary
    tok, m = bpe
    return m, tok


def run(model, codec, dictionary, **kw):
    pieces = list(stream(model, codec, dictionary, PROMPT, **{"max_new_tokens": 40, "stop_at_eot": False, **kw}))
    return [p.word for p in pieces], "".join(p.text for p in pieces), pieces


def test_greedy_is_deterministic(parts, codec):
    model, vocab = parts
    a, text, pieces = run(model, codec, vocab, temperature=0)
    b, _, _ = run(model, codec, vocab, temperature=0, seed=123)  # the seed does not matter when greedy
    assert a == b and len(a) == 40 and text.strip()
    assert all(p.prob == 1.0 for p in pieces) and pieces[-1].finish == "length"


def test_a_seed_reproduces_sampling(parts, codec):
    model, vocab = parts
    a, _, _ = run(model, codec, vocab, temperature=1.0, seed=7, top_p=None)
    b, _, _ = run(model, codec, vocab, temperature=1.0, seed=7, top_p=1.0)
    c, _, _ = run(model, codec, vocab, temperature=1.0, seed=8)
    assert a == b and a != c
    k, _, _ = run(model, codec, vocab, temperature=1.0, seed=7, top_k=3, top_p=0.9)
    assert k == run(model, codec, vocab, temperature=1.0, seed=7, top_k=3, top_p=0.9)[0]


@pytest.mark.slow  # ten generations of a 1k-word run: 8 s
def test_pruned_search_generates_what_full_scoring_generates(model, codec, dictionary):
    cal = {"temperature": 0.1, "prior_weight": 0.6, "zero_count_weight": -0.5}
    for kw in (dict(temperature=0), dict(temperature=0, calibration=cal), dict(temperature=0, spell=True)):
        assert run(model, codec, dictionary, **kw)[0] == run(model, codec, dictionary, search="full", **kw)[0]
    # sampling: the same distribution (test_search.py, <= 1e-6 of the mass left out), drawn in the same storage
    # order from the same random numbers: the same words unless a draw falls within the mass left out
    for kw in (dict(temperature=0.8, seed=5, calibration=cal), dict(temperature=1.0, seed=2, top_k=20)):
        assert run(model, codec, dictionary, **kw)[0] == run(model, codec, dictionary, search="full", **kw)[0]


@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=1.0, seed=3, top_k=20)])
def test_kv_cache_gives_the_same_words(parts, codec, kw):
    model, vocab = parts
    cached, _, _ = run(model, codec, vocab, use_cache=True, **kw)
    uncached, _, _ = run(model, codec, vocab, use_cache=False, **kw)
    assert cached == uncached and len(cached) == 40 > SEQ


def test_words_stream_one_by_one_and_join_by_the_codec_rules(model, codec, dictionary):
    kw = dict(max_new_tokens=30, temperature=1.0, seed=1, stop_at_eot=False)
    it = stream(model, codec, dictionary, PROMPT, **kw)
    first = next(it)  # a piece is there before the rest is generated
    assert isinstance(first, Piece) and first.finish is None
    seen = []
    text = generate(model, codec, dictionary, PROMPT, on_piece=seen.append, **kw)
    assert len(seen) == 30 and seen[0].word == first.word and seen[-1].finish == "length"
    words = [p.word for p in seen]
    assert PROMPT + text == codec.join(codec.split(PROMPT) + words)  # markers became spaces/newlines as they came


def test_prompt_words_join_the_dictionary(model, codec, dictionary):
    assert dictionary.index("Zyzzogeton") < 0
    list(stream(model, codec, dictionary, "The Zyzzogeton sang", max_new_tokens=2, temperature=0))
    assert dictionary.index("Zyzzogeton") >= 0


class FixedLogits(torch.nn.Module):
    """A stand-in model that predicts the same activations at every position (use_cache=False only)."""

    def __init__(self, logits):
        super().__init__()
        self.config = ModelConfig(n_layer=1, n_head=1, n_embd=2, seq_len=SEQ)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the device
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, x, kv_cache=None, last=False):
        return self.logits.expand(1, x.shape[1], -1), None


def test_the_count_prior_of_the_calibration_is_applied(codec, dictionary):
    flat = FixedLogits(np.zeros(8192))  # every word scores the same: only the prior tells them apart
    words, _, _ = run(flat, codec, dictionary, temperature=0, use_cache=False, max_new_tokens=3,
                      calibration={"temperature": 0.07, "prior_weight": 1.0})
    assert words == [dictionary.words[int(np.argmax(dictionary.counts))]] * 3


@pytest.mark.parametrize("temperature", [0, 0.8])
def test_a_model_that_outputs_nan_is_reported_in_one_line(codec, dictionary, temperature):
    with pytest.raises(TfreeError, match="NaN"):
        run(FixedLogits(np.full(8192, np.nan)), codec, dictionary, temperature=temperature, use_cache=False)
    with pytest.raises(TfreeError, match="NaN"):
        sample_logits(np.array([0.0, np.inf]), 1.0, None, None, np.random.default_rng(0))


def test_spelling_fills_in_words_the_dictionary_lacks(codec, dictionary):
    x = np.full(8192, -10.0)
    x[codec.encode_words(["Westonbury"])[1]] = 10
    plain, _, _ = run(FixedLogits(x), codec, dictionary, temperature=0, use_cache=False, max_new_tokens=2)
    assert "Westonbury" not in plain
    spelled, text, pieces = run(FixedLogits(x), codec, dictionary, temperature=0, use_cache=False, max_new_tokens=2,
                                spell=True, spell_below=0.9)
    assert spelled == ["Westonbury"] * 2 and text == " Westonbury Westonbury" and np.isnan(pieces[0].prob)
    assert dictionary.index("Westonbury") >= 0  # it joined the dictionary, so it could be read back


def test_generate_then_train_then_generate(codec, dictionary):
    """Generating runs under torch.inference_mode(); nothing it caches (the position tables) may break a later
    forward pass with gradients."""
    from tfree_codec.model.transformer import Patterns

    m = tiny_model(seed=3)
    first = generate(m, codec, dictionary, PROMPT, max_new_tokens=5, temperature=0, stop_at_eot=False)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = Patterns.from_lists([dictionary.indices[dictionary.indptr[i]:dictionary.indptr[i + 1]] for i in range(2 * SEQ)],
                            shape=(2, SEQ))
    _, loss = m(x, x)
    loss.backward()
    opt.step()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    again = generate(m, codec, dictionary, PROMPT, max_new_tokens=5, temperature=0, stop_at_eot=False)
    assert first and again  # the step changed the weights; generation still runs


def test_stop_strings_cut_the_output(parts, codec):
    model, vocab = parts
    words, text, _ = run(model, codec, vocab, temperature=0)
    stop = text[len(text) // 2:len(text) // 2 + 3]
    cut, got, pieces = run(model, codec, vocab, temperature=0, stop=[stop, "\x00never"])
    assert got == text[:text.find(stop)] and pieces[-1].finish == "stop"
    assert cut == words[:len(cut)]


def test_stop_filter_holds_back_a_possible_start():
    s = _Stops(["END"])
    assert s.feed("the E") == ("the ", False)   # "E" may start "END": held back
    assert s.feed("N") == ("", False)
    assert s.feed("Dless") == ("", True)
    s = _Stops(["END"])
    assert s.feed("E") == ("", False) and s.feed("ast") == ("East", False)


def test_bad_arguments_are_refused(parts, codec):
    model, vocab = parts
    for kw, msg in [(dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=-1), "temperature"),
                    (dict(top_p=0), "top_p"), (dict(top_k=0), "top_k")]:
        with pytest.raises(TfreeError, match=msg):
            stream(model, codec, vocab, PROMPT, **kw)
    with pytest.raises(TfreeError, match="empty"):
        stream(model, codec, vocab, "")


def test_sampling_is_one_frozen_checked_object_that_keywords_only_spell_out(parts, codec):
    import dataclasses

    from tfree_codec.decode.sampling import Sampling

    model, vocab = parts

    s = Sampling(temperature=1.0, top_k=20, top_p=0.9, seed=3, stop="zzz", max_new_tokens=12, stop_at_eot=False)
    assert s.stop == ("zzz",) and not s.greedy and Sampling(temperature=0).greedy and Sampling(top_k=1).greedy
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.temperature = 0.5
    whole = [p.word for p in stream(model, codec, vocab, PROMPT, s)]
    loose = [p.word for p in stream(model, codec, vocab, PROMPT, temperature=1.0, top_k=20, top_p=0.9, seed=3,
                                    stop="zzz", max_new_tokens=12, stop_at_eot=False)]
    assert whole == loose and len(whole) == 12
    assert [p.word for p in stream(model, codec, vocab, PROMPT, s, seed=4)] != whole  # a field replaced
    for bad, msg in [(dict(temperature=-1), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p"),
                     (dict(max_new_tokens=0), "max_new_tokens"), (dict(seed="7"), "generator"),
                     (dict(seed=-1), "the seed must be 0 or more")]:
        with pytest.raises(TfreeError, match=msg):
            Sampling(**bad)


def test_sample_logits_follows_softmax_top_k_and_top_p():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    draws = np.array([sample_logits(logits, 1.0, None, None, rng)[0] for _ in range(4000)])
    assert np.allclose(np.bincount(draws, minlength=4) / 4000, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    assert {sample_logits(logits, 1.0, 2, None, rng)[0] for _ in range(200)} == {0, 1}
    assert {sample_logits(logits, 1.0, None, 0.7, rng)[0] for _ in range(200)} == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert sample_logits(logits, 0, None, None, rng) == (0, 1.0)


@pytest.mark.parametrize("top_p", [1.0, 0.9, 0.5])
def test_one_position_sampler_draws_what_the_block_kernels_draw(top_p):
    """sample1 (generation's fused path) == the decoder's block kernels (mass, nucleus, inverse CDF) on the same u:
    the same word and probability, whatever the score spread."""
    from tfree_codec.decode import _sample

    rng = np.random.default_rng(1)
    for trial in range(40):
        x = (rng.normal(0, [0.01, 1, 30][trial % 3], 3000)).astype(np.float32)
        x[rng.integers(0, 3000, 20)] = x.max()  # ties at the top
        invt, u = np.float32(1 / rng.uniform(0.2, 2)), rng.random(1)
        block = x.reshape(-1, 1)
        best = block.max(0)
        thr = (best - 40.0 / invt).astype(np.float32)
        mass = _sample.mass_above(block, 1, thr, best, invt)
        if top_p < 1:
            thr, mass = _sample.nucleus(block, 1, np.maximum(block.min(0), thr), best, thr, best, invt, top_p * mass)
        pos, e = np.empty(1, np.int64), np.empty(1, np.float64)
        _sample.draw(block, 1, thr, best, invt, u * mass, pos, e)
        i, p = _sample.sample1(x, invt, np.float32(40.0), top_p, float(u[0]))
        assert i == pos[0]
        assert p == pytest.approx(e[0] / mass[0], rel=1e-4)


def test_bpe_checkpoints_generate_tokens_the_same_way(bpe, codec):
    tok, m = bpe
    a = list(stream(m, codec, tok, PROMPT, max_new_tokens=40, temperature=0, stop_at_eot=False))
    b = list(stream(m, codec, tok, PROMPT, max_new_tokens=40, temperature=0, stop_at_eot=False, use_cache=False))
    assert [p.word for p in a] == [p.word for p in b] and len(a) == 40
    s1 = generate(m, codec, tok, PROMPT, max_new_tokens=40, temperature=1.0, seed=5, stop_at_eot=False)
    assert s1 == generate(m, codec, tok, PROMPT, max_new_tokens=40, temperature=1.0, seed=5, stop_at_eot=False)
    assert "".join(p.text for p in a) == tok.decode([tok.token_to_id(p.word) for p in a])


# -- checkpoints and the command line --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, codec, model):
    d = tmp_path_factory.mktemp("ckpt")
    dict_path = d / "dict.arrow"
    Dictionary.from_texts(codec, [sample_text(20_000)]).save(dict_path)
    return ckpt.save_checkpoint(str(d / "run" / "final"), model, codec, files={DICT_FILE: str(dict_path)},
                                json_files={ckpt.CALIBRATION_FILE: {"temperature": 0.05, "p_unk": 0.02}})



def test_language_model_loads_run_directories(checkpoint):
    lm = LanguageModel.load(str(checkpoint).rsplit("/final", 1)[0], device="cpu")  # the run dir -> its final/
    assert lm.mode == "tfree" and lm.calibration["temperature"] == 0.05 and lm.path == checkpoint
    kw = dict(max_new_tokens=5, seed=0, stop_at_eot=False)
    assert lm.generate("Emma", **kw) == lm.generate("Emma", **kw) != ""


def test_export_drops_rare_words_and_can_halve_the_weights(tmp_path, checkpoint):
    src = LanguageModel.load(checkpoint, device="cpu")
    r = cli("export", checkpoint, "-o", str(tmp_path / "small"), "--min-count", "2", "--half")
    assert r.exit_code == 0, r.output
    assert "exported" in r.stderr
    small = LanguageModel.load(str(tmp_path / "small"), device="cpu")
    counts = dict(zip(src.vocab.words, src.vocab.counts.tolist()))
    assert set(small.vocab.words) == {w for w, c in counts.items() if c >= 2 or w in MARKERS or w == EOT}
    assert small.calibration == src.calibration
    for k, v in src.model.state_dict().items():  # float32 again, at float16's rounding
        w = small.model.state_dict()[k]
        assert w.dtype == torch.float32 and torch.equal(w, v.half().float())
    assert os.path.getsize(tmp_path / "small" / "model.safetensors") < 0.6 * os.path.getsize(os.path.join(checkpoint, "model.safetensors"))
    assert small.generate("Emma", max_new_tokens=5, seed=0, stop_at_eot=False)
    assert cli("export", checkpoint, "-o", str(tmp_path / "x"), "--min-count", "0").exit_code != 0


def test_cli_generates_from_a_run_directory_and_stdin(checkpoint):
    r = cli("generate", checkpoint, "Emma was", "-n", "12", "--seed", "4", "--device", "cpu", "--ignore-eot")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Emma was") and len(r.stdout) > len("Emma was\n")
    assert "words/s" in r.stderr and "seed 4" in r.stderr
    again = cli("generate", checkpoint, "-", "-n", "12", "--seed", "4", "--no-echo", "--ignore-eot",
                input="Emma was")
    assert again.exit_code == 0 and "Emma was" + again.stdout == r.stdout
    two = cli("generate", checkpoint, "Emma", "-n", "3", "--num-samples", "2", "--seed", "1", "-t", "0",
                "--ignore-eot")
    assert two.exit_code == 0 and two.stdout.count("Emma") >= 2 and "--- sample 2/2 (seed 2)" in two.stdout.splitlines()


@pytest.mark.parametrize("args, message", [
    (("generate", "/nonexistent/run", "hello"), "no such run or checkpoint directory"),
    (("generate", "{tmp}", "hello"), "holds no tfree checkpoint"),
    (("generate", "{ckpt}", ""), "the prompt is empty"),
    (("generate", ""), "the prompt is empty"),
    (("generate", "{ckpt}", "hi", "-t", "-1"), "temperature"),
])
def test_cli_bad_model_or_prompt_gives_one_line(tmp_path, checkpoint, args, message):
    r = cli(*[a.format(tmp=tmp_path, ckpt=checkpoint) for a in args])
    assert r.exit_code != 0 and message in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2  # model line + the error


def test_cli_generates_from_the_bundled_model():
    assert ckpt.read_meta(BUNDLED_MODEL)["mode"] == "tfree"  # a complete checkpoint: every sha256 matches
    r = cli("generate", "It is a truth", "-n", "8", "--seed", "0", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("It is a truth") and len(r.stdout.split()) > 4
    assert "8 words" in r.stderr or "stopped: eot" in r.stderr
    greedy = [cli("generate", "It is a truth", "-n", "12", "-t", "0", "--device", "cpu", *search).stdout
              for search in ((), ("--search", "full"))]
    assert greedy[0] == greedy[1]


@pytest.mark.slow
def test_quickstart_encodes_trains_generates_and_says_where(tmp_path):
    from tfree_cli import quickstart

    said = []
    r = quickstart.run(str(tmp_path / "qs"), steps=2, sample_chars=40_000, new_words=5, progress=False, log=said.append)
    assert r["text"].startswith(quickstart.PROMPT) and len(r["text"]) > len(quickstart.PROMPT)
    assert (tmp_path / "qs" / "shards" / "manifest.json").is_file() and ckpt.read_meta(r["checkpoint"])["step"] == 2
    assert any(r["run"] in line for line in said)
    assert any(line.startswith("step 2 | loss") for line in said)  # training's lines too go where log says
    with pytest.raises(TfreeError, match="already holds a quickstart run"):
        quickstart.run(str(tmp_path / "qs"), steps=2, sample_chars=40_000, progress=False, log=said.append)
