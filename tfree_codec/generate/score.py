"""How likely given texts are under a model: ``score_texts`` from Python (what ``model(ids, labels=ids).loss`` gives
HF users), and ``evaluate_checkpoint``, ``tfree eval``'s held-out bits per byte of a data set.

>>> lm = tfree_codec.load()
>>> lm.score(["It is a truth universally acknowledged", "acknowledged universally truth a is It"])
[{'bits': ..., 'bytes': 39, 'bpb': ..., 'log_prob': ..., 'items': ...}, ...]

Each text is read as ``tfree eval`` reads a document: from <|endoftext|> as context, every word (T-FREE) or token
(BPE) charged, and the <|endoftext|> that ends it. T-FREE uses the checkpoint's calibrated dictionary softmax and
charges words outside its dictionary by their spelling (docs/training.md, "Bits per byte"), so the bits of a text
are comparable across T-FREE and BPE models: bits per byte is the figure both share. The dictionary is the one the
checkpoint was saved with (not one grown by earlier prompts).
"""
from __future__ import annotations

import math

from ..config import TfreeError
from .bits import Reading
from .vocab import load_vocabulary

LN2 = math.log(2.0)


def score_texts(path: str, model, codec, texts, batch_size: int = 16) -> list[dict]:
    """Per text: total ``bits``, UTF-8 ``bytes``, ``bpb`` (bits per byte), ``log_prob`` (natural log, the sum HF's
    mean loss is taken over) and ``items`` (words or tokens predicted), under the checkpoint at ``path``."""
    from ..shards.corpus import Corpus, make_units  # noqa: PLC0415

    if isinstance(texts, str):
        raise TfreeError("score takes a list of texts (wrap a single text in a list)")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TfreeError(f"score takes texts, not {type(t).__name__}")
    if not texts:
        return []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        corpus = Corpus.from_texts(texts, codec)
        units = make_units(corpus, 1 << 30)  # one unit per text: windows of seq_len cover long texts
        each = load_vocabulary(path, codec, model.config).unit_bits(model, corpus, units, Reading(batch_size, device))
    finally:
        model.train(was_training)
    out = []
    for (bits, items), t in zip(each, texts):
        n = len(t.encode("utf-8", "surrogatepass"))
        out.append({"bits": bits, "bytes": n, "bpb": bits / n if n else float("nan"), "log_prob": -bits * LN2,
                    "items": items})
    return out


# -- tfree eval ------------------------------------------------------------------------------------------------------
def evaluate_checkpoint(path: str, data: str, device: str = "auto", batch_size: int = 16, progress: bool = False,
                        search: str | None = "pruned") -> dict:
    """Held-out bits per byte of a checkpoint on DATA (a shard directory or a UTF-8 text file), with parameter
    counts and, for T-FREE, the dictionary's coverage and both unseen-word conventions. ``search`` (T-FREE): the
    decoder's ("pruned" or "full", on the CPU; vocab.Words), or None for every word's scores as one torch product."""
    from ..model import checkpoint as ckpt  # noqa: PLC0415
    from ..model.device import autocast_for, resolve_device  # noqa: PLC0415
    from ..shards.corpus import Corpus, make_units  # noqa: PLC0415

    if batch_size < 1:
        raise TfreeError(f"--batch-size must be at least 1, not {batch_size}")
    dev = resolve_device(device)
    model, codec, meta = ckpt.load_model(path, dev)
    model.eval()
    autocast, _ = autocast_for(dev, "auto")
    vocab = load_vocabulary(path, codec, model.config)
    if hasattr(vocab, "search"):
        vocab.search = search
    corpus = Corpus.from_path(data, vocab.data_codec)
    units = make_units(corpus, int(meta.get("chunk_words", 1024)))
    if not float(units.n_bytes.sum()):
        raise TfreeError(f"{data}: no text to evaluate on (it is empty)")
    bar = _bar(len(units), progress)
    report = {"checkpoint": path, "data": data, "mode": model.config.mode, "params": model.num_params(),
              "bytes": float(units.n_bytes.sum())}
    report.update(vocab.evaluate(model, corpus, units, Reading(batch_size, dev, autocast, bar)))
    if bar:
        bar.close()
    return report


def _bar(total: int, on: bool):
    return _Progress(total) if on else None


class _Progress:
    """A tqdm bar that ``evaluate_*`` advance once per unit."""

    def __init__(self, total: int):
        from tqdm import tqdm  # noqa: PLC0415

        self.bar = tqdm(total=total, unit="unit", dynamic_ncols=True, leave=False, disable=None)  # None: not on a pipe

    def __call__(self, u: int) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
