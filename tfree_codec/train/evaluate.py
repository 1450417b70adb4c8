"""``tfree eval`` (held-out bits per byte of a checkpoint on a data set) and the calibration of a run's dictionary
softmax on its validation slice. The loops that count the bits are generate/bits.py's; the calibration's model and
fit, decode/calibration.py's.
"""
from __future__ import annotations

import os

import numpy as np

from ..config import TfreeError
from ..decode.calibration import Calibration, fit_scale, prior_features
from ..decode.dictionary import Dictionary
from ..decode.spelling import SpellingModel
from ..generate.bits import dictionary_scorer, evaluate_bpe, evaluate_tfree, tfree_bpb
from ..model import checkpoint as ckpt
from ..shards.corpus import Corpus, Units, make_units
from ..text.words import EOT


def calibrate(model, corpus: Corpus, units: Units, dictionary, scorer, spelling, start: Calibration | None = None,
              max_cells: int = 48_000_000, **kw) -> Calibration:
    """Fit the temperature and prior weight (and the plain temperature) on the first positions of ``units`` (as
    many as keep ``positions x words <= max_cells``), and p_unk on all of ``units``' words."""
    start = start or Calibration()
    K = max(128, min(4096, max_cells // max(1, len(dictionary))))
    n, take = 0, 0
    lengths = units.stop - units.start
    while take < len(units) and n < K:
        n += int(lengths[take]) + 1
        take += 1
    acc = evaluate_tfree(model, corpus, units.take(np.arange(take)), dictionary, scorer, spelling, [],
                         keep_scores=K, **kw)
    if acc.get("kept") is None:
        return start
    S, t = acc["kept"]
    feats = prior_features(dictionary)
    a, b, c = fit_scale(S, t, feats, True, (1.0 / start.temperature, start.prior_weight, start.zero_count_weight))
    a0 = fit_scale(S, t, feats, False, (1.0 / start.temperature_plain,))[0]
    return Calibration(temperature=1.0 / a, prior_weight=b, zero_count_weight=c, temperature_plain=1.0 / a0,
                       p_unk=start.p_unk, unk_charge=start.unk_charge, spell_order=start.spell_order)


# -- tfree eval ------------------------------------------------------------------------------------------------------
def evaluate_checkpoint(path: str, data: str, device: str = "auto", batch_size: int = 16, progress: bool = False) -> dict:
    """Held-out bits per byte of a checkpoint on DATA (a shard directory or a UTF-8 text file), with parameter
    counts and, for T-FREE, the dictionary's coverage and both unseen-word conventions."""
    from .data import TokenSource  # noqa: PLC0415
    from ..model.device import autocast_for, resolve_device  # noqa: PLC0415

    if batch_size < 1:
        raise TfreeError(f"--batch-size must be at least 1, not {batch_size}")
    dev = resolve_device(device)
    model, codec, meta = ckpt.load_model(path, dev)
    model.eval()
    autocast, _ = autocast_for(dev, "auto")
    mode = model.config.mode
    corpus = Corpus.from_path(data, codec if mode == "tfree" else None)
    units = make_units(corpus, int(meta.get("chunk_words", 1024)))
    if not float(units.n_bytes.sum()):
        raise TfreeError(f"{data}: no text to evaluate on (it is empty)")
    bar = _bar(len(units), progress)
    report = {"checkpoint": path, "data": data, "mode": mode, "params": model.num_params(), "bytes": float(units.n_bytes.sum())}
    if mode == "bpe":
        tok = ckpt.load_tokenizer(os.path.join(path, ckpt.TOKENIZER_FILE))
        source = TokenSource(corpus, units, tok, tok.token_to_id(EOT))
        r = evaluate_bpe(model, source, units, batch_size, dev, autocast, progress=bar)
        report.update(bpb=r["bpb"], tokens=r["items"], convention="the model's own softmax over its BPE vocabulary")
    else:
        dictionary = Dictionary.load(os.path.join(path, ckpt.DICT_FILE), codec)
        cal = ckpt.load_calibration(path)
        spelling = SpellingModel(dictionary.words, cal.spell_order)
        scorer = dictionary_scorer(dictionary)
        acc = evaluate_tfree(model, corpus, units, dictionary, scorer, spelling, cal.params(), batch_size, dev,
                             autocast, progress=bar)
        r = tfree_bpb(acc, cal)
        pess = tfree_bpb(acc, Calibration(**{**cal.to_dict(), "unk_charge": "bytes"}))
        report.update(bpb=float(r["bpb"][0]), bpb_plain_score=float(r["bpb"][1]), bpb_unk_bytes=float(pess["bpb"][0]),
                      words=acc["items"], unseen_words=acc["unseen"], unseen_bits_share=r["unseen_bits_share"],
                      coverage_words=r["coverage_words"], coverage_bytes=r["coverage_bytes"],
                      dictionary_words=len(dictionary), calibration=cal.to_dict(),
                      convention=(f"p(word) = (1 - {cal.p_unk:.4f}) softmax over the {len(dictionary):,}-word "
                                  f"dictionary of s/{cal.temperature:.4f} + {cal.prior_weight:.3f} log(count+1)"
                                  + (f" + {cal.zero_count_weight:.3f} [count=0]" if cal.zero_count_weight else "")
                                  + "; "
                                  f"unseen words {cal.p_unk:.4f} x a byte {cal.spell_order}-gram spelling probability"))
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
