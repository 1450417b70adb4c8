"""Which word score reads a trained T-FREE model best: the same checkpoint's held-out bits per byte under each
score function, its softmax calibration fitted on one part of the held-out text and measured on the rest.

    python experiments/score_arms.py RUN/final TEST_SHARDS [--fit-docs 0.3]

Arms (docs/results.md, "The word objective"): ``sigmoid_diff`` (the SPEC's mean(sigmoid[P_w]) -
mean(sigmoid[not P_w])) and ``mean_logit`` (the mean of the logits over P_w, what the word objective trains), each
with its temperature and count-prior weights fitted by maximum likelihood on the fit documents (the calibration's
Newton fit, as ``tfree train`` does on its validation slice), and, for a model trained with the word objective,
``learnt`` (its own scale and prior, nothing fitted but the unseen-word rate). The unseen-word rate is the fit
documents' for every arm, so the arms differ only in how dictionary words are scored.
"""
from __future__ import annotations

import argparse
import json


def main() -> None:
    from tfree_codec.decode.calibration import Calibration
    from tfree_codec.generate.bits import Reading, calibrate, evaluate_tfree, tfree_bpb, unseen_rate
    from tfree_codec.generate.vocab import Words, load_vocabulary
    from tfree_codec.model import checkpoint as ckpt
    from tfree_codec.shards.corpus import Corpus, make_units

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data", help="held-out shards or a UTF-8 text file")
    ap.add_argument("--fit-docs", type=float, default=0.3, help="share of the documents the calibration is fitted on")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model, codec, meta = ckpt.load_model(args.checkpoint, "cpu")
    model.eval()
    saved = load_vocabulary(args.checkpoint, codec, model.config)
    if not isinstance(saved, Words):
        raise SystemExit(f"{args.checkpoint}: a T-FREE checkpoint is needed (this is a {model.config.mode} model)")
    corpus = Corpus.from_path(args.data, saved.data_codec)
    units = make_units(corpus, int(meta.get("chunk_words", 1024)))
    n_fit = max(1, int(round(args.fit_docs * len(corpus.doc_words))))
    fit, rest = units.take(units.doc < n_fit), units.take(units.doc >= n_fit)
    reading = Reading(16, "cpu")
    start = saved.calibration.to_dict()
    arms = {"sigmoid_diff": {**start, "score": "sigmoid_diff", "temperature": 0.07, "temperature_plain": 0.07,
                             "prior_weight": 1.0, "zero_count_weight": 0.0},
            "mean_logit": {**start, "score": "mean_logit", "temperature": 1.0, "temperature_plain": 1.0,
                           "prior_weight": 1.0, "zero_count_weight": 0.0}}
    if model.config.objective != "bce":
        arms["learnt"] = {**start, **model.word_head.calibration()}
    out = {"checkpoint": args.checkpoint, "objective": model.config.objective, "fit_docs": n_fit,
           "test_docs": len(corpus.doc_words) - n_fit, "arms": {}}
    for name, cal in arms.items():
        words = Words(saved.dictionary, Calibration.from_dict(cal))
        c = words.calibration if name == "learnt" else calibrate(model, corpus, fit, words, reading)
        acc = evaluate_tfree(model, corpus, fit, Words(saved.dictionary, c), [], reading)
        p_unk = unseen_rate(acc)
        c = Calibration(**{**c.to_dict(), "p_unk": p_unk})
        acc = evaluate_tfree(model, corpus, rest, Words(saved.dictionary, c), c.params(), reading)
        r = tfree_bpb(acc, c)
        out["arms"][name] = {"bpb": float(r["bpb"][0]), "temperature": c.temperature, "prior_weight": c.prior_weight,
                             "zero_count_weight": c.zero_count_weight, "p_unk": p_unk}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{args.checkpoint} ({out['objective']} objective): calibrations fitted on {n_fit} documents, "
          f"bits per byte on the other {out['test_docs']}")
    for name, a in out["arms"].items():
        print(f"  {name:13s} {a['bpb']:.4f}  (temperature {a['temperature']:.4f}, prior weight "
              f"{a['prior_weight']:.3f}, count-0 weight {a['zero_count_weight']:.3f})")


if __name__ == "__main__":
    main()
