"""What the code produces, compared with outputs recorded before a refactor (tests/recorded_outputs.json): the
bundled model's and tiny trained runs' (conftest.tiny_run) greedy and sampled text at a seed (with each item's
probability), bits per byte (``tfree eval`` and ``score``), the decoders' draws, and the checkpoints' files byte for
byte, for T-FREE, the BPE baseline, an Over-Encoding + Over-Decoding model (with ``--draft``) and a ``tfree retok``
conversion.

A change that means to alter an output records it again, on purpose and in its own commit:
``TFREE_RECORD=1 python -m pytest tests/test_recorded_outputs.py``. Everything here runs on one torch thread, so
the recording does not depend on the machine's core count.
"""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import RUNS, cli

FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recorded_outputs.json")
RECORD = os.environ.get("TFREE_RECORD") == "1"
PROMPT = "Emma Woodhouse, handsome, clever, and rich,\nwith a comfortable home"
TEXTS = ["It is a truth universally acknowledged, that a single man in possession of a good fortune",
         "Emma was not required, by any subsequent discovery, to retract her ill opinion of Mrs. Elton."]
KEPT = ("model.safetensors", "model_config.json", "codec.json", "calibration.json", "dictionary.arrow",
        "tokenizer.json", "retok.json")


@pytest.fixture(scope="module")
def recording():
    """The recorded outputs; with TFREE_RECORD=1, written back once every case has filled its entry."""
    try:
        with open(FILE, encoding="utf-8") as f:
            old = json.load(f)
    except FileNotFoundError:
        old = {}
    new = dict(old)
    yield old, new
    if RECORD:
        with open(FILE, "w", encoding="utf-8") as f:
            json.dump(new, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")


# -- what is recorded --------------------------------------------------------------------------------------------
def _plain(x):
    """JSON-safe and exactly comparable: floats kept to the last bit (json writes repr), nan as a string."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return "nan" if math.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _files(ckpt_dir: str) -> dict:
    out = {f: _sha(os.path.join(ckpt_dir, f)) for f in KEPT if os.path.isfile(os.path.join(ckpt_dir, f))}
    state = os.path.join(ckpt_dir, "train_state.pt")
    if os.path.isfile(state):  # its tensors (optimizer moments, RNG, step): the pickle also holds paths
        h = hashlib.sha256()

        def walk(x, key=""):
            if isinstance(x, torch.Tensor):
                h.update(key.encode() + x.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            elif isinstance(x, dict):
                for k in sorted(x, key=str):
                    if k != "train_config":
                        walk(x[k], f"{key}/{k}")
            elif isinstance(x, (list, tuple)):
                for i, v in enumerate(x):
                    walk(v, f"{key}/{i}")
            else:
                h.update(f"{key}={x!r}".encode())
        walk(torch.load(state, map_location="cpu", weights_only=True))
        out["train_state.pt tensors"] = h.hexdigest()
    settings = os.path.join(ckpt_dir, "train_config.json")
    if os.path.isfile(settings):
        with open(settings, encoding="utf-8") as f:
            out["train_config.json"] = {k: v for k, v in json.load(f).items() if k not in ("data", "out_dir", "init_from")}
    return out


def _pieces(pieces) -> dict:
    pieces = list(pieces)
    return {"words": [p.word for p in pieces], "text": "".join(p.text for p in pieces),
            "probs": [p.prob for p in pieces], "finish": pieces[-1].finish}


def _generation(lm, draft: bool = False) -> dict:
    kw = dict(max_new_tokens=24, stop_at_eot=False)
    out = {"greedy": _pieces(lm.stream(PROMPT, temperature=0, **kw)),
           "sampled": _pieces(lm.stream(PROMPT, seed=0, **kw)),
           "top_k": _pieces(lm.stream(PROMPT, temperature=1.0, top_k=5, top_p=None, seed=2, **kw)),
           "uncached": _pieces(lm.stream(PROMPT, temperature=0.7, top_p=0.8, seed=4, use_cache=False, **kw)),
           "stop": lm.generate(PROMPT, temperature=0, stop=[" the", "."], **kw),
           "score": lm.score(TEXTS)}
    if lm.mode == "tfree":
        out["spell"] = _pieces(lm.stream(PROMPT, temperature=0, spell=True, spell_below=0.9, **kw))
    if draft:
        from tfree_codec.generate.speculative import DraftStats

        for name, sampling in (("draft_greedy", dict(temperature=0)), ("draft_sampled", dict(seed=5))):
            stats = DraftStats()
            out[name] = {**_pieces(lm.stream(PROMPT, draft=True, draft_stats=stats, **sampling, **kw)),
                         "drafted": stats.drafted, "accepted": stats.accepted}
    return out


def _run_outputs(run_dir: str, text_file: str, tmp_path) -> dict:
    from tfree_codec.generate import LanguageModel, export
    from tfree_codec.generate.score import evaluate_checkpoint

    final = os.path.join(run_dir, "final")
    with open(os.path.join(run_dir, "log.jsonl"), encoding="utf-8") as f:
        log = [{k: v for k, v in json.loads(ln).items() if not k.endswith("_per_s")} for ln in f]
    steps = sorted(d for d in os.listdir(run_dir) if d.startswith("step-"))
    lm = LanguageModel.load(final, device="cpu")
    report = {k: v for k, v in evaluate_checkpoint(final, text_file, "cpu").items() if k not in ("checkpoint", "data")}
    small = export(final, str(tmp_path / "export"), min_count=2, half=True)
    return {"log": log, "files": {d: _files(os.path.join(run_dir, d)) for d in [*steps, "final"]},
            "eval": report, "export": _files(small),
            "generate": _generation(lm, draft=bool(getattr(lm.model.config, "od", False)))}


def _bundled_outputs() -> dict:
    from tfree_codec.decode.decoder import Decoder
    from tfree_codec.generate import LanguageModel

    lm = LanguageModel.load(None, device="cpu")
    out = {"generate": _generation(lm)}
    r = cli("generate", "It is a truth", "-n", "12", "--seed", "0", "--device", "cpu", "--top-k", "40")
    assert r.exit_code == 0, r.output
    out["cli"] = r.stdout
    rng = np.random.default_rng(0)
    logits = rng.normal(-3.0, 2.0, (4, lm.codec.vocab_size)).astype(np.float32)
    dec = {}
    for backend in ("numba", "torch"):
        d = Decoder(lm.vocab, backend=backend)
        for name, kw in (("greedy", dict(temperature=0)), ("sampled", dict(temperature=0.1, top_k=50, top_p=0.9)),
                         ("plain", dict(temperature=0.2))):
            got = d.decode(logits, generator=3, **kw)
            dec[f"{backend} {name}"] = {"words": got.words, "probs": got.probs.tolist()}
        dec[f"{backend} log_probs"] = d.log_probs(logits, np.arange(4) * 7, temperature=0.1).tolist()
    out["decoder"] = dec
    return out


@pytest.mark.parametrize("case", ["bundled", *(pytest.param(name, marks=pytest.mark.slow) for name in RUNS)])
def test_outputs_are_the_recorded_ones(case, request, recording, one_thread, tmp_path):
    old, new = recording
    if case == "bundled":
        got = _plain(_bundled_outputs())
    else:  # a tiny run, trained once for the session
        text = request.getfixturevalue("austen")["text"]
        got = _plain(_run_outputs(request.getfixturevalue("tiny_run")(case), text, tmp_path))
    if RECORD:
        new[case] = got
        return
    assert case in old, f"no recording of {case!r}: run TFREE_RECORD=1 python -m pytest {__file__}"
    want = old[case]
    for key in want:  # one part at a time, so a failure names what changed
        assert got.get(key) == want[key], f"{case}: {key} differs from the recording"
    assert set(got) == set(want)
