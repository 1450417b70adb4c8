"""The paper's central table at small scale: T-FREE against BPE baselines with the same body, same bytes of text.

    python experiments/paper_table.py --corpus /tmp/english_prose.txt    # ~1 h on 2 CPU cores (4 runs)

The corpus is cut into documents of about 8,000 characters at paragraph boundaries; every 64th document is the
held-out in-domain test set (never seen in training, nor by the dictionary or the tokenizers), the rest are shuffled
(fixed seed) and the first ``--train-bytes`` of them are the training data (of which ``tfree train`` holds out its
own 64 kB validation slice). Every model gets the same body, the same number of text bytes per step (BPE sequences
are as long in bytes as T-FREE's), the same schedule and seed, and ``--max-bytes`` of text. Each run is
``tfree train``, then ``tfree eval RUN/final TEST``. Writes a table and a plot of validation bits per byte against
bytes seen into docs/ (results.md, results_bpb.png), and every run's JSON beside them in --work.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = {  # name: (kind, codec v or BPE vocabulary)
    "tfree-8k": ("tfree", 8192),
    "bpe-8k": ("bpe", 8192),
    "bpe-32k": ("bpe", 32000),
    "tfree-4k": ("tfree", 4096),
}


def make_documents(corpus: str, work: str, train_bytes: int) -> tuple[str, str, dict]:
    text = open(corpus, encoding="utf-8").read()
    docs, cur = [], ""
    # paragraphs, and the lines of any paragraph longer than a document (some books have no blank lines)
    paras = [q for p in re.split(r"(?<=\n\n)", text) for q in (p.splitlines(keepends=True) if len(p) > 8000 else [p])]
    for para in paras:
        cur += para
        if len(cur) >= 8000:
            docs.append(cur)
            cur = ""
    if cur:
        docs.append(cur)
    test = [d for i, d in enumerate(docs) if i % 64 == 7]
    pool = [d for i, d in enumerate(docs) if i % 64 != 7]
    random.Random(0).shuffle(pool)
    train, n = [], 0
    for d in pool:
        if n >= train_bytes:
            break
        train.append(d)
        n += len(d.encode("utf-8"))
    paths = {}
    for name, part in (("train", train), ("test", test)):
        paths[name] = os.path.join(work, f"{name}.jsonl")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in part)
    info = {"documents": len(docs), "train_docs": len(train), "train_bytes": n, "test_docs": len(test),
            "test_bytes": sum(len(d.encode("utf-8")) for d in test)}
    return paths["train"], paths["test"], info


def encode(jsonl: str, out: str, v: int) -> str:
    from tfree_codec import CodecConfig
    from tfree_codec.shards.writer import encode_to_shards

    if not os.path.isfile(os.path.join(out, "manifest.json")):
        encode_to_shards([jsonl], out, CodecConfig(vocab_size=v, num_activations=10), num_proc=2, progress=False)
    return out


def bpe_seq_len(shards: str, run_dir: str, vocab: int, words_seq: int, val_bytes: int) -> tuple[int, float]:
    """Train the run's tokenizer exactly as `tfree train` would (same training units) and place it in the run
    directory; return the BPE sequence length with the bytes of ``words_seq`` T-FREE words, and bytes per token."""
    from tfree_codec.model.checkpoint import TOKENIZER_FILE, load_tokenizer
    from tfree_codec.shards.corpus import Corpus, make_units, split_units
    from tfree_codec.train.data import train_bpe

    corpus = Corpus.from_path(shards)
    train, _ = split_units(make_units(corpus), val_bytes)
    path = os.path.join(run_dir, TOKENIZER_FILE)
    texts = [corpus.text(d, a, b) for d, a, b in zip(train.doc.tolist(), train.start.tolist(), train.stop.tolist())]
    if not os.path.isfile(path):
        os.makedirs(run_dir, exist_ok=True)
        train_bpe(texts, vocab).save(path)
    tok = load_tokenizer(path)
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    n_words = int((train.stop - train.start).sum())
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return round(words_seq * (n_bytes / n_words) / (n_bytes / n_tokens)), n_bytes / n_tokens


def tfree(*args, nice: bool = True) -> subprocess.CompletedProcess:
    cmd = (["nice", "-n", "10"] if nice else []) + [sys.executable, "-m", "tfree_cli", *map(str, args)]
    print("$ " + " ".join(map(str, cmd[3 if nice else 0:])).replace(sys.executable, "python"), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/tmp/english_prose.txt")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tfree_paper_table"))
    ap.add_argument("--runs", default="tfree-8k,tfree-4k,bpe-8k,bpe-32k", help=f"comma-separated, from {', '.join(RUNS)}")
    ap.add_argument("--train-bytes", type=float, default=8.6e6, help="training pool (incl. the validation slice)")
    ap.add_argument("--max-bytes", type=float, default=8.0e6, help="text each model trains on")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128, help="T-FREE words per sequence")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--evals", type=int, default=10, help="validation points per run (curves to compare)")
    ap.add_argument("--pos-weight", type=float, default=None, help="the T-FREE arms' --pos-weight (only BCE reads it: "
                    "tables before the word objective used 300); unset, the arms run tfree train's defaults")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tfree-args", default="", help="extra `tfree train` options of the T-FREE arms (an arm tried "
                    "against the defaults), e.g. '--objective bce'; --tag names the arm's runs")
    ap.add_argument("--tag", default="", help="suffix of the T-FREE runs' names (with --tfree-args)")
    ap.add_argument("--results", default=os.path.join(ROOT, "docs", "results.md"))
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    t_start = time.time()
    train_jsonl, test_jsonl, info = make_documents(args.corpus, args.work, int(args.train_bytes))
    print(f"documents: {info}", flush=True)
    val_bytes = 65536
    steps_guess = args.max_bytes / (args.batch_size * args.seq_len * 3.9)
    eval_every = max(1, int(steps_guess / args.evals))
    common = ["--preset", "tiny", "--n-layer", args.n_layer, "--n-embd", args.n_embd, "--n-head", args.n_head,
              "--batch-size", args.batch_size, "--lr", args.lr, "--warmup", args.warmup, "--seed", args.seed,
              "--device", "cpu", "--dtype", "float32", "--max-bytes", int(args.max_bytes), "--eval-every", eval_every,
              "--log-every", 25, "--val-bytes", val_bytes, "-q"]
    results = {}
    for name in args.runs.split(","):
        kind, size = RUNS[name]
        v = size if kind == "tfree" else 8192  # the BPE runs read the words of the v = 8192 shards
        train_shards = encode(train_jsonl, os.path.join(args.work, f"train-v{v}"), v)
        test_shards = encode(test_jsonl, os.path.join(args.work, f"test-v{v}"), v)
        if kind == "tfree" and args.tag:
            name += args.tag
        run_dir = os.path.join(args.work, name)
        if not os.path.isfile(os.path.join(run_dir, "final", "checkpoint.json")):
            extra, seq = [], args.seq_len
            if kind == "bpe":
                seq, bpt = bpe_seq_len(train_shards, run_dir, size, args.seq_len, val_bytes)
                extra = ["--baseline", "bpe", "--bpe-vocab", size]
                print(f"{name}: {bpt:.2f} bytes per token -> {seq} tokens per sequence", flush=True)
            else:
                extra = [*(["--pos-weight", args.pos_weight] if args.pos_weight is not None else []),
                         *args.tfree_args.split()]
            t0 = time.time()
            p = tfree("train", train_shards, "-o", run_dir, "--seq-len", seq, *common, *extra,
                      *(["--resume", "auto"] if os.path.isdir(run_dir) else []))
            print(p.stdout[-600:], flush=True)
            with open(os.path.join(run_dir, "train_seconds.txt"), "w") as f:
                f.write(f"{time.time() - t0:.1f}\n")
        ev_path = os.path.join(run_dir, "test_eval.json")  # kept, so adding a run to the table re-evaluates none
        if not os.path.isfile(ev_path):
            out = tfree("eval", os.path.join(run_dir, "final"), test_shards, "--json", "-q").stdout
            with open(ev_path, "w") as f:
                f.write(out)
        with open(ev_path) as f:
            ev = json.load(f)
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            log = [json.loads(line) for line in f]
        rate = [r["bytes_per_s"] for r in log if "bytes_per_s" in r][1:]  # the first interval includes start-up
        curve = [(r["bytes_seen"], r["val_bpb"]) for r in log if "val_bpb" in r]
        results[name] = {"kind": kind, "size": size, "eval": ev, "curve": curve,
                         "bytes_per_s": statistics.median(rate) if rate else None,
                         "bytes_seen": log[-1]["bytes_seen"],
                         "train_seconds": float(open(os.path.join(run_dir, "train_seconds.txt")).read())}
        print(f"{name}: test bpb {ev['bpb']:.4f}, {results[name]['bytes_per_s'] / 1e3:.1f} kB/s", flush=True)
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump({"args": vars(args), "info": info, "results": results}, f, indent=1)
    write_report(args, info, results, time.time() - t_start)


def write_report(args, info, results, seconds) -> None:
    docs = os.path.dirname(args.results)
    png = os.path.join(docs, "results_bpb.png")
    plotted = plot(results, png)
    bpe32 = results.get("bpe-32k")
    ref = bpe32["eval"]["params"]["embedding"] + bpe32["eval"]["params"]["head"] if bpe32 else None
    bpes = [r["eval"]["bpb"] for r in results.values() if r["kind"] == "bpe"]
    best_bpe = min(bpes) if bpes else None
    given = {k: v for k, v in vars(args).items() if k not in ("results", "work") and v not in (None, "")}
    flags = [(k.replace("_", "-"), str(v)) for k, v in given.items()]
    cmd = " ".join(["python experiments/paper_table.py",
                    *[f"--{k}={shlex.quote(v)}" if " " in v else f"--{k} {v}" for k, v in flags]])
    lines = [
        "# T-FREE against BPE at small scale (the paper's table, on 2 CPU cores)", "",
        f"Produced by `{cmd}` on {platform.machine()} ({os.cpu_count()} cores, shared with other work; "
        f"`nice -n 10`; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
        f"{time.strftime('%Y-%m-%d')}: {sum(r['train_seconds'] for r in results.values()) / 60:.0f} min of training "
        f"in all, this report {seconds / 60:.0f} min (runs already trained or evaluated are reused).", "",
        f"Data: {args.corpus} cut into {info['documents']:,} documents of ~8k characters; every 64th document "
        f"({info['test_docs']} documents, {info['test_bytes'] / 1e3:,.0f} kB) is the held-out in-domain test set; "
        f"the training pool is {info['train_bytes'] / 1e6:.2f} MB ({info['train_docs']:,} documents, of which "
        "`tfree train` holds out 64 kB for validation and temperature fitting). The dictionary (T-FREE) and the "
        "tokenizers (BPE) are built from the training pool only.", "",
        f"Every model: the same Llama-style body ({args.n_layer} layers, d = {args.n_embd}, {args.n_head} heads), "
        f"batch {args.batch_size} sequences of the same number of bytes ({args.seq_len} T-FREE words; BPE "
        f"sequences as long in bytes), AdamW lr {args.lr} with {args.warmup} warmup steps and cosine decay, seed "
        f"{args.seed}, float32, {args.max_bytes / 1e6:.1f} MB of text. T-FREE: m = 10, `tfree train`'s defaults"
        + (f" and `{' '.join(filter(None, [f'--pos-weight {args.pos_weight:g}' if args.pos_weight is not None else '', args.tfree_args]))}`"
           if args.pos_weight is not None or args.tfree_args else "")
        + " (the default objective is `word`: the head trains for the dictionary softmax it is judged by, "
        "docs/training.md); test bits per byte follow `tfree eval`'s convention: the dictionary softmax of the "
        "model's word scores (word objective: its learnt scale and count prior; BCE: s / temperature + prior_weight "
        "x log(count + 1), fitted on the validation slice), and unseen words charged p_unk x a byte 4-gram spelling "
        "probability. 'plain score' is the word score alone (prior weight 0, its own fitted temperature); 'unseen "
        "as bytes' charges unseen words the SPEC's pessimistic 256^-(bytes+1) instead.", "",
        "| model | embedding | head | body | emb+head vs BPE-32k | bytes seen | train kB/s | test bpb | vs best BPE "
        "| plain score | unseen as bytes | dictionary coverage (words) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        p, ev = r["eval"]["params"], r["eval"]
        ratio = f"{(p['embedding'] + p['head']) / ref:.1%}" if ref else "-"
        vs = f"{ev['bpb'] / best_bpe:.3f}x" if best_bpe else "-"
        unseen = f"{ev['bpb_unk_bytes']:.4f}" if "bpb_unk_bytes" in ev else "-"
        plain = f"{ev['bpb_plain_score']:.4f}" if "bpb_plain_score" in ev else "-"
        cov = f"{ev['coverage_words']:.2%}" if "coverage_words" in ev else "-"
        rate = f"{r['bytes_per_s'] / 1e3:.1f}" if r["bytes_per_s"] else "-"
        lines.append(f"| {name} | {p['embedding']:,} | {p['head']:,} | {p['body']:,} | {ratio} | "
                     f"{r['bytes_seen'] / 1e6:.2f} MB | {rate} | {ev['bpb']:.4f} | {vs} | {plain} | {unseen} | {cov} |")
    lines += ["", "Train kB/s is each run's median from its log, so it carries whatever else the machine was doing "
              "at the time; `bench/train_throughput.py` alternates the models step by step for the fair comparison "
              "(docs/benchmarks.md, Training)."]
    lines += ["", f"![validation bits per byte against bytes seen]({os.path.basename(png)})" if plotted else
              "(matplotlib is not installed: no plot)", "", "Validation bits per byte during training "
              "(the 64 kB validation slice; a BCE T-FREE model's temperature re-fitted at each point, a word-objective model's "
              "learnt one read as it is):", ""]
    for name, r in results.items():
        lines.append(f"- {name}: " + ", ".join(f"{b / 1e6:.1f} MB: {x:.3f}" for b, x in r["curve"]))
    lines.append("")
    old = open(args.results, encoding="utf-8").read() if os.path.isfile(args.results) else ""
    keep = old[old.index("<!-- transfer:begin -->"):] if "<!-- transfer:begin -->" in old else ""  # transfer.py's
    with open(args.results, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + (f"\n{keep}" if keep else ""))
    print("\n".join(lines))


def plot(results, path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        if r["curve"]:
            xs, ys = zip(*r["curve"])
            ax.plot([x / 1e6 for x in xs], ys, marker="o", label=f"{name} (test {r['eval']['bpb']:.3f})",
                    linestyle="-" if r["kind"] == "tfree" else "--")
    ax.set_xlabel("bytes of text seen (MB)")
    ax.set_ylabel("validation bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


if __name__ == "__main__":
    main()
