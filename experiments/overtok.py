"""Over-Encoding at small scale: held-out bits per byte against the n-gram table size, and the paper's ablations.

    python experiments/overtok.py --corpus ../shared/data/english_prose.txt.xz            # every arm, ~25 min on 2 cores
    python experiments/overtok.py --arms plain,oe-16k                                     # some arms (resumable)
    python experiments/overtok.py --report-only                                           # the report of what is done

Every arm is one ``tfree train`` with the same body, data, schedule, seed and number of steps, plus its own flags
(``ARMS``: name -> extra flags; add arms there, e.g. Over-Decoding ones), then ``tfree eval RUN/final TEST``. A
finished run (its final/ exists) and its evaluation are reused, so the script can be run arm by arm (each run a
few minutes, under a CPU lock) and re-run to write the report. The data are experiments/paper_table.py's: the
corpus (an .xz is decompressed into the system temp dir, its first --corpus-mb MB) cut into ~8k-character documents,
every 64th the held-out test set, a shuffled --train-bytes of the rest the training pool (``tfree train`` holds out
its own validation slice from it). Writes docs/results.md's section between the overtok markers and
docs/overtok_bpb.png, and every run's JSON into --work.
"""
from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper_table import encode, make_documents, tfree  # noqa: E402  (the same split and encoding)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- overtok:begin -->", "<!-- overtok:end -->"
PAPER_SLOPE = -0.0256  # nats of token loss per log10(table rows) (OLMo2 151M..1B, n = 2, k = 1; overtok-retok.md)
SIZES = {"oe-16k": 16384, "oe-64k": 65536, "oe-256k": 262144, "oe-1m": 1048576}


def oe(rows: int, *more) -> list:
    return ["--oe-orders", "2,3", "--oe-rows", rows, "--oe-slices", 2, *more]


ARMS = {  # name -> the flags it adds to the common `tfree train` command line
    "plain": [],
    **{name: oe(rows) for name, rows in SIZES.items()},
    "oe-256k-no-unigram": oe(262144, "--oe-no-unigram"),   # the n-gram tables without the word's own embedding
    "oe-256k-1-slice": ["--oe-orders", "2,3", "--oe-rows", 262144, "--oe-slices", 1],
    "oe-256k-shared": oe(262144, "--oe-shared-moduli"),    # both slices of an order read the same row
    # the tables learning 10x faster than the rest (SparseAdam at 10 x lr): a row is read a few times in a short run
    "oe-16k-lr10": oe(16384, "--oe-lr-scale", 10),
    "oe-1m-lr10": oe(1048576, "--oe-lr-scale", 10),
}
FAST = {"oe-16k-lr10": 16384, "oe-1m-lr10": 1048576}
CURVES = ("plain", *SIZES, *FAST)  # arms evaluated during training (--eval-every), for the steps-to-target figure


def corpus_file(path: str, mb: float) -> str:
    """A text file of the corpus: as given, or the first ``mb`` MB of an .xz decompressed into the temp dir."""
    if not path.endswith(".xz"):
        return path
    out = os.path.join(tempfile.gettempdir(), f"overtok_{os.path.basename(path)[:-3]}_{mb:g}MB.txt")
    if not os.path.isfile(out):
        with lzma.open(path, "rt", encoding="utf-8") as f:
            text = f.read(int(mb * 1e6))
        with open(out + ".part", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(out + ".part", out)
    return out


def run_arm(name: str, args, train_shards: str, test_shards: str) -> None:
    run_dir = os.path.join(args.work, name)
    if not os.path.isfile(os.path.join(run_dir, "final", "checkpoint.json")):
        common = ["--preset", "tiny", "--n-layer", args.n_layer, "--n-embd", args.n_embd, "--n-head", args.n_head,
                  "--seq-len", args.seq_len, "--batch-size", args.batch_size, "--lr", args.lr, "--warmup", args.warmup,
                  "--seed", args.seed, "--device", "cpu", "--dtype", "float32", "--max-steps", args.steps,
                  "--eval-every", args.eval_every if name in CURVES else 0, "--log-every", 10,
                  "--val-bytes", args.val_bytes, "--pos-weight", args.pos_weight, "--sample-words", 0, "--no-plot",
                  "--keep-last", 1, "-q"]
        t0 = time.time()
        p = tfree("train", train_shards, "-o", run_dir, *common, *ARMS[name],
                  *(["--resume", "auto"] if os.path.isdir(run_dir) else []))
        print(p.stdout[-400:], flush=True)
        with open(os.path.join(run_dir, "train_seconds.txt"), "w") as f:
            f.write(f"{time.time() - t0:.1f}\n")
    ev_path = os.path.join(run_dir, "test_eval.json")
    if not os.path.isfile(ev_path):
        out = tfree("eval", os.path.join(run_dir, "final"), test_shards, "--json", "-q").stdout
        with open(ev_path, "w") as f:
            f.write(out)


def collect(work: str) -> dict:
    results = {}
    for name in ARMS:
        run_dir = os.path.join(work, name)
        if not os.path.isfile(os.path.join(run_dir, "test_eval.json")):
            continue
        with open(os.path.join(run_dir, "test_eval.json")) as f:
            ev = json.load(f)
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            log = [json.loads(line) for line in f]
        rate = [r["words_per_s"] for r in log if "words_per_s" in r][1:]  # the first interval holds start-up
        final = [r for r in log if r.get("final")][-1]
        curve = [(r["step"], r["val_bpb"]) for r in log if "val_bpb" in r]
        results[name] = {"eval": ev, "curve": curve, "val_bpb": final["val_bpb"], "steps": final["step"],
                         "words_per_s": statistics.median(rate) if rate else None,
                         "train_seconds": float(open(os.path.join(run_dir, "train_seconds.txt")).read())}
    return results


def steps_to_reach(curve, target: float):
    """The first step at which a validation curve reaches ``target`` (linear between evaluations), or None."""
    prev = (0, math.inf)
    for step, bpb in curve:
        if bpb <= target:
            if not math.isfinite(prev[1]):
                return float(step)
            return prev[0] + (step - prev[0]) * (prev[1] - target) / (prev[1] - bpb)
        prev = (step, bpb)
    return None


def fit_slope(xs, ys) -> tuple[float, float]:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def report(args, info: dict, results: dict) -> str:
    lines = ["## Over-Encoding: hashed word n-gram input tables (issue 15)", ""]
    cmd = " ".join(["python experiments/overtok.py", *[f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                        if k in ("corpus_mb", "train_bytes", "steps", "seed", "lr")]])
    lines += [f"Produced by `{cmd}` (arm by arm, each under the shared CPU lock with `nice -n 19`, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}) on {platform.machine()} "
              f"({os.cpu_count()} cores, shared with other work), {time.strftime('%Y-%m-%d')}; "
              f"{sum(r['train_seconds'] for r in results.values()) / 60:.0f} min of training in all.", "",
              f"Data: the first {args.corpus_mb:g} MB of english_prose (../shared/data), cut as "
              f"experiments/paper_table.py cuts it: {info.get('train_bytes', 0) / 1e6:.2f} MB training pool "
              f"({args.val_bytes // 1000} kB of it the validation slice), {info.get('test_bytes', 0) / 1e3:.0f} kB "
              f"held-out test documents. Every arm: {args.n_layer} layers, d = {args.n_embd}, v = 8192, "
              f"{args.steps} steps of {args.batch_size} x {args.seq_len} words (about "
              f"{args.steps * args.batch_size * args.seq_len / 1e3:.0f}k words), AdamW lr {args.lr} (SparseAdam "
              f"for the tables), seed {args.seed}, float32: the same body, data order and initial weights; OE "
              "arms add orders 2 and 3 with 2 slices each (4 tables of width d/4, one zero-initialised projection) "
              "unless the name says otherwise (`-lr10`: the tables learn at 10 x lr, `--oe-lr-scale 10`). Test bits per "
              "byte follow `tfree eval`'s convention.", "",
              "| arm | table rows (each) | n-gram params | test bpb | vs plain | final val bpb | train words/s (log) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    plain = results.get("plain")
    for name, r in results.items():
        p, ev = r["eval"]["params"], r["eval"]
        rows = next((int(ARMS[name][i + 1]) for i, a in enumerate(ARMS[name]) if a == "--oe-rows"), 0)
        vs = f"{ev['bpb'] / plain['eval']['bpb'] - 1:+.2%}" if plain else "-"
        rate = f"{r['words_per_s']:,.0f}" if r["words_per_s"] else "-"
        lines.append(f"| {name} | {rows:,} | {p.get('oe', 0):,} | {ev['bpb']:.4f} | {vs} | {r['val_bpb']:.4f} | "
                     f"{rate} |")
    sweep = [(math.log10(SIZES[n]), results[n]["eval"]["bpb"]) for n in SIZES if n in results]
    lines.append("")
    if len(sweep) >= 2:
        slope, _ = fit_slope(*zip(*sweep))
        mono = all(b2 < b1 for (_, b1), (_, b2) in zip(sweep, sweep[1:]))
        bpw = plain["eval"]["bytes"] / plain["eval"]["words"] if plain else float("nan")
        lines += [f"**Table size.** Fitted slope: {slope:+.4f} test bits per byte per log10(rows) over "
                  f"{len(sweep)} sizes ({slope * math.log(2) * bpw:+.4f} nats per word at the test set's "
                  f"{bpw:.2f} bytes per word), beside the paper's {PAPER_SLOPE} nats of *token* loss per log10(rows) "
                  "(OLMo2, 151M-1B parameters, 500B tokens). The units differ (bits per byte of a word-level model "
                  "against nats per BPE token), and so do the scale and the training length by orders of "
                  f"magnitude. Bits per byte {'falls' if mono else 'does NOT fall'} monotonically with the table "
                  f"size ({', '.join(f'{b:.4f}' for _, b in sweep)}): gate "
                  f"{('met' if mono else 'NOT met') if len(sweep) >= 4 else f'not judged (only {len(sweep)} of the 4 sizes measured)'}.",
                  ""]
    oes = [n for n in (*SIZES, *FAST) if n in results and results[n]["curve"]]
    if plain and oes and plain["curve"]:
        best = min(oes, key=lambda n: results[n]["val_bpb"])
        target, steps = plain["val_bpb"], plain["steps"]
        reach = steps_to_reach(results[best]["curve"], target)
        gain = 1 - results[best]["val_bpb"] / target
        share = reach / steps if reach is not None else None
        lines += [f"**Steps to the plain model's final validation bits per byte** ({target:.4f} at step {steps}): "
                  f"the best OE arm, {best}, gets there at step "
                  f"{'never' if reach is None else f'{reach:.0f}'} "
                  f"({'-' if share is None else f'{share:.0%}'} of the steps; gate <= 90%: "
                  f"{'met' if share is not None and share <= 0.9 else 'NOT met'}) and ends at "
                  f"{results[best]['val_bpb']:.4f}, {gain:.2%} lower (gate >= 1.5%: "
                  f"{'met' if gain >= 0.015 else 'NOT met'}). Validation curves (step: bpb):", ""]
        for n in ("plain", *oes):
            lines.append(f"- {n}: " + ", ".join(f"{s}: {b:.3f}" for s, b in results[n]["curve"]))
        lines.append("")
    missing = [n for n in ARMS if n not in results]
    if missing:
        lines += [f"Not run yet (arms of the script without a finished run in this report): {', '.join(missing)}; "
                  "`python experiments/overtok.py --arms " + ",".join(missing) + "` adds them.", ""]
    lines += ["Training words/s above are each run's median from its own log, taken at different times on a shared "
              "machine; the gate (1M rows >= 85% of the plain model) is measured by `bench/train_throughput.py "
              "--oe-rows 1048576`, which alternates the models step by step (docs/training.md, Over-Encoding).", ""]
    if os.path.isfile(os.path.join(ROOT, "docs", "overtok_bpb.png")):
        lines += ["![held-out bits per byte against log10 table rows](overtok_bpb.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pts = [(math.log10(SIZES[n]), results[n]["eval"]["bpb"]) for n in SIZES if n in results]
    if len(pts) < 2:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs, ys = zip(*pts)
    ax.plot(xs, ys, "o-", label="OE, orders 2+3, 2 slices")
    slope, icept = fit_slope(xs, ys)
    ax.plot(xs, [icept + slope * x for x in xs], ":", color="gray", label=f"fit: {slope:+.4f} bpb / log10 rows")
    if "plain" in results:
        ax.axhline(results["plain"]["eval"]["bpb"], color="k", ls="--", label="plain (no tables)")
    fast = [(math.log10(FAST[n]), results[n]["eval"]["bpb"]) for n in FAST if n in results]
    if fast:
        ax.plot(*zip(*fast), "D--", label="OE, tables at 10x lr")
    for name, mark in (("oe-256k-no-unigram", "x"), ("oe-256k-1-slice", "s"), ("oe-256k-shared", "^")):
        if name in results:
            ax.plot([math.log10(262144)], [results[name]["eval"]["bpb"]], mark, label=name)
    ax.set_xlabel("log10(rows per n-gram table)")
    ax.set_ylabel("held-out test bits per byte")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_section(path: str, text: str) -> None:
    old = open(path, encoding="utf-8").read() if os.path.isfile(path) else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(path + ".tmp", path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = os.environ.get("TFREE_DATA", os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--corpus", default=os.path.join(data, "english_prose.txt.xz"))
    ap.add_argument("--corpus-mb", type=float, default=6.0, help="MB of an .xz corpus to use (from its start)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tfree_overtok"))
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    ap.add_argument("--report-only", action="store_true", help="write the report from the finished arms")
    ap.add_argument("--train-bytes", type=float, default=3.0e6, help="training pool (incl. the validation slice)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--pos-weight", type=float, default=300.0)
    ap.add_argument("--val-bytes", type=int, default=32000)
    ap.add_argument("--eval-every", type=int, default=50, help="validation points of the curve arms")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--results", default=os.path.join(ROOT, "docs", "results.md"))
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    unknown = set(args.arms.split(",")) - set(ARMS)
    if unknown:
        sys.exit(f"unknown arms {sorted(unknown)} (known: {', '.join(ARMS)})")
    info_path = os.path.join(args.work, "data.json")
    if not os.path.isfile(info_path):
        train_jsonl, test_jsonl, info = make_documents(corpus_file(args.corpus, args.corpus_mb), args.work,
                                                       int(args.train_bytes))
        with open(info_path, "w") as f:
            json.dump(info, f)
    with open(info_path) as f:
        info = json.load(f)
    train_shards = encode(os.path.join(args.work, "train.jsonl"), os.path.join(args.work, "train-v8192"), 8192)
    test_shards = encode(os.path.join(args.work, "test.jsonl"), os.path.join(args.work, "test-v8192"), 8192)
    if not args.report_only:
        for name in args.arms.split(","):
            run_arm(name, args, train_shards, test_shards)
    results = collect(args.work)
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump({"args": vars(args), "info": info, "results": results}, f, indent=1)
    plot(results, os.path.join(os.path.dirname(args.results), "overtok_bpb.png"))
    text = report(args, info, results)
    write_section(args.results, text)
    print(text)


if __name__ == "__main__":
    main()
