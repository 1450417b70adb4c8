"""ReTok at small scale (issue 18): a BPE-8k model converted into a T-FREE model by ``tfree retok``, against the
BPE source and T-FREE trained from scratch.

    python experiments/retok.py --corpus ../shared/data/english_prose.txt   # ~25 min on 2 CPU cores, resumable

Data: experiments/paper_table.py's document split (every 64th document held out as the test set) over the first
``--train-bytes`` of the shuffled pool. Runs, each reused when it is already in ``--work``:

- ``bpe-8k``: the source, the paper_table body trained on ``--source-bytes`` with ``--baseline bpe``;
- ``retok-<init>-<head>``: ``tfree retok`` with the body frozen for ``--frozen-bytes`` (at most a quarter of the
  source's bytes), one run per initialisation (mean/sparse/random) and head target (first/mean);
- ``retok-mean-first-unfrozen``: the default conversion (``--init mean --head-target first``), continued with
  everything trainable for ``--unfrozen-bytes`` (``--unfreeze-after`` = its frozen steps; a copy of the frozen run
  resumes from its last checkpoint);
- ``tfree-scratch``: T-FREE from random weights on the source's bytes plus the conversion's.

Every run reports bits per byte on ``tfree train``'s validation slice (64 kB of held-out training-pool units, the
same for every run; at step 0 from ``RUN/init``, calibrated on it as ``tfree eval`` would). The runs the gates compare
(the source, the default conversion frozen and unfrozen, T-FREE from scratch) are also evaluated on the test set
and on the test documents' digit-bearing paragraphs with ``tfree eval`` (a T-FREE test evaluation takes minutes on
2 cores, so not every arm gets one); positions per byte, generation bytes per second (sampled, seed 1, 200 items,
after a warm-up) and the init's fit quality by word-frequency bucket are reported. Writes docs/results.md's retok section (between its markers),
docs/retok_bpb.png and --work/retok.json; ``--docs-only`` redraws them from that JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paper_table as pt  # noqa: E402  (the document split, the BPE sequence length, the CLI runner)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- retok:begin -->", "<!-- retok:end -->"
ARMS = ("mean-first", "random-first", "sparse-first", "mean-mean")
DEFAULT = "mean-first"  # tfree retok's defaults: the conversion that is unfrozen and evaluated on the test set


def encode(jsonl: str, out: str, v: int = 8192) -> str:
    """paper_table.encode in one process (its two-worker pool was killed on this shared machine)."""
    from tfree_codec import CodecConfig
    from tfree_codec.shards.writer import encode_to_shards

    if not os.path.isfile(os.path.join(out, "manifest.json")):
        encode_to_shards([jsonl], out, CodecConfig(vocab_size=v, num_activations=10), num_proc=1, progress=False)
    return out


def digit_text(test_jsonl: str, path: str) -> str:
    """The test documents' paragraphs that hold a digit, as one text file (where transplants usually break)."""
    if not os.path.isfile(path):
        paras = []
        with open(test_jsonl, encoding="utf-8") as f:
            for line in f:
                paras += [p for p in json.loads(line)["text"].split("\n\n") if re.search(r"\d", p)]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n\n".join(paras))
    return path


def evaluate(ckpt: str, data: str, name: str) -> dict:
    out = os.path.join(os.path.dirname(ckpt.rstrip("/")), f"eval-{os.path.basename(ckpt.rstrip('/'))}-{name}.json")
    if not os.path.isfile(out):
        r = pt.tfree("eval", ckpt, data, "--json", "-q", "--device", "cpu", nice=False).stdout
        with open(out, "w") as f:
            f.write(r)
    with open(out) as f:
        return json.load(f)


def log_of(run: str) -> list[dict]:
    with open(os.path.join(run, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def gen_speed(ckpt: str, n: int = 200) -> dict:
    """Bytes per second of sampled generation (seed 1, KV cache, 1 thread), after a warm-up run."""
    import torch

    import tfree_codec

    torch.set_num_threads(1)
    lm = tfree_codec.load(ckpt, device="cpu")
    lm.generate("It was", max_new_tokens=5, seed=0, stop_at_eot=False)
    t0 = time.perf_counter()
    text = lm.generate("Emma could not", max_new_tokens=n, seed=1, stop_at_eot=False)
    dt = time.perf_counter() - t0
    return {"bytes": len(text.encode("utf-8")), "seconds": dt, "bytes_per_s": len(text.encode("utf-8")) / dt,
            "items": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "data", "english_prose.txt"),
                    help="english_prose, decompressed (xz -dk)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tfree_retok"))
    ap.add_argument("--train-bytes", type=float, default=4.3e6)
    ap.add_argument("--source-bytes", type=float, default=4.0e6)
    ap.add_argument("--frozen-bytes", type=float, default=1.0e6)
    ap.add_argument("--unfrozen-bytes", type=float, default=1.0e6)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--retok-warmup", type=int, default=10, help="warmup steps of each conversion phase (the source "
                    "and T-FREE from scratch keep 100): a phase of ~100 steps that is all warmup barely trains")
    ap.add_argument("--unfreeze-lr", type=float, default=1.0, help="tfree retok --unfreeze-lr of the unfrozen run")
    ap.add_argument("--pos-weight", type=float, default=300.0)
    ap.add_argument("--evals", type=int, default=4, help="validation points per conversion phase")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stop-after", choices=["source", "arms", "unfrozen", "scratch"], help="do this much, then stop "
                    "(to run in pieces under a CPU lock; 'arms': the default and the random conversion)")
    ap.add_argument("--docs-only", action="store_true")
    ap.add_argument("--results", default=os.path.join(ROOT, "docs", "results.md"))
    args = ap.parse_args()
    if args.frozen_bytes > args.source_bytes / 4:
        sys.exit("--frozen-bytes must be at most a quarter of --source-bytes (the issue's gate)")
    os.makedirs(args.work, exist_ok=True)
    jpath = os.path.join(args.work, "retok.json")
    if args.docs_only:
        with open(jpath) as f:
            write_docs(json.load(f), args)
        return
    t_start = time.time()
    train_jsonl, test_jsonl, info = pt.make_documents(args.corpus, args.work, int(args.train_bytes))
    shards = encode(train_jsonl, os.path.join(args.work, "train-v8192"))
    test = encode(test_jsonl, os.path.join(args.work, "test-v8192"))
    digits = digit_text(test_jsonl, os.path.join(args.work, "test-digits.txt"))
    body = ["--batch-size", 16, "--lr", args.lr, "--warmup", 100, "--seed", args.seed, "--device", "cpu",
            "--dtype", "float32", "--log-every", 25, "--val-bytes", 65536, "-q", "--sample-words", 0]
    res = {"args": vars(args), "info": info, "runs": {}, "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared, nice 19, OMP_NUM_THREADS="
                      f"{os.environ.get('OMP_NUM_THREADS', 'unset')})"}

    # the source
    src = os.path.join(args.work, "bpe-8k")
    if not os.path.isfile(os.path.join(src, "final", "checkpoint.json")):
        seq, bpt = pt.bpe_seq_len(shards, src, 8192, 128, 65536)
        pt.tfree("train", shards, "-o", src, "--seq-len", seq, "--preset", "tiny", "--n-layer", 2, "--n-embd", 128,
                 "--n-head", 4, "--max-bytes", int(args.source_bytes), "--eval-every", 100, "--baseline", "bpe",
                 "--bpe-vocab", 8192, *body, nice=False)
    res["runs"]["bpe-8k"] = run_record(src, test, digits, bpe=True)
    res["runs"]["bpe-8k"]["speed"] = gen_speed(os.path.join(src, "final"))
    save(res, jpath)
    if args.stop_after == "source":
        return

    # the default conversion (mean-first) and random rows first: the gates need them; then the default unfrozen and
    # T-FREE from scratch; the other initialisations last
    arms = args.arms.split(",")
    first = [x for x in arms if x in ("mean-first", "random-first")]
    for arm in first:
        res["runs"][f"retok-{arm}"] = frozen_arm(args, arm, src, shards, test, digits, body,
                                                 full=arm == DEFAULT)
        save(res, jpath)
    if args.stop_after == "arms":
        return
    run0 = os.path.join(args.work, f"retok-{DEFAULT}")
    run = run0 + "-unfrozen"
    n = res["runs"][f"retok-{DEFAULT}"]["steps"]
    more = round(n * args.unfrozen_bytes / args.frozen_bytes)
    if not os.path.isfile(os.path.join(run, "final", "checkpoint.json")) or log_of(run)[-1]["step"] < n + more:
        if not os.path.isdir(run):
            shutil.copytree(run0, run, ignore=shutil.ignore_patterns("eval-*.json"))
        pt.tfree("retok", src, shards, "-o", run, "--init", "mean", "--head-target", "first", "--max-steps", n + more,
                 "--unfreeze-after", n, "--pos-weight", args.pos_weight, "--eval-every", max(1, -(-n // args.evals)),
                 "--save-every", n + more, "--resume", "auto", *body, "--warmup", args.retok_warmup,
                 "--unfreeze-lr", args.unfreeze_lr, nice=False)
    res["runs"][f"retok-{DEFAULT}-unfrozen"] = run_record(run, test, digits)
    res["runs"][f"retok-{DEFAULT}-unfrozen"]["speed"] = gen_speed(os.path.join(run, "final"))
    save(res, jpath)
    if args.stop_after == "unfrozen":
        return

    # T-FREE from scratch on the source's bytes plus the conversion's
    run = os.path.join(args.work, "tfree-scratch")
    total = args.source_bytes + args.frozen_bytes + args.unfrozen_bytes
    if not os.path.isfile(os.path.join(run, "final", "checkpoint.json")):
        with open(os.path.join(run0, "init", "model_config.json")) as f:
            seq = json.load(f)["seq_len"]
        pt.tfree("train", shards, "-o", run, "--seq-len", seq, "--preset", "tiny", "--n-layer", 2, "--n-embd", 128,
                 "--n-head", 4, "--max-bytes", int(total), "--eval-every", 200, "--pos-weight", args.pos_weight,
                 *body, nice=False)
    res["runs"]["tfree-scratch"] = run_record(run, test, digits)
    save(res, jpath)
    if args.stop_after == "scratch":
        return

    for arm in [x for x in arms if x not in first]:
        res["runs"][f"retok-{arm}"] = frozen_arm(args, arm, src, shards, test, digits, body)
        save(res, jpath)
    res["minutes"] = (time.time() - t_start) / 60
    save(res, jpath)
    write_docs(res, args)


def frozen_arm(args, arm: str, src: str, shards: str, test: str, digits: str, body: list, full: bool = False) -> dict:
    """``tfree retok`` with the body frozen for --frozen-bytes (reused when done); its record."""
    init, head, *fit = arm.split("-")  # e.g. mean-first, or mean-first-meanfit (--head-fit mean)
    run = os.path.join(args.work, f"retok-{arm}")
    if not os.path.isfile(os.path.join(run, "final", "checkpoint.json")):
        steps = frozen_steps(args, shards, src)
        pt.tfree("retok", src, shards, "-o", run, "--init", init, "--head-target", head, "--max-steps", steps,
                 "--head-fit", "mean" if fit == ["meanfit"] else "sum",
                 "--unfreeze-after", steps, "--pos-weight", args.pos_weight, "--eval-every",
                 max(1, -(-steps // args.evals)), "--save-every", steps, *body, "--warmup", args.retok_warmup,
                 "--unfreeze-lr", args.unfreeze_lr,
                 *(["--resume", "auto"] if os.path.isdir(os.path.join(run, "init")) else []), nice=False)
    return run_record(run, test, digits, init=True, full=full)


def frozen_steps(args, shards: str, src: str) -> int:
    """Steps of 16 sequences that read --frozen-bytes of the training units (the conversion's words per sequence)."""
    from tfree_codec.train import retok as rt
    from tfree_codec.shards.corpus import Corpus, make_units, split_units

    corpus = Corpus.from_path(shards)
    units, _ = split_units(make_units(corpus), 65536)
    seq = rt.words_seq_len(rt.open_bpe(src), corpus, units)
    per_word = float(units.n_bytes.sum()) / float((units.stop - units.start).sum() + units.last.sum())
    return max(1, round(args.frozen_bytes / (16 * seq * per_word)))


def run_record(run: str, test: str, digits: str, bpe: bool = False, init: bool = False, full: bool = True) -> dict:
    """A run's validation curve and final validation bits per byte; with ``full``, also the test set, the digit
    paragraphs and generation speed (a T-FREE test evaluation takes minutes here: only the runs the gates compare
    get one). ``init``: the conversion's retok.json (fit quality, validation bits per byte at step 0)."""
    log = log_of(run)
    final = [x for x in log if x.get("final")]
    r = {"curve": [(x["step"], x["bytes_seen"], x["val_bpb"]) for x in log if "val_bpb" in x],
         "steps": log[-1]["step"], "bytes_seen": log[-1]["bytes_seen"],
         "val": final[-1]["val_bpb"] if final else None}
    if full:
        r["test"] = evaluate(os.path.join(run, "final"), test, "test")
        r["digits"] = evaluate(os.path.join(run, "final"), digits, "digits")
        r["test"]["positions_per_byte"] = r["test"]["tokens" if bpe else "words"] / r["test"]["bytes"]
    if init:
        with open(os.path.join(run, "init", "retok.json")) as f:
            r["retok"] = json.load(f)
        if full:
            r["digits0"] = evaluate(os.path.join(run, "init"), digits, "digits")
    return r


def save(res: dict, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(path + ".tmp", path)


def write_docs(res: dict, args) -> None:
    from retok_report import plot, section  # noqa: PLC0415  (the report is its own module: this one stays short)

    png = os.path.join(os.path.dirname(args.results), "retok_bpb.png")
    plotted = plot(res, png)
    text = section(res, plotted)
    old = open(args.results, encoding="utf-8").read()
    block = BEGIN + "\n" + text + "\n" + END
    if BEGIN in old:  # in place: the notes written below the section stay below it
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    with open(args.results, "w", encoding="utf-8") as f:
        f.write(new)
    print(text)


if __name__ == "__main__":
    main()
