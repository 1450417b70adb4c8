"""Generation speed: words/s with and without the KV cache, and bytes of text per second of a T-FREE model beside
its same-body BPE baseline, all measured in this run.

    python bench/generate.py --bpe RUN_BPE/final [--tfree RUN_TFREE/final] [--new 256] [--repeats 3]

Each run continues the same prompt by exactly ``--new`` items (words or tokens; <|endoftext|> does not stop it),
in one CPU process with one torch thread (as ``tfree generate``; ``--threads``). A first short run per model warms
up numba, the dictionary scorer and torch. Reported: the median of ``--repeats`` round-robin runs (every model and
setting once per round, with and without the KV cache, so load changes on a shared machine hit all alike).
``--shapes small,...`` adds randomly initialised models of those presets, T-FREE (same codec and dictionary) and,
with ``--bpe``, BPE (the baseline's tokenizer), cached and not: speed does not depend on the weights, and the
items/s of the two show how the heads' cost moves with the width (bytes per item of random text mean nothing). ``--profile`` adds where a cached greedy word's time goes, and the step's matrix-vector products timed with
their weights in the CPU's caches and from memory.

``--dicts`` measures generation against dictionary size instead: the model with its own dictionary and with each
given one (``N`` words of all the corpora in /tmp, or ``N:english_prose,mono_de`` of those; bench/common_dict.py),
greedy and sampled, the pruned search and full scoring round-robin in this run; the words/s ratios to the bundled
dictionary, the share of the dictionary the pruned search read, whether the greedy texts are identical, and the
start-up: the seconds to load the dictionary file and from the loaded model and dictionary to its first word, each
measured in a fresh process (the index cache warm, the numba kernels compiled; and once with an empty index cache,
so that the index is built). ``--startup`` limits the start-up runs to some of the dictionaries.

    python bench/generate.py --dicts 92000:english_prose,mono_de 100000 [--new 100] [--repeats 3] [--startup 100000]

``--draft`` (a model trained with ``--od-weight``) measures self-speculative generation instead (speculative.py):
words/s with and without ``draft=True``, greedy and sampled, on the same model and the same prompts, round-robin
in this run; the ratios, the second-word acceptance and whether the greedy texts are identical. On the CPU with
``--threads`` torch threads (1, as ``tfree generate``), and on CUDA too when a GPU is present.

    python bench/generate.py --draft --tfree RUN_OD/final [--new 256] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tfree_codec.generate import LanguageModel  # noqa: E402

PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
SETTINGS = {"greedy": dict(temperature=0), "sampled T=0.8 top-p 0.95": dict(temperature=0.8, top_p=0.95)}


def one(lm: LanguageModel, new: int, seed: int, use_cache: bool, **kw) -> dict:
    t0 = time.perf_counter()
    pieces = list(lm.stream(PROMPT, max_new_tokens=new, seed=seed, use_cache=use_cache, stop_at_eot=False, **kw))
    dt = time.perf_counter() - t0
    nbytes = sum(len(p.text.encode("utf-8")) for p in pieces)
    return {"items_s": len(pieces) / dt, "bytes_s": nbytes / dt, "bytes_per_item": nbytes / len(pieces), "s": dt}


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


UNCACHED = "greedy, no KV cache"


def measure(models: dict, new: int, repeats: int) -> dict:
    """Round-robin: each repeat runs every (model, setting) once, the uncached reader too, so a change in the
    machine's load between runs falls on all of them alike; then the medians."""
    for lm in models.values():
        lm.generate(PROMPT, max_new_tokens=8, seed=0, stop_at_eot=False)  # warm-up
    settings = {**{name: (True, kw) for name, kw in SETTINGS.items()}, UNCACHED: (False, SETTINGS["greedy"])}
    runs = {(kind, name): [] for kind in models for name in settings}
    for r in range(repeats):
        for kind, lm in models.items():
            for name, (use_cache, kw) in settings.items():
                runs[kind, name].append(one(lm, new, r, use_cache, **kw))
    return {kind: {name: median_of(runs[kind, name]) for name in settings} for kind in models}


def profile(lm: LanguageModel, new: int, rounds: int = 30) -> None:
    """A cached greedy run split into the model's one-position steps (step.CpuStep), the dictionary scoring
    and sampling (generate/vocab.py's _WordSampler), and the rest (the prompt's pass and context refills through torch,
    Python); then the step's matrix-vector products alone (numpy), warm (each timed right after itself) and cold
    (after 64 MB of other memory has been written, as by whatever runs between two words on a busy machine)."""
    import numpy as np  # noqa: PLC0415

    from tfree_codec.generate import vocab as G  # noqa: PLC0415
    from tfree_codec.model.step import CpuStep  # noqa: PLC0415

    spent = {"step": 0.0, "scoring and sampling": 0.0}

    def timed(cls, name, key):
        f = getattr(cls, name)

        def g(*a, **kw):
            t0 = time.perf_counter()
            try:
                return f(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - t0
        setattr(cls, name, g)
        return f
    originals = [(CpuStep, "step", timed(CpuStep, "step", "step")),
                 (G._WordSampler, "__call__", timed(G._WordSampler, "__call__", "scoring and sampling"))]
    try:
        t0 = time.perf_counter()
        n = len(list(lm.stream(PROMPT, max_new_tokens=new, temperature=0, stop_at_eot=False)))
        wall = time.perf_counter() - t0
    finally:
        for cls, name, f in originals:
            setattr(cls, name, f)
    parts = ", ".join(f"{k} {v / n * 1e3:.2f} ms" for k, v in spent.items())
    print(f"\ncached greedy, {n} words: {wall / n * 1e3:.2f} ms a word: {parts}, the rest (prompt and refills "
          f"through torch, Python) {(wall - sum(spent.values())) / n * 1e3:.2f} ms")
    weights = [p.detach().numpy() for name, p in lm.model.named_parameters() if p.dim() == 2 and not name.startswith("embed")]
    xs = {w.shape[1]: np.ones(w.shape[1], np.float32) for w in weights}
    junk = np.zeros(16 * 2**20, np.float32)  # 64 MB
    warm, cold = [], []
    for _ in range(rounds):
        t = 0.0
        for w in weights:
            w @ xs[w.shape[1]]
            t0 = time.perf_counter()
            w @ xs[w.shape[1]]
            t += time.perf_counter() - t0
        warm.append(t)
        junk += 1
        t0 = time.perf_counter()
        for w in weights:
            w @ xs[w.shape[1]]
        cold.append(time.perf_counter() - t0)
    nbytes = sum(w.nbytes for w in weights)
    print(f"the {len(weights)} matrix-vector products of a step ({nbytes / 1e6:.1f} MB of weights), median of {rounds}: "
          f"{statistics.median(warm) * 1e3:.2f} ms warm, {statistics.median(cold) * 1e3:.2f} ms after 64 MB of other "
          f"writes")


DRAFT_PROMPTS = [PROMPT, "Emma Woodhouse, handsome, clever, and rich,", "\"My dear Mr. Bennet,\" said his lady"]


def measure_draft(lm: LanguageModel, new: int, repeats: int) -> dict:
    """{(setting, drafting): {"words_s", "accept", "texts"}}: each repeat runs every prompt under every setting,
    plain then drafting, so load changes hit both alike."""
    from tfree_codec.generate.speculative import DraftStats  # noqa: PLC0415

    lm.generate(PROMPT, max_new_tokens=8, seed=0, stop_at_eot=False)  # warm-up: numba, the scorer, torch
    lm.generate(PROMPT, max_new_tokens=8, seed=0, stop_at_eot=False, draft=True)
    out = {(name, d): {"s": [], "words": 0, "drafted": 0, "accepted": 0, "texts": []}
           for name in SETTINGS for d in (False, True)}
    for r in range(repeats):
        for name, kw in SETTINGS.items():
            for d in (False, True):
                acc, stats, t = out[name, d], DraftStats(), 0.0
                for k, prompt in enumerate(DRAFT_PROMPTS):
                    t0 = time.perf_counter()
                    pieces = list(lm.stream(prompt, max_new_tokens=new, seed=r * 100 + k, stop_at_eot=False,
                                            draft=d, draft_stats=stats, **kw))
                    t += time.perf_counter() - t0
                    if r == 0:
                        acc["texts"].append("".join(p.text for p in pieces))
                    acc["words"] += len(pieces) if r == 0 else 0
                acc["s"].append(t)
                acc["drafted"] += stats.drafted
                acc["accepted"] += stats.accepted
    return {key: {"words_s": v["words"] / statistics.median(v["s"]),
                  "accept": v["accepted"] / v["drafted"] if v["drafted"] else float("nan"), "texts": v["texts"]}
            for key, v in out.items()}


def draft_parts(lm: LanguageModel, rounds: int = 7, calls: int = 40) -> None:
    """What a plain word and a drafting pass are made of on the CPU (medians of ``rounds``): the body for one and
    for two positions (step.CpuStep), a head, the main dictionary decode and the draft's; and the words/s ratio
    those predict for a given acceptance (Python's own cost per pass not counted)."""
    import numpy as np  # noqa: PLC0415

    from tfree_codec.generate.vocab import _WordSampler  # noqa: PLC0415
    from tfree_codec.model.step import CpuStep  # noqa: PLC0415
    from tfree_codec.generate.speculative import Drafter  # noqa: PLC0415

    cache = lm.model.new_kv_cache(1)
    step = CpuStep(lm.model, cache)
    rows = lm.vocab.indices[lm.vocab.indptr[50]:lm.vocab.indptr[51]]
    cal, rng = lm.calibration, np.random.default_rng(0)
    prior = (cal["prior_weight"], cal["zero_count_weight"])
    sampler = _WordSampler(lm.vocab, cal["temperature"], prior, None)
    drafter = Drafter(lm.vocab, cal["temperature"], prior)
    h = step.hidden([rows])[0]
    logits = step.logits(h)
    parts = {"body, 1 position": lambda: step.hidden([rows]), "body, 2 positions in one pass": lambda: step.hidden([rows, rows]),
             "one head": lambda: step.logits(h), f"main dictionary decode ({len(lm.vocab):,} words)":
             lambda: sampler(logits, 0, None, None, rng), f"draft decode ({len(drafter.ids):,} words)": lambda: drafter.greedy(logits)}
    times = {k: [] for k in parts}
    for _ in range(rounds):
        for k, f in parts.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                cache.pos = 100
                f()
            times[k].append((time.perf_counter() - t0) / calls * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\n| piece of a step (CPU) | ms |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} |")
    b1, b2, head, dec, draft = med.values()
    plain, kept, rejected = b1 + head + dec, b2 + 3 * head + 2 * dec + draft, b2 + 2 * head + dec + draft
    print(f"\nplain word {plain:.3f} ms; a drafting pass: {kept:.3f} ms when the draft is kept (2 words), {rejected:.3f} "
          f"ms when not (1 word); predicted drafting / plain: " + ", ".join(
              f"{(1 + a) * plain / (a * kept + (1 - a) * rejected):.2f}x at {a:.0%}" for a in (0.25, 0.5, 0.75, 1.0)))


def draft_report(path: str | None, new: int, repeats: int) -> None:
    import torch  # noqa: PLC0415

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        lm = LanguageModel.load(path, device)
        if not lm.model.config.od:
            raise SystemExit(f"{lm.path} has no Over-Decoding head: train it with --od-weight")
        r = measure_draft(lm, new, repeats)
        print(f"\n{device}: {new} new words after each of {len(DRAFT_PROMPTS)} prompts; median of {repeats} "
              "round-robin runs\n")
        print("| device | decoding | plain words/s | drafting words/s | ratio | second-word acceptance |")
        print("|---|---|---|---|---|---|")
        for name in SETTINGS:
            a, b = r[name, False], r[name, True]
            print(f"| {device} | {name} | {a['words_s']:.1f} | {b['words_s']:.1f} | {b['words_s'] / a['words_s']:.2f}x "
                  f"| {b['accept']:.1%} |")
        same = r["greedy", False]["texts"] == r["greedy", True]["texts"]
        print(f"\n{device}: greedy text identical with and without drafting: {same}; drafting / plain greedy "
              f"{r['greedy', True]['words_s'] / r['greedy', False]['words_s']:.2f}x (gate on the CPU: >= 1.3x, "
              f"acceptance >= 50%)")
        if device == "cpu":
            draft_parts(lm)


STARTUP = """
import sys, time, torch
torch.set_num_threads(1)
from tfree_codec.decode.dictionary import Dictionary
from tfree_codec.generate import LanguageModel
from tfree_codec.generate.vocab import Words
lm = LanguageModel.load(sys.argv[1] or None, "cpu")
t0 = time.perf_counter()
if sys.argv[2]:
    lm = LanguageModel(lm.model, lm.codec, Words(Dictionary.load(sys.argv[2], lm.codec), lm.vocabulary.calibration),
                       lm.path)
t1 = time.perf_counter()
next(iter(lm.stream(sys.argv[3], max_new_tokens=1, seed=0, temperature=float(sys.argv[4]), search=sys.argv[5])))
print(t1 - t0, time.perf_counter() - t1)
"""


def startup(model: str | None, dict_path: str, temperature: float, search: str, repeats: int,
            cold: bool = False) -> tuple[float, float]:
    """Medians over fresh processes of (seconds to load the dictionary file, seconds from the loaded model and
    dictionary to the first word). ``cold``: each process gets an empty index cache (TFREE_CACHE), as the first
    start with a new dictionary has; else the cache is the one this run warmed (the numba kernels compiled)."""
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="tfree-cold-index-") as empty:
            env = {**os.environ, **({"TFREE_CACHE": empty} if cold else {})}
            out = subprocess.run([sys.executable, "-c", STARTUP, model or "", dict_path, PROMPT, str(temperature),
                                  search], check=True, capture_output=True, text=True, env=env).stdout.split()
        runs.append((float(out[-2]), float(out[-1])))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


class _Reads:
    """The share of the dictionary the pruned search scored one by one, over the rankers made while counting
    (decode/search.py's Ranker.read: rows it gave up on, scored in full, count as every word)."""

    def __init__(self):
        from tfree_codec.decode import search  # noqa: PLC0415

        self.made, init = [], search.Ranker.__init__

        def counted(rk, *a, **kw):
            init(rk, *a, **kw)
            self.made.append(rk)
        search.Ranker.__init__ = counted

    def take(self) -> tuple[float, float]:
        """(words scored / W summed, rows) since the last take."""
        got = [rk.read for rk in self.made]
        self.made.clear()
        return sum(r[1] + r[2] for r in got), sum(r[0] + r[2] for r in got)


def dictionary_report(args) -> None:
    """Words/s with the bundled dictionary and bigger ones, pruned and full, round-robin; start-up (module doc)."""
    from common_dict import DEFAULT_PATHS, dictionary, dictionary_path  # noqa: PLC0415

    from tfree_codec.generate.vocab import Words  # noqa: PLC0415

    lm = LanguageModel.load(args.tfree, "cpu")
    models, paths, specs = {f"own {len(lm.vocab):,}": lm}, {f"own {len(lm.vocab):,}": ""}, {}
    for spec in args.dicts:
        n, _, names = spec.partition(":")
        corpora = [f"/tmp/{c}.txt" for c in names.split(",")] if names else DEFAULT_PATHS
        d = dictionary(int(n), corpora)
        name = f"{len(d):,} ({names or 'all corpora'})"
        models[name] = LanguageModel(lm.model, lm.codec, Words(d, lm.vocabulary.calibration), lm.path)
        paths[name], specs[spec] = dictionary_path(int(n), corpora), name
    searches = ("full", "pruned")
    for m in models.values():
        for search in searches:
            m.generate(PROMPT, max_new_tokens=8, seed=0, stop_at_eot=False, search=search)  # warm-up, index built
    runs, texts, reads = {}, {}, _Reads()
    for r in range(args.repeats):
        for name, m in models.items():
            for setting, kw in SETTINGS.items():
                for search in searches:
                    reads.take()
                    res = one(m, args.new, r, True, search=search, **kw)
                    runs.setdefault((name, setting, search), []).append(res["items_s"])
                    got = reads.take()
                    if search == "pruned":
                        acc = runs.setdefault((name, setting, "read"), [0.0, 0.0])
                        acc[0], acc[1] = acc[0] + got[0], acc[1] + got[1]
                    if setting == "greedy" and r == 0:
                        texts[name, search] = "".join(p.text for p in m.stream(
                            PROMPT, max_new_tokens=args.new, stop_at_eot=False, search=search, temperature=0))
    med = {k: statistics.median(v) for k, v in runs.items() if k[2] != "read"}
    own = next(iter(models))
    print(f"\n{args.new} new words after a {len(PROMPT)}-character prompt, one torch thread; median of {args.repeats} "
          "round-robin runs; 'read': the share of the dictionary the pruned search scored one by one (positions it "
          "gave up on, scored in full, count as all of it)\n")
    print("| dictionary | decoding | full words/s | pruned words/s | pruned / own dictionary's pruned | pruned / own "
          "dictionary's full | read | greedy text identical |\n|---|---|---|---|---|---|---|---|")
    for name in models:
        for setting in SETTINGS:
            f, p = med[name, setting, "full"], med[name, setting, "pruned"]
            same = texts[name, "full"] == texts[name, "pruned"] if setting == "greedy" else ""
            words, rows = runs[name, setting, "read"]
            print(f"| {name} | {setting} | {f:.1f} | {p:.1f} | {p / med[own, setting, 'pruned']:.2f}x | "
                  f"{p / med[own, setting, 'full']:.2f}x | {words / rows if rows else float('nan'):.2%} | {same} |")
    print("\n| dictionary | decoding | search | index cache | dictionary file load (s) | first word after model and "
          "dictionary are loaded (s) |\n|---|---|---|---|---|---|")
    for name in [own, *(specs[x] for x in args.startup)] if args.startup else models:
        for setting, kw in SETTINGS.items():
            for search in searches:
                load, t = startup(args.tfree, paths[name], kw["temperature"], search, args.repeats)
                print(f"| {name} | {setting} | {search} | warm | {load:.2f} | {t:.2f} |", flush=True)
        if paths[name]:
            load, t = startup(args.tfree, paths[name], 0.0, "pruned", args.repeats, cold=True)
            print(f"| {name} | greedy | pruned | empty (index built) | {load:.2f} | {t:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tfree", default=None, help="T-FREE checkpoint or run directory (default: the bundled model)")
    ap.add_argument("--bpe", default=None, help="the same-body BPE baseline's checkpoint or run directory")
    ap.add_argument("--new", type=int, default=256, help="new words (tokens) per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (as tfree generate; 0: torch's default)")
    ap.add_argument("--shapes", default="", help="presets to time with random weights too, e.g. small")
    ap.add_argument("--profile", action="store_true", help="where a cached word's time goes (see the module doc)")
    ap.add_argument("--draft", action="store_true", help="self-speculative generation against plain (module doc)")
    ap.add_argument("--dicts", nargs="+", help="generation against dictionary size (module doc), e.g. 92000:english_prose,mono_de")
    ap.add_argument("--startup", nargs="+", help="with --dicts: time the start-up of these of them only (and the "
                    "model's own dictionary; default: all)")
    args = ap.parse_args()

    import torch  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    import numba  # noqa: PLC0415
    import numpy  # noqa: PLC0415

    from tfree_codec import __version__ as tfree_version  # noqa: PLC0415

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), numba {numba.__version__}, numpy {numpy.__version__}, tfree_codec {tfree_version}, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    if args.draft:
        draft_report(args.tfree, args.new, args.repeats)
        return
    if args.dicts:
        dictionary_report(args)
        return
    models = {"tfree": LanguageModel.load(args.tfree, "cpu")}
    if args.bpe:
        models["bpe"] = LanguageModel.load(args.bpe, "cpu")
    for kind, lm in models.items():
        p = lm.model.num_params()
        print(f"{kind}: {lm.path} | {p['total'] / 1e6:.2f}M parameters (body {p['body'] / 1e6:.2f}M, head "
              f"{p['head'] / 1e6:.2f}M) | {lm.vocabulary.describe()} | context {lm.model.config.seq_len}")
    results = measure(models, args.new, args.repeats)
    for preset in filter(None, args.shapes.split(",")):
        from tfree_codec.model.transformer import Model, ModelConfig  # noqa: PLC0415

        torch.manual_seed(0)
        cfg = ModelConfig.from_preset(preset)
        lm = models["tfree"]
        rand = LanguageModel(Model(cfg).eval(), lm.codec, lm.vocabulary, f"random {preset}")
        print(f"tfree {preset} (random weights): {rand.model.num_params()['total'] / 1e6:.2f}M parameters, "
              f"{cfg.n_layer}x{cfg.n_embd}, context {cfg.seq_len}")
        shaped = {f"tfree {preset} (random)": rand}
        if "bpe" in models:  # the same shape with the baseline's softmax head
            b = models["bpe"]
            bcfg = ModelConfig.from_preset(preset, mode="bpe", vocab_size=b.model.config.vocab_size)
            shaped[f"bpe {preset} (random)"] = LanguageModel(Model(bcfg).eval(), b.codec, b.vocabulary, f"random {preset}")
        for kind, r in measure(shaped, args.new, args.repeats).items():
            results[kind] = {k: r[k] for k in ("greedy", UNCACHED)}

    unit = {k: "tokens" if k.startswith("bpe") else "words" for k in results}
    print(f"\n{args.new} new items after a {len(PROMPT)}-character prompt; median of {args.repeats} round-robin runs\n")
    print("| model | decoding | items/s | bytes/item | bytes of text/s |")
    print("|---|---|---|---|---|")
    for kind, res in results.items():
        for name, r in res.items():
            print(f"| {kind} | {name} | {r['items_s']:.1f} {unit[kind]}/s | {r['bytes_per_item']:.2f} | {r['bytes_s']:,.0f} |")
    print()
    for kind, res in results.items():
        x = res["greedy"]["items_s"] / res[UNCACHED]["items_s"]
        print(f"{kind}: KV cache speed-up (greedy, {args.new} new): {x:.1f}x  (gate for T-FREE: >= 5x)")
    if "bpe" in results:
        for name in SETTINGS:
            x = results["tfree"][name]["bytes_s"] / results["bpe"][name]["bytes_s"]
            print(f"bytes of text per second, tfree / same-body BPE, {name}: {x:.2f}x  (gate: >= 1.2x)")
    if args.profile:
        profile(models["tfree"], args.new)


if __name__ == "__main__":
    main()
