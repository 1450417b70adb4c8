"""What the tests share: the command line in-process (``cli``), the tiny model's flags (``tiny_flags``) and weights
(``tiny_model``), the default codec, small shard directories (``make_tiny_shards``), and tiny runs trained once per
session (``tiny_run``: T-FREE, the BPE baseline, Over-Encoding + Over-Decoding, a retok conversion).

Tests that train (or use a trained run) are marked ``slow``: ``pytest -m "not slow"`` is the quick loop."""
import json
import os
import random

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

# TFREE_MAX_EXAMPLES=2000 pytest  -> a deeper property search (as tiktoken's TIKTOKEN_MAX_EXAMPLES)
settings.register_profile("tfree", max_examples=int(os.environ.get("TFREE_MAX_EXAMPLES", "200")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tfree")

# The fixtures that hand a test a trained run: a test that asks for one is slow (pytest_collection_modifyitems).
TRAINED = {"tiny_run", "finished", "finished_run", "run_copy", "runs", "oe_run", "od_run", "sources", "data", "pruned",
           "bpe_run"}

TINY = {"preset": "tiny", "n-layer": 1, "n-head": 2, "n-embd": 32, "seq-len": 16, "batch-size": 4, "warmup": 2,
        "lr": 3e-3, "val-bytes": 400, "log-every": 1}


def tiny_flags(**over) -> list[str]:
    """The flags of a tiny run (a 1-layer, d = 32 model on 4 x 16 items) for ``tfree train``, with some changed
    (``seed=5``, ``val_bytes=3000``; a value of None drops the flag) and ``-q``."""
    opts = {**TINY, **{k.replace("_", "-"): v for k, v in over.items()}}
    return [x for k, v in opts.items() if v is not None for x in (f"--{k}", str(v))] + ["-q"]


def cli(*args, input=None):
    """``tfree ARGS`` in this process: click's runner (stdout and stderr apart), every argument as a string."""
    from tfree_cli.main import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def tiny_model(mode="tfree", vocab_size=8192, seed=0, seq_len=16):
    """A 2-layer, d = 32 model in eval mode with a wide head: untrained logits that still rank words clearly (no
    near-ties)."""
    import torch

    from tfree_codec.model.transformer import Model, ModelConfig

    torch.manual_seed(seed)
    m = Model(ModelConfig(mode=mode, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32, seq_len=seq_len))
    with torch.no_grad():
        m.head.weight.normal_(0.0, 1.0)
    return m.eval()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINED & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def codec():
    """The default codec (v = 8192, m = 10)."""
    from tfree_codec import Codec

    return Codec()


@pytest.fixture(scope="session", autouse=True)
def index_cache(tmp_path_factory):
    """Dictionary indexes (decode/index.py) cached in a temporary folder, not the user's cache."""
    old = os.environ.get("TFREE_CACHE")
    os.environ["TFREE_CACHE"] = str(tmp_path_factory.mktemp("tfree-cache"))
    yield
    if old is None:
        os.environ.pop("TFREE_CACHE", None)
    else:
        os.environ["TFREE_CACHE"] = old


@pytest.fixture(scope="session")
def make_tiny_shards(tmp_path_factory):
    """make(seed) -> a shard directory of 40 short documents over a 15-word vocabulary (v=1024, m=4): enough for
    a few training steps of a tiny model."""
    from tfree_codec import CodecConfig
    from tfree_codec.shards.writer import encode_to_shards

    def make(seed: int) -> str:
        d = tmp_path_factory.mktemp("data")
        rng = random.Random(seed)
        words = "the a cat dog sat ran on under mat log big small red and then".split()
        with open(d / "docs.jsonl", "w") as f:
            for _ in range(40):
                f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(40)) + "."}) + "\n")
        encode_to_shards([str(d / "docs.jsonl")], str(d / "shards"), CodecConfig(vocab_size=1024, num_activations=4),
                         num_proc=1, progress=False)
        return str(d / "shards")
    return make


def _single_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    return old


@pytest.fixture(scope="module")
def one_thread():
    """As the CLI generates: one torch thread (tiny matrix-vector products; see docs/generate.md)."""
    import torch

    old = _single_thread()
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def austen(tmp_path_factory):
    """20 kB of the bundled Austen sample: the text file, and its shards with a small codec (v = 1024, m = 4)."""
    from tfree_codec.assets import sample_text

    d = tmp_path_factory.mktemp("austen")
    (d / "austen.txt").write_text(sample_text(20_000), encoding="utf-8")
    r = cli("encode", d / "austen.txt", "-o", d / "shards", "-v", "1024", "-m", "4", "-q", "--num-proc", "1")
    assert r.exit_code == 0, r.output
    return {"text": str(d / "austen.txt"), "shards": str(d / "shards")}


# name -> the command that makes it; {shards}, {out} and (retok) {bpe} filled in. "tfree" and "oe_od" train with
# BCE, as when their outputs were recorded (test_recorded_outputs.py); "word" is tfree train's default objective.
RUNS = {
    "tfree": ["train", "{shards}", "-o", "{out}", "--max-steps", "6", "--save-every", "3", "--eval-every", "3",
              "--objective", "bce"],
    "word": ["train", "{shards}", "-o", "{out}", "--max-steps", "6", "--save-every", "3", "--eval-every", "3"],
    "bpe": ["train", "{shards}", "-o", "{out}", "--max-steps", "6", "--save-every", "3", "--eval-every", "3",
            "--baseline", "bpe", "--bpe-vocab", "300"],
    "oe_od": ["train", "{shards}", "-o", "{out}", "--max-steps", "6", "--save-every", "3", "--eval-every", "3",
              "--oe-orders", "2,3", "--oe-rows", "1000", "--od-weight", "0.2", "--od-anneal", "--objective", "bce"],
    "retok": ["retok", "{bpe}", "{shards}", "-o", "{out}", "--max-steps", "4", "--unfreeze-after", "2", "--save-every",
              "2", "--warmup", "1", "--batch-size", "4", "--val-bytes", "3000", "--log-every", "1", "--sample-words",
              "8", "--device", "cpu", "-q", "--seed", "1"],
}
RUN_FLAGS = tiny_flags(val_bytes=3000, sample_words=8, device="cpu", seed=1)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, austen):
    """run(name) -> the directory of a tiny run of the Austen shards (RUNS: "tfree", "word", "bpe", "oe_od", "retok"),
    trained on one torch thread the first time it is asked for and shared by every test after (read it; copy it
    to change it)."""
    torch = pytest.importorskip("torch")  # the codec-only install (.ci/codec-only) has none: these tests skip

    made = {}

    def run(name: str) -> str:
        if name not in made:
            out = str(tmp_path_factory.mktemp("runs") / name)
            args = [a.format(shards=austen["shards"], out=out, bpe=run("bpe") if name == "retok" else "")
                    for a in RUNS[name]]
            old = _single_thread()
            try:
                r = cli(*args, *(RUN_FLAGS if args[0] == "train" else ()))
            finally:
                torch.set_num_threads(old)
            assert r.exit_code == 0, r.output
            made[name] = out
        return made[name]
    return run
