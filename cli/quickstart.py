"""``tfree quickstart``: the whole flow on the bundled public-domain sample, in one call and a few CPU minutes.

sample text -> ``encode_to_shards`` -> ``train`` (a tiny T-FREE model) -> ``LanguageModel.stream``. Everything goes
under one directory; the summary says where. The model is small and trained briefly: it shows the flow, and its
text is mostly common words in a plausible order (the bundled model, ``tfree generate "..."``, is trained longer).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from tfree_codec.assets import sample_text
from tfree_codec.config import CodecConfig, TfreeError, atomic_write

SAMPLE_CHARS = 600_000   # more words (146k) than STEPS x BATCH x SEQ_LEN (102k): no word is seen twice
STEPS = 100              # about a minute and a half of training on 2 CPU cores (docs/generate.md)
BATCH, SEQ_LEN = 16, 64
PROMPT = "Emma"
MARKER = ".tfree-quickstart"


@dataclass(frozen=True)
class Settings:
    """What the quickstart does: how much of the sample it reads, how long it trains, what it generates."""

    steps: int = STEPS
    sample_chars: int = SAMPLE_CHARS
    prompt: str = PROMPT
    new_words: int = 60
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


def run(out_dir: str = "tfree-quickstart", *, overwrite: bool = False, log=print, write=None, **settings) -> dict:
    """Encode, train, generate as ``settings`` (``Settings``' fields) say; -> the paths made, the validation bits
    per byte and the generated text. ``write`` receives the sample as it streams (default: collected only)."""
    q = Settings(**settings)
    steps, sample_chars, prompt, new_words, seed, device, progress = (q.steps, q.sample_chars, q.prompt, q.new_words,
                                                                      q.seed, q.device, q.progress)
    from tfree_codec.generate import LanguageModel, torch_threads  # noqa: PLC0415  (torch: only when a run is asked for)
    from tfree_codec.shards.writer import encode_to_shards  # noqa: PLC0415
    from tfree_codec.train.loop import TrainConfig, train  # noqa: PLC0415

    if steps < 1:
        raise TfreeError(f"steps must be at least 1, not {steps}")
    if not isinstance(prompt, str) or not prompt.strip():  # refused now, not after encoding and training
        raise TfreeError(f"the prompt must be some text, not {prompt!r}")
    out = os.path.abspath(out_dir)
    text_path, shards, run_dir = (os.path.join(out, p) for p in ("sample.txt", "shards", "run"))
    marker = os.path.join(out, MARKER)
    theirs = [p for p in ("sample.txt", "shards", "run") if os.path.lexists(os.path.join(out, p))]
    if theirs and not os.path.isfile(marker):  # only a folder quickstart made (its marker says so) is rewritten
        raise TfreeError(f"{out_dir} already holds {', '.join(theirs)}, not written by tfree quickstart: "
                         "choose another -o")
    if os.path.exists(run_dir):
        if not overwrite:
            raise TfreeError(f"{out_dir} already holds a quickstart run: pass --overwrite, or another -o")
        shutil.rmtree(run_dir)
    os.makedirs(out, exist_ok=True)
    atomic_write(marker, b"written by tfree quickstart: it may replace sample.txt, shards/ and run/ here\n")

    text = sample_text(sample_chars)
    atomic_write(text_path, text.encode("utf-8"))
    log(f"[1/3] sample: {len(text.encode('utf-8')) / 1e6:.2f} MB of Jane Austen (public domain) -> {text_path}")
    s = encode_to_shards([text_path], shards, CodecConfig(), num_proc=1, overwrite=True, progress=progress)
    log(f"[1/3] encoded {s['words']:,} words into {s['shards']} shard(s) in {shards} ({s['seconds']:.1f} s)")

    log(f"[2/3] training a tiny T-FREE model for {steps} steps of {BATCH}x{SEQ_LEN} words on {device} -> {run_dir}")
    cfg = TrainConfig.of(data=shards, out_dir=run_dir, preset="tiny", seq_len=SEQ_LEN, batch_size=BATCH, max_steps=steps,
                         lr=3e-3, warmup=min(20, steps), seed=seed, device=device, val_bytes=32_000, log_every=20,
                         progress=progress)
    summary = train(cfg, log=log)

    checkpoint = os.path.join(run_dir, "final")
    log(f"[3/3] generating {new_words} words after {prompt!r} (seed {seed}):")
    lm = LanguageModel.load(checkpoint, device)
    pieces = []
    if write:
        write(prompt)
    with torch_threads(1):
        for piece in lm.stream(prompt, max_new_tokens=new_words, temperature=0.8, top_p=0.95, seed=seed):
            pieces.append(piece.text)
            if write:
                write(piece.text)
    if write:
        write("\n")
    return {"sample": text_path, "shards": shards, "run": run_dir, "checkpoint": checkpoint,
            "val_bpb": summary.get("val_bpb", float("nan")), "text": prompt + "".join(pieces)}
