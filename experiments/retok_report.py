"""The docs/results.md section and the plot of experiments/retok.py (from its retok.json)."""
from __future__ import annotations


def _arms(res):
    return {k: r for k, r in res["runs"].items() if k.startswith("retok-") and not k.endswith("-unfrozen")}


def gates(res) -> list[tuple[str, str, bool]]:
    """(gate, the figures, met) for the issue's three gates."""
    runs, arms = res["runs"], _arms(res)
    bpe_val, bpe = runs["bpe-8k"]["val"], runs["bpe-8k"]["test"]["bpb"]
    out = []
    rnd = next((r for k, r in arms.items() if k.startswith("retok-random")), None)
    inits = {k: r for k, r in arms.items() if not k.startswith("retok-random")}
    if rnd and inits:
        best0 = min(inits, key=lambda k: inits[k]["retok"]["val_bpb_step0"])
        r0, b0 = rnd["retok"]["val_bpb_step0"], inits[best0]["retok"]["val_bpb_step0"]
        closed = (r0 - b0) / (r0 - bpe_val) if r0 > bpe_val else float("nan")
        out.append((f"step 0 (validation slice): the best initialisation ({best0[6:]}) closes at least half of the gap "
                    "between random initialisation and the BPE source",
                    f"random {r0:.4f}, {best0[6:]} {b0:.4f}, BPE source {bpe_val:.4f}: {closed:.0%} of the gap closed",
                    closed >= 0.5))
        rf, bf = rnd["val"], inits[best0]["val"]
        out.append((f"after the same {rnd['steps']} frozen-body steps (validation slice), {best0[6:]} stays ahead of "
                    "random", f"{bf:.4f} vs {rf:.4f}", bf < rf))
    best = min(arms, key=lambda k: arms[k]["val"])
    b = arms[best]["val"]
    share = arms[best]["bytes_seen"] / runs["bpe-8k"]["bytes_seen"]
    out.append((f"frozen body, {share:.0%} of the source's training bytes: within 5% of the BPE source (validation "
                "slice, the best arm)", f"{best[6:]} {b:.4f} vs BPE {bpe_val:.4f} ({b / bpe_val - 1:+.1%})",
                b <= 1.05 * bpe_val))
    dflt = next((k for k, r in arms.items() if "test" in r), None)
    if dflt:
        t = arms[dflt]["test"]["bpb"]
        out.append(("the same on the test set (the default conversion)",
                    f"{dflt[6:]} {t:.4f} vs BPE {bpe:.4f} ({t / bpe - 1:+.1%})", t <= 1.05 * bpe))
    unf = next((k for k in runs if k.endswith("-unfrozen")), None)
    if unf and "tfree-scratch" in runs:
        u, s = runs[unf]["test"]["bpb"], runs["tfree-scratch"]["test"]["bpb"]
        out.append(("after unfreezing, no worse than T-FREE from scratch on the same total bytes (test set)",
                    f"{unf[6:]} {u:.4f} vs scratch {s:.4f} ({u / s - 1:+.1%})", u <= s))
    return out


def section(res, plotted: bool) -> str:
    a, runs, arms = res["args"], res["runs"], _arms(res)
    bpe = runs["bpe-8k"]
    mb = lambda x: f"{x / 1e6:.2f} MB"  # noqa: E731
    f4 = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    wu, ulr = a.get("retok_warmup", 100), a.get("unfreeze_lr", 0.3)  # the first runs predate both options
    cmd = ("python experiments/retok.py --corpus ../shared/data/english_prose.txt --train-bytes "
           f"{a['train_bytes']:g} --source-bytes {a['source_bytes']:g} --frozen-bytes {a['frozen_bytes']:g} "
           f"--unfrozen-bytes {a['unfrozen_bytes']:g} --pos-weight {a['pos_weight']:g} --lr {a['lr']:g} --retok-warmup "
           f"{wu} --unfreeze-lr {ulr:g} --seed {a['seed']}")
    L = ["## ReTok: a trained BPE model converted into a T-FREE model (issue 18)", "",
         f"Produced by `{cmd}` on {res.get('machine', '?')}, {res.get('date', '?')}; "
         "`--docs-only` redraws this section from the work folder's retok.json.", "",
         f"Source: the paper_table body (2 layers, d = 128, 4 heads, RoPE) trained as `--baseline bpe --bpe-vocab 8192` "
         f"on {mb(bpe['bytes_seen'])} of english_prose (batch 16 x 140 tokens, lr {a['lr']:g}, warmup 100), with the "
         f"paper table's document split (test set: every 64th document, {res['info']['test_bytes'] / 1e3:.0f} kB). "
         "`tfree retok` keeps its blocks and final norm, fits the T-FREE embedding and head (v = 8192, m = 10) to the "
         "BPE rows by frequency-weighted least squares ([retok.md](retok.md)), then trains embedding, head and final "
         f"norm with the body frozen for {mb(a['frozen_bytes'])} ({a['frozen_bytes'] / bpe['bytes_seen']:.0%} of the "
         f"source's bytes; pos_weight {a['pos_weight']:g}, lr {a['lr']:g} after {wu} warmup steps); the default "
         f"conversion (mean, first) is then unfrozen for {mb(a['unfrozen_bytes'])} (lr x {ulr:g}, a fresh warmup of "
         f"{wu} steps). T-FREE from scratch: the same body from random weights "
         "on the source's bytes plus the conversion's. Validation bits per byte are on `tfree train`'s 64 kB held-out "
         "slice (the same units for every run; step 0 is the converted checkpoint, calibrated on that slice as "
         "`tfree eval` would); test bits per byte (`tfree eval`, minutes per T-FREE model here) only for the runs the "
         "gates compare.", ""]
    if plotted:
        L += ["![validation bits per byte of the conversions against steps](retok_bpb.png)", ""]
    L += ["| model | training after the source | validation bpb at step 0 | validation bpb | test bpb | test vs BPE "
          "source | digit paragraphs bpb (step 0 -> end) |", "|---|---:|---:|---:|---:|---:|---:|"]
    L.append(f"| BPE-8k source | - | - | {f4(bpe['val'])} | {bpe['test']['bpb']:.4f} | 1.000x | {bpe['digits']['bpb']:.4f} |")
    for k, r in runs.items():
        if k == "bpe-8k":
            continue
        t0 = f4(r["retok"]["val_bpb_step0"]) if "retok" in r else "-"
        test = f"{r['test']['bpb']:.4f} | {r['test']['bpb'] / bpe['test']['bpb']:.3f}x" if "test" in r else "- | -"
        dig = (f"{r['digits0']['bpb']:.4f} -> " if "digits0" in r else "") + (f"{r['digits']['bpb']:.4f}" if "digits" in r else "-")
        what = ("frozen body" if k in arms else "frozen, then unfrozen" if k.endswith("-unfrozen") else
                "all of it, from random weights")
        L.append(f"| {k} | {mb(r['bytes_seen'])} ({r['steps']} steps; {what}) | {t0} | {f4(r['val'])} | {test} | {dig} |")
    L += ["", "Gates (issue 18):", "", "| gate | figures | |", "|---|---|---|"]
    L += [f"| {g} | {f} | {'met' if ok else '**missed**'} |" for g, f, ok in gates(res)]
    L += ["", "Fit of the initialisation (R^2 and mean cosine of each word's summed pattern rows against its target, "
          "by the word's count in the training text):", "",
          "| init | counts | words | input R^2 | input cosine | head R^2 | head cosine |", "|---|---|---:|---:|---:|---:|---:|"]
    for k, r in arms.items():
        rec = r["retok"]
        for qi, qh in zip(rec.get("fit_input", []), rec.get("fit_head", [])):
            L.append(f"| {k[6:]} | {qi['counts']} | {qi['words']:,} | {qi['r2']:.3f} | {qi['cosine']:.3f} | "
                     f"{qh['r2']:.3f} | {qh['cosine']:.3f} |")
    first = next(iter(arms.values()))["retok"]
    L += ["", f"{first['words']:,} dictionary words; a word occurrence is {first['pieces_per_word']:.2f} BPE pieces on "
          f"average ({first['single_piece_share']:.0%} of occurrences are one piece).", "",
          "| model | positions per byte (test) | generation bytes/s (sampled, 200 items, 1 thread) |", "|---|---:|---:|"]
    for k, r in runs.items():
        if "test" in r:
            speed = f"{r['speed']['bytes_per_s']:,.0f}" if "speed" in r else "-"
            L.append(f"| {k} | {r['test']['positions_per_byte']:.3f} | {speed} |")
    return "\n".join(L)


def plot(res, path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = res["runs"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    bpe_val = runs["bpe-8k"]["val"]
    for k, r in runs.items():
        if k.startswith("retok-"):
            xs = [0] + [s for s, _, _ in r["curve"]]
            ys = [r["retok"]["val_bpb_step0"] if "retok" in r else None] + [y for _, _, y in r["curve"]]
            if ys[0] is None:
                xs, ys = xs[1:], ys[1:]
            ax.plot(xs, ys, marker="o", ms=3, label=k[6:], linestyle="--" if k.endswith("-unfrozen") else "-")
    if bpe_val:
        ax.axhline(bpe_val, color="k", linestyle=":", label=f"BPE-8k source ({bpe_val:.3f})")
    ax.set_xlabel("conversion steps (16 sequences each)")
    ax.set_ylabel("validation bits per byte")
    ax.set_title("body frozen (solid), then unfrozen (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    src_bytes = runs["bpe-8k"]["bytes_seen"]
    for k, r in runs.items():
        if k == "bpe-8k" or k.endswith("-unfrozen") or k == "tfree-scratch":
            off = src_bytes if k.startswith("retok-") else 0
            xs = [(b + off) / 1e6 for _, b, _ in r["curve"]]
            bx.plot(xs, [y for _, _, y in r["curve"]], marker="o", ms=3, label=k)
    bx.set_xlabel("bytes of text trained on, source included (MB)")
    bx.set_ylabel("validation bits per byte")
    bx.set_title("converting vs starting over")
    bx.grid(alpha=0.3)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True
