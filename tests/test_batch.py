"""From Python, as HF users do: texts -> a padded batch (CSR or dense patterns, attention mask, lengths,
truncation), a collate_fn for a DataLoader (texts, word lists, `datasets` rows; 2 workers), scoring texts (bits per
byte, log-probability), several prompts at once, and the library's sampling defaults equal the CLI's."""

import numpy as np
import pytest
import torch

from tfree_codec import TfreeError
from tfree_codec.assets import sample_text
from tfree_codec.model import checkpoint as ckpt
from tfree_codec.model.batch import Batch, Collator, batch_encode
from tfree_codec.model.transformer import Model, ModelConfig, Patterns
from tfree_codec.text.words import EOT

TEXTS = ["It is a truth universally acknowledged.", "Emma Woodhouse, handsome,", "", "Mr. Knightley"]


def test_batch_encode_pads_masks_and_keeps_each_texts_patterns(codec):
    b = batch_encode(codec, TEXTS, padding=True)
    enc = [codec.encode(t) for t in TEXTS]
    assert b.lengths.tolist() == [len(e) for e in enc] and b.patterns.shape == (4, max(len(e) for e in enc))
    assert b.attention_mask.tolist() == [[j < len(e) for j in range(b.patterns.shape[1])] for e in enc]
    T = b.patterns.shape[1]
    offs, idx = b.patterns.offsets.numpy(), b.patterns.indices.numpy()
    for i, e in enumerate(enc):
        for j in range(T):
            got = idx[offs[i * T + j]:offs[i * T + j + 1]]
            want = e.patterns(j) if j < len(e) else np.zeros(0)
            assert np.array_equal(got, want)
    assert b.words == [e.words for e in enc]
    dense = b.padded()
    for i, e in enumerate(enc):
        for j in range(len(e)):
            row = dense[i, j]
            assert np.array_equal(row[row >= 0].numpy(), e.patterns(j)) and (row[len(e.patterns(j)):] == -1).all()
    assert (dense[2] == -1).all()  # the empty text: all padding


def test_truncation_max_length_word_lists_and_eot(codec):
    b = batch_encode(codec, TEXTS, truncation=True, max_length=3, padding="max_length")
    assert b.patterns.shape == (4, 3) and b.lengths.tolist() == [3, 3, 0, 3]
    words = codec.split("the cat sat")
    assert batch_encode(codec, [words]).words == batch_encode(codec, ["the cat sat"]).words == [words]
    e = batch_encode(codec, ["the cat"], add_eot=True)
    assert e.words == [[EOT, *codec.split("the cat"), EOT]] and e.lengths.tolist() == [len(codec.split("the cat")) + 2]
    with pytest.raises(TfreeError, match="padding=True"):
        batch_encode(codec, TEXTS, padding=False)
    with pytest.raises(TfreeError, match="truncation=True"):
        batch_encode(codec, TEXTS, padding="max_length", max_length=2)
    with pytest.raises(TfreeError, match="list of texts"):
        batch_encode(codec, "one text")


def test_a_padded_batch_gives_the_loss_of_its_rows_alone(codec):
    torch.manual_seed(0)
    m = Model(ModelConfig(vocab_size=codec.vocab_size, n_layer=1, n_head=2, n_embd=32, seq_len=32)).eval()
    texts = [t for t in TEXTS if t]
    with torch.no_grad():
        x, y, mask = batch_encode(codec, texts).lm_inputs()
        _, loss = m(x, y, mask)
        total, n = 0.0, 0
        for t in texts:  # each row alone, no padding: the batch's loss is their mean over real targets
            xi, yi, mi = batch_encode(codec, [t]).lm_inputs()
            _, li = m(xi, yi, mi)
            total, n = total + float(li) * int(mi.sum()), n + int(mi.sum())
    assert float(loss) == pytest.approx(total / n, rel=1e-5)


def _rows():
    rng = np.random.default_rng(0)
    words = sample_text(3000).split()
    return [{"text": " ".join(words[i:i + int(rng.integers(3, 12))]), "id": i} for i in range(0, 600, 12)]


def test_collate_fn_in_a_dataloader_with_two_workers(codec):
    rows = _rows()
    loader = torch.utils.data.DataLoader(rows, batch_size=8, collate_fn=Collator(codec), num_workers=2)
    got = [w for b in loader for w in b.words]
    assert got == [codec.encode(r["text"]).words for r in rows]
    b = next(iter(loader))
    assert isinstance(b, Batch) and isinstance(b.patterns, Patterns) and b.attention_mask.dtype == torch.bool
    words_rows = [{"words": codec.split(r["text"])} for r in rows[:4]]
    assert Collator(codec)(words_rows).words == [r["words"] for r in words_rows]
    with pytest.raises(TfreeError, match="no 'text'"):
        Collator(codec)([{"body": "x"}])


def test_collate_fn_over_a_datasets_dataset(codec):
    datasets = pytest.importorskip("datasets")
    rows = _rows()
    ds = datasets.Dataset.from_dict({"text": [r["text"] for r in rows]})
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=Collator(codec, max_length=5))
    got = [w for b in loader for w in b.words]
    assert got == [codec.encode(r["text"]).words[:5] for r in rows]


# -- scoring and several prompts ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm():
    import tfree_codec

    return tfree_codec.load(device="cpu")


def test_score_gives_bits_per_byte_that_prefer_real_text(lm):
    real = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife."
    shuffled = " ".join(reversed(real.split()))
    a, b = lm.score([real, shuffled])
    assert a["bytes"] == len(real.encode()) and a["bpb"] == pytest.approx(a["bits"] / a["bytes"])
    assert a["log_prob"] == pytest.approx(-a["bits"] * np.log(2)) and a["items"] == len(lm.codec.split(real)) + 1
    assert 0 < a["bpb"] < b["bpb"]
    assert lm.score([real])[0]["bits"] == pytest.approx(a["bits"], rel=1e-5)  # alone or in a list: the same
    lm.generate("It is a truth", max_new_tokens=3, seed=0)  # the prompt's words join the dictionary ...
    assert lm.score([real])[0]["bits"] == pytest.approx(a["bits"], rel=1e-5)  # ... not the scoring one


def test_score_of_a_bpe_model_is_its_cross_entropy(tmp_path, codec):
    from tfree_codec.generate.score import score_texts
    from tfree_codec.model.checkpoint import TOKENIZER_FILE
    from tfree_codec.train.loop import train_bpe

    tok = train_bpe([sample_text(20_000)], 300)
    tok.save(str(tmp_path / "tok.json"))
    torch.manual_seed(1)
    m = Model(ModelConfig(mode="bpe", vocab_size=tok.get_vocab_size(), n_layer=1, n_head=2, n_embd=32, seq_len=64))
    path = ckpt.save_checkpoint(str(tmp_path / "c"), m, codec, files={TOKENIZER_FILE: str(tmp_path / "tok.json")})
    texts = ["Emma was happy.", "It is a truth universally acknowledged"]
    got = score_texts(path, m, codec, texts)
    eot = tok.token_to_id(EOT)
    for t, r in zip(texts, got):
        ids = torch.tensor([[eot, *tok.encode(t, add_special_tokens=False).ids, eot]])
        with torch.no_grad():
            logits, _ = m(ids[:, :-1])
        nats = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="sum")
        assert r["bits"] == pytest.approx(float(nats) / np.log(2), rel=1e-5) and r["items"] == ids.shape[1] - 1


@pytest.mark.parametrize("kind", ["tfree", "bpe"])
def test_score_charges_a_text_what_tfree_eval_charges_a_file_of_it(kind, tiny_run, tmp_path):
    """One text scored from Python and the same text as a file for ``tfree eval``: the same units, the same bits,
    for T-FREE (its calibrated dictionary softmax, unseen words spelled) and the BPE baseline (its softmax)."""
    from tfree_codec.generate import LanguageModel
    from tfree_codec.generate.score import evaluate_checkpoint

    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want."
    (tmp_path / "one.txt").write_text(text, encoding="utf-8")
    lm = LanguageModel.load(tiny_run(kind), device="cpu")
    got = lm.score([text])[0]
    report = evaluate_checkpoint(lm.path, str(tmp_path / "one.txt"), "cpu")
    assert report["mode"] == kind and got["bytes"] == report["bytes"] == len(text.encode())
    assert got["bpb"] == pytest.approx(report["bpb"], rel=1e-6) and 0 < got["bpb"] < 20
    assert got["items"] == report["words" if kind == "tfree" else "tokens"]


def test_generate_batch_is_generate_per_prompt_with_seed_plus_i(lm):
    prompts = ["It is a truth", "Emma"]
    got = lm.generate_batch(prompts, seed=3, max_new_tokens=4)
    assert got == [lm.generate(p, seed=3 + i, max_new_tokens=4) for i, p in enumerate(prompts)]
    with pytest.raises(TfreeError, match="list of prompts"):
        lm.generate_batch("Emma")


def test_library_sampling_defaults_are_the_clis():
    from tfree_cli.generate_cmds import generate as cli_generate
    from tfree_codec.decode.sampling import Sampling

    default = Sampling()  # what stream and generate use when given no Sampling
    ctx = cli_generate.make_context("generate", ["x"])  # what the command receives when nothing is given
    opts = ctx.params
    for name in ("max_new_tokens", "temperature", "top_k", "top_p"):
        assert getattr(default, name) == opts[name], name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_weights_and_scores_on_cuda(codec, tmp_path):
    from tfree_codec.model.weights import load_weights_file, save_weights

    torch.manual_seed(0)
    m = Model(ModelConfig(vocab_size=codec.vocab_size, n_layer=1, n_head=2, n_embd=32, seq_len=32)).eval()
    b = batch_encode(codec, [t for t in TEXTS if t])
    with torch.no_grad():
        _, cpu = m(*b.lm_inputs())
        _, gpu = m.cuda()(*b.to("cuda").lm_inputs())
    assert float(gpu) == pytest.approx(float(cpu), rel=1e-4)
    save_weights(m.state_dict(), tmp_path / "w.safetensors")  # CUDA tensors
    back = load_weights_file(str(tmp_path / "w.safetensors"))
    assert all(torch.equal(back[k], v.cpu()) for k, v in m.state_dict().items())
    assert b.to("cuda").padded().is_cuda
