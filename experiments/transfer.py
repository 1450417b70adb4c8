"""Cross-lingual transfer at small scale (issue 16; the T-FREE paper's Fig. 3): an English model continues in German
and in Russian.

    python experiments/transfer.py                      # the grid below, ~1 h on 2 busy CPU cores
    python experiments/transfer.py --models tfree-8k,bpe-8k --langs de,ru      # the gate pair only
    python experiments/transfer.py --english-bytes 8MB --new-bytes 4MB --n-layer 4 --n-embd 256   # bigger

Each model (T-FREE v = 8192 and 4096; BPE with 8k and 32k tokens learnt on the English pool) trains on the same
English bytes, then ``tfree train --init-from`` continues it on mono_de and on mono_ru for ``--new-bytes`` each;
the same models also train from scratch on each new language alone (the BPE ones with a tokenizer learnt on that
language, as anyone starting there would). Held-out bits per byte of the new language (``tfree train``'s own
validation slice of it, never trained on, nor seen by the dictionary or a tokenizer) are logged ``--evals`` times
per run. Every run has the same body, batch, schedule and seed; BPE sequences are as long in English bytes as
T-FREE's. The corpora are ../shared/data/*.txt.xz (decompressed into --work; nothing is committed). Writes
docs/transfer.json (the curves), docs/transfer_bpb.png and the "Cross-lingual transfer" section of docs/results.md;
``--docs-only`` redraws them from docs/transfer.json.
"""
from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paper_table import bpe_seq_len, encode  # noqa: E402  (the same encoding and BPE length rule)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
MODELS = {"tfree-8k": ("tfree", 8192), "bpe-8k": ("bpe", 8192), "tfree-4k": ("tfree", 4096), "bpe-32k": ("bpe", 32000)}
LANGS = {"en": "english_prose", "de": "mono_de", "ru": "mono_ru"}
BEGIN, END = "<!-- transfer:begin -->", "<!-- transfer:end -->"


def size(text: str) -> int:
    m = {"k": 1e3, "m": 1e6, "g": 1e9}
    t = text.strip().lower().rstrip("b")
    return int(float(t[:-1]) * m[t[-1]]) if t[-1] in m else int(float(t))


def documents(lang: str, work: str, pool_bytes: int) -> str:
    """The first ``pool_bytes`` of a corpus as documents of about 8,000 characters cut at line ends (JSONL)."""
    path = os.path.join(work, f"{lang}-{pool_bytes}.jsonl")
    if os.path.isfile(path):
        return path
    docs, cur, n = [], [], 0
    with lzma.open(os.path.join(DATA, LANGS[lang] + ".txt.xz"), "rt", encoding="utf-8") as f:
        for line in f:
            cur.append(line)
            if sum(map(len, cur)) >= 8000:
                docs.append("".join(cur))
                n += len(docs[-1].encode("utf-8"))
                cur = []
                if n >= pool_bytes:
                    break
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    os.replace(path + ".tmp", path)
    return path


def tfree(*args) -> None:
    cmd = ["nice", "-n", "19", sys.executable, "-m", "tfree_cli", *map(str, args)]
    print("$ tfree " + " ".join(map(str, args)), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def positions_per_byte(shards: str, val_bytes: int, tokenizer: str | None) -> float:
    """Words (T-FREE) or tokens of ``tokenizer`` per byte of the training text of ``shards``."""
    from tfree_codec.model.checkpoint import load_tokenizer
    from tfree_codec.shards.corpus import Corpus, make_units, split_units

    corpus = Corpus.from_path(shards)
    train, _ = split_units(make_units(corpus), val_bytes)
    texts = [corpus.text(d, a, b) for d, a, b in zip(train.doc.tolist(), train.start.tolist(), train.stop.tolist())]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    if tokenizer is None:
        return float((train.stop - train.start).sum()) / n_bytes
    tok = load_tokenizer(tokenizer)
    return sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)) / n_bytes


def curve(run_dir: str) -> list[tuple[float, float]]:
    with open(os.path.join(run_dir, "log.jsonl"), encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    return [(r["bytes_seen"], r["val_bpb"]) for r in recs if "val_bpb" in r]


def train_run(run_dir, data, common, max_bytes, eval_every, extra) -> list:
    if not os.path.isdir(os.path.join(run_dir, "final")):
        if os.path.isdir(run_dir):  # a run that died: keep only what a fresh start may overwrite
            for name in os.listdir(run_dir):
                if name.startswith("step-"):
                    subprocess.run(["rm", "-rf", os.path.join(run_dir, name)], check=True)
        t0 = time.time()
        tfree("train", data, "-o", run_dir, *common, "--max-bytes", int(max_bytes), "--eval-every", eval_every, *extra)
        print(f"  {time.time() - t0:.0f}s", flush=True)
    return curve(run_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tfree_transfer"))
    ap.add_argument("--models", default="tfree-8k,bpe-8k,tfree-4k,bpe-32k")
    ap.add_argument("--langs", default="de,ru")
    ap.add_argument("--scratch", default=None, help="models also trained from scratch (default: all of --models)")
    ap.add_argument("--english-bytes", type=size, default=size("1MB"), help="English text each model trains on")
    ap.add_argument("--new-bytes", type=size, default=size("1MB"), help="new-language text, continued or scratch")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64, help="T-FREE words per sequence")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--new-lr", type=float, default=None, help="peak learning rate of the new-language runs, continued "
                    "and from scratch alike (default: --lr, as the English run)")
    ap.add_argument("--pos-weight", type=float, default=None, help="T-FREE's --pos-weight (BCE only; the runs before "
                    "the word objective used 300); unset, tfree train's defaults")
    ap.add_argument("--val-bytes", type=size, default=size("32KB"))
    ap.add_argument("--evals", type=int, default=6, help="validation points per run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--new-seeds", default=None, help="seeds of the new-language runs (continued and scratch), e.g. "
                    "1,2: their curves are averaged point by point (default: --seed only); the English source keeps "
                    "--seed")
    ap.add_argument("--docs-only", action="store_true", help="redraw the docs from docs/transfer.json")
    ap.add_argument("--json", default=None, help="results file (default docs/transfer.json)")
    ap.add_argument("--no-docs", action="store_true", help="only the results file, not results.md")
    args = ap.parse_args()
    out_json = args.json or os.path.join(ROOT, "docs", "transfer.json")
    if args.docs_only:
        write_docs(json.load(open(out_json, encoding="utf-8")))
        return
    os.makedirs(args.work, exist_ok=True)
    t_start = time.time()
    res = json.load(open(out_json, encoding="utf-8")) if os.path.isfile(out_json) else {}
    res.update(setup={k: v for k, v in vars(args).items() if k not in ("work", "docs_only")},
               machine=f"{platform.machine()}, {os.cpu_count()} CPUs, torch CPU float32")
    res.setdefault("curves", {})
    res.setdefault("positions_per_byte", {})
    common = ["--preset", "tiny", "--batch-size", args.batch_size, "--lr", args.lr, "--warmup", args.warmup,
              "--seed", args.seed, "--device", "cpu", "--dtype", "float32", "--log-every", 25, "--val-bytes",
              args.val_bytes, "--sample-words", 0, "--no-plot", "-q"]
    shape = ["--n-layer", args.n_layer, "--n-embd", args.n_embd, "--n-head", args.n_head,
             *(["--pos-weight", args.pos_weight] if args.pos_weight is not None else [])]
    langs = args.langs.split(",")
    new_lr = ["--lr", args.new_lr] if args.new_lr is not None else []

    def shards(lang, v, budget):
        jsonl = documents(lang, args.work, int(budget * 1.02) + 2 * args.val_bytes)  # about one epoch
        return encode(jsonl, os.path.join(args.work, f"{lang}-{budget}-v{v}"), v)

    def steps_every(budget, ppb, seq_len):
        return max(1, int(budget * ppb / (args.batch_size * seq_len) / args.evals))

    for name in args.models.split(","):
        kind, size_ = MODELS[name]
        v = size_ if kind == "tfree" else 8192  # BPE runs read the text of the v = 8192 shards
        en = shards("en", v, args.english_bytes)
        src = os.path.join(args.work, f"en-{name}")
        if kind == "tfree":
            seq, extra, tok = args.seq_len, [], None
        else:
            seq, _ = bpe_seq_len(en, src, size_, args.seq_len, args.val_bytes)
            extra, tok = ["--baseline", "bpe", "--bpe-vocab", size_], os.path.join(src, "tokenizer.json")
        ppb = res["positions_per_byte"].setdefault(name, {})
        ppb["en"] = positions_per_byte(en, args.val_bytes, tok)
        res["curves"][f"en/{name}"] = train_run(src, en, common + shape, args.english_bytes,
                                                 steps_every(args.english_bytes, ppb["en"], seq),
                                                 ["--seq-len", seq, *extra])
        for lang in langs:
            new = shards(lang, v, args.new_bytes)
            ppb[lang] = positions_per_byte(new, args.val_bytes, tok)  # the English tokenizer on the new language
            every = steps_every(args.new_bytes, ppb[lang], seq)
            seeds = [int(x) for x in (args.new_seeds or str(args.seed)).split(",")]

            def seeded(run_dir, seed):  # the first seed's run keeps the plain name (and so earlier results)
                return run_dir if seed == seeds[0] else f"{run_dir}-s{seed}"

            res["curves"][f"{lang}/{name}/continued"] = mean_curve(res, f"{lang}/{name}/continued", {
                seed: train_run(seeded(os.path.join(args.work, f"{lang}-{name}-continued"), seed), new, common,
                                args.new_bytes, every, ["--init-from", src, "--seed", seed, *new_lr]) for seed in seeds})
            if name in (args.scratch or args.models).split(","):
                scratch = os.path.join(args.work, f"{lang}-{name}-scratch")
                s_seq = seq if kind == "tfree" else bpe_seq_len(new, scratch, size_, args.seq_len, args.val_bytes)[0]
                s_ppb = ppb[lang] if kind == "tfree" else positions_per_byte(new, args.val_bytes,
                                                                              os.path.join(scratch, "tokenizer.json"))
                ppb[f"{lang}-own"] = s_ppb
                res["curves"][f"{lang}/{name}/scratch"] = mean_curve(res, f"{lang}/{name}/scratch", {
                    seed: train_run(seeded(scratch, seed), new, common + shape, args.new_bytes,
                                    steps_every(args.new_bytes, s_ppb, s_seq),
                                    ["--seq-len", s_seq, *extra, "--seed", seed, *new_lr]) for seed in seeds})
            res["minutes"] = res.get("minutes", 0) + (time.time() - t_start) / 60
            t_start = time.time()
            with open(out_json, "w", encoding="utf-8") as f:
                json.dump(res, f, indent=1)
            if not args.no_docs:
                write_docs(res)


def mean_curve(res, key: str, by_seed: dict) -> list:
    """The point-by-point mean of one run's curves over seeds (the runs evaluate at the same steps), kept per seed
    in res["seeds"] too."""
    res.setdefault("seeds", {})[key] = {str(k): v for k, v in by_seed.items()}
    curves = list(by_seed.values())
    n = min(len(c) for c in curves)
    return [(sum(c[i][0] for c in curves) / len(curves), sum(c[i][1] for c in curves) / len(curves)) for i in range(n)]


def at(points, x):
    """Linear interpolation of a curve at ``x`` bytes (None outside it)."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1e-9)
    return points[-1][1] if points and math.isclose(points[-1][0], x) else None


def gates(res) -> tuple[list[str], dict]:
    """The two gates of issue 16 on every language with the curves they need; lines for the docs, and verdicts."""
    lines, verdict = [], {}
    c = res["curves"]
    for lang in res["setup"]["langs"].split(","):
        t, b, s = (c.get(f"{lang}/{k}") for k in ("tfree-8k/continued", "bpe-8k/continued", "tfree-8k/scratch"))
        if t and b:
            ratios = [(x, y, at(b, x)) for x, y in t if at(b, x) is not None]
            after = [(x, y, z) for x, y, z in ratios if x >= min(1e6, 0.5 * t[-1][0])] or ratios[-1:]
            end = 1 - t[-1][1] / b[-1][1]
            ok = all(y < z for _, y, z in after) and end >= 0.05
            verdict[f"{lang}: T-FREE 8k beats BPE 8k"] = ok
            lines.append(f"| {lang} | T-FREE 8k vs BPE 8k, continued | " + ", ".join(
                f"{x / 1e6:.2f} MB: {y:.3f} vs {z:.3f}" for x, y, z in ratios) + f" | {end:+.1%} | "
                f"{'met' if ok else 'not met'} |")
        if t and s:
            pairs = [(x, y, at(s, x)) for x, y in t if at(s, x) is not None]
            ok = bool(pairs) and all(y < z for _, y, z in pairs)
            verdict[f"{lang}: continued beats scratch"] = ok
            lines.append(f"| {lang} | T-FREE 8k continued vs from scratch | " + ", ".join(
                f"{x / 1e6:.2f} MB: {y:.3f} vs {z:.3f}" for x, y, z in pairs) +
                f" | {1 - t[-1][1] / s[-1][1]:+.1%} | {'met' if ok else 'not met'} |")
    return lines, verdict


def plot(res, path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    langs = res["setup"]["langs"].split(",")
    colors = {"tfree-8k": "C0", "tfree-4k": "C2", "bpe-8k": "C3", "bpe-32k": "C1"}
    fig, axes = plt.subplots(1, len(langs), figsize=(5.5 * len(langs), 4.2), squeeze=False)
    for ax, lang in zip(axes[0], langs):
        for name, color in colors.items():
            for how, style in (("continued", "-"), ("scratch", ":")):
                pts = res["curves"].get(f"{lang}/{name}/{how}")
                if pts:
                    ax.plot([x / 1e6 for x, _ in pts], [y for _, y in pts], style, marker="o", ms=3, color=color,
                            label=f"{name} {'from English' if how == 'continued' else 'from scratch'}")
        ax.set_title(f"held-out {lang}: {'German' if lang == 'de' else 'Russian' if lang == 'ru' else lang}")
        ax.set_xlabel(f"{lang} MB seen")
        ax.set_ylabel("bits per byte")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def new_lr_note(s) -> str:
    lr = s.get("new_lr")
    return "" if lr is None or lr == s["lr"] else f" (the new-language runs, continued and from scratch alike: {lr:g})"


def seed_note(res) -> str:
    """A paragraph on the curves that are means over several seeds, with each seed's last point."""
    multi = {k: v for k, v in res.get("seeds", {}).items() if len(v) > 1}
    if not multi:
        return ""
    seeds = sorted({s for v in multi.values() for s in v}, key=int)
    each = "; ".join(f"{k}: " + ", ".join(f"seed {s} {c[-1][1]:.4f}" for s, c in v.items()) for k, v in multi.items())
    return (f"\n\nThe new-language runs of {', '.join(sorted({k.split('/')[1] for k in multi}))} are repeated with seeds "
            f"{', '.join(seeds)} (data order and, from scratch, initial weights; the English source is one run) and "
            f"their curves are the point-by-point mean; the other runs are one seed. Each seed's final held-out bits "
            f"per byte: {each}.")


def write_docs(res) -> None:
    s = res["setup"]
    plot(res, os.path.join(ROOT, "docs", "transfer_bpb.png"))
    lines, verdict = gates(res)
    ppb = res["positions_per_byte"]
    langs = ["en", *s["langs"].split(",")]
    table = ["| model | " + " | ".join(langs) + " |", "|---" * (len(langs) + 1) + "|"]
    for name, d in ppb.items():
        table.append(f"| {name}{' (tokenizer learnt on English)' if name.startswith('bpe') else ''} | "
                     + " | ".join(f"{d[lang]:.3f}" if lang in d else "-" for lang in langs) + " |")
        if name.startswith("bpe"):
            table.append(f"| {name} (tokenizer learnt on the language itself) | - | "
                         + " | ".join(f"{d[f'{lang}-own']:.3f}" if f"{lang}-own" in d else "-" for lang in langs[1:]) + " |")
    finals = ["| run | " + " | ".join(langs[1:]) + " |", "|---" * len(langs) + "|"]
    names = sorted({k.split("/")[1] for k in res["curves"] if "/" in k and not k.startswith("en/")},
                   key=list(MODELS).index)
    for name in names:
        for how in ("continued", "scratch"):
            vals = [res["curves"].get(f"{lang}/{name}/{how}") for lang in langs[1:]]
            finals.append(f"| {name} {'from English' if how == 'continued' else 'from scratch'} | "
                          + " | ".join(f"{v[-1][1]:.4f}" if v else "-" for v in vals) + " |")
    after = ("after the first MB" if s["new_bytes"] > 1e6 else
             "in the second half (the runs are shorter than the gate's \"after the first MB\")")
    text = f"""{BEGIN}
## Cross-lingual transfer: an English model continues in German and Russian (issue 16)

**Small scale.** Bodies of {s['n_layer']} layers x {s['n_embd']} wide, batches of {s['batch_size']} sequences of
{s['seq_len']} T-FREE words (BPE sequences as long in English bytes), {s['english_bytes'] / 1e6:g} MB of English, then
{s['new_bytes'] / 1e6:g} MB of German (mono_de) or Russian (mono_ru), on {res['machine']} (~{res.get('minutes', 0):.0f}
minutes in all); AdamW at peak lr {s['lr']:g} after {s['warmup']} warmup steps{new_lr_note(s)}. The new-language
data are translated manual pages, the English is prose. Models run:
{', '.join(names)}. Rerun or scale up with `python experiments/transfer.py --english-bytes 8MB --new-bytes 4MB
--n-layer 4 --n-embd 256` (see its docstring); `--docs-only` redraws this section from docs/transfer.json.

Each English model continues with `tfree train NEW -o RUN --init-from EN_RUN` (weights and shape of the source,
a fresh optimizer and schedule; T-FREE's dictionary gains the new words, the English BPE tokenizer is kept). The
English words stay in the grown dictionary at count 0; the calibration prices them with its own fitted weight
(`zero_count_weight`, docs/training.md), so they do not take a seen-once word's share of the softmax.
"From scratch" is the same body trained on the new language alone (BPE with a tokenizer learnt on it). Held-out bits
per byte are on `tfree train`'s validation slice ({s['val_bytes'] / 1e3:g} kB) of the new language, measured
{s['evals']} times per run and at the end.{seed_note(res)}

![held-out bits per byte in German and Russian against new-language bytes seen](transfer_bpb.png)

Final held-out bits per byte (lower is better):

{chr(10).join(finals)}

Positions per byte (T-FREE: words; BPE: tokens) on each language's training text; the English tokenizer's
fragmentation of German and Russian is what the continued BPE models read:

{chr(10).join(table)}

Gates (issue 16): T-FREE 8k must beat BPE 8k after continued training at every measured point {after}, by at least
5% at the end; T-FREE continued from English
must beat T-FREE from scratch at equal new-language bytes (bits per byte at T-FREE's points, the other curve
interpolated):

| language | comparison | held-out bpb at each point (first vs second) | first lower by, at the end | gate |
|---|---|---|---|---|
{chr(10).join(lines)}

Verdict: {'; '.join(f"{k}: {'met' if v else 'NOT met'}" for k, v in verdict.items()) or 'no gate pair ran'}.
{END}
"""
    path = os.path.join(ROOT, "docs", "results.md")
    doc = open(path, encoding="utf-8").read()
    if BEGIN in doc:
        doc = doc[:doc.index(BEGIN)] + text.rstrip("\n") + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)
    print(f"wrote {path} and docs/transfer_bpb.png: {verdict}", flush=True)


if __name__ == "__main__":
    main()
