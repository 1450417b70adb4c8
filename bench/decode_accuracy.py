"""Decoding accuracy with v = 8192, m = 10 and the 100k-word dictionary of bench/decode.py:

1. every word decoded (greedy) from its own exact pattern (saturated logits: +10 on its rows, -10 elsewhere):
   how often it comes out first, and the collisions (words with identical patterns) that make the rest;
2. the same under noise: a fraction of the pattern's rows switched off, as many random other rows switched on,
   or both;
3. spelling: words held out of the dictionary (ranked after the first 100k, 3-15 characters) recovered from
   their exact pattern by the beam search, and with 5% of the rows switched off and as many others switched on.

    python bench/decode_accuracy.py [--noise-words 5000] [--spell-words 1000]
"""
from __future__ import annotations

import argparse
import os
import time
import unicodedata

import numpy as np
from common_dict import add_args, load_dictionary, machine

from tfree_codec.decode.decoder import Decoder
from tfree_codec.decode.dictionary import count_words
from tfree_codec.decode.spell import Speller

V = 8192
BATCH = 256


def logits_of(patterns, rng=None, drop=0.0, add=0.0) -> np.ndarray:
    """Saturated logits; with rng, drop/add switch off / on that fraction (of the pattern size) of rows."""
    x = np.full((len(patterns), V), -10, np.float32)
    for j, p in enumerate(patterns):
        rows = p
        if rng is not None and drop > 0:
            k = int(round(drop * len(p)))
            rows = np.delete(p, rng.choice(len(p), k, replace=False)) if k else p
        x[j, rows] = 10
        if rng is not None and add > 0:
            k = int(round(add * len(p)))
            x[j, rng.choice(V, k, replace=False)] = 10
    return x


def group_of(d) -> np.ndarray:
    """A collision-group id per word: words with identical patterns share it."""
    first = {}
    return np.array([first.setdefault(d.pattern(i).tobytes(), i) for i in range(len(d))])


def script(word: str) -> str:
    name = unicodedata.name(word[0], "?")
    for s in ("CJK", "HIRAGANA", "KATAKANA", "CYRILLIC", "LATIN"):
        if s in name:
            return {"HIRAGANA": "kana", "KATAKANA": "kana"}.get(s, s.lower())
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap)
    ap.add_argument("--noise-words", type=int, default=5000)
    ap.add_argument("--spell-words", type=int, default=1000)
    ap.add_argument("--beam", type=int, default=8)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    d = load_dictionary(args)
    dec = Decoder(d, num_threads=os.cpu_count() or 1)
    group = group_of(d)
    rng = np.random.default_rng(0)

    # 1. exact patterns, every word
    t0 = time.perf_counter()
    got = np.concatenate([dec.decode(logits_of([d.pattern(i) for i in range(a, min(len(d), a + BATCH))]),
                                     temperature=0).ids for a in range(0, len(d), BATCH)])
    ids = np.arange(len(d))
    first, same = (got == ids).mean(), (group[got] == group).mean()
    groups = [g for g in d.collisions()]
    print(f"\n1. exact pattern, all {len(d):,} words ({time.perf_counter() - t0:.0f} s): first {first:.4%}; "
          f"first up to collisions {same:.4%}")
    print(f"   collisions: {len(groups)} groups, {sum(len(g) - 1 for g in groups)} words share another's pattern")
    for g in groups[:8]:
        print("     " + " = ".join(repr(w) for w in g))
    wrong = [(d.words[i], d.words[got[i]]) for i in np.nonzero(group[got] != group)[0][:8]]
    if wrong:
        print(f"   other misses: {wrong}")

    # 2. noise
    sample = rng.choice(np.arange(16, len(d)), min(args.noise_words, len(d) - 16), replace=False)
    pats = [d.pattern(i) for i in sample]
    print(f"\n2. noisy patterns, {len(sample):,} random words: decoded first (up to collisions)")
    print(f"   {'rows flipped':<14}{'off':>8}{'on':>8}{'off+on':>8}")
    for f in (0.0, 0.01, 0.02, 0.05, 0.10, 0.20, 0.30):
        accs = []
        for drop, add in ((f, 0.0), (0.0, f), (f, f)):
            ok = []
            for a in range(0, len(sample), BATCH):
                x = logits_of(pats[a:a + BATCH], rng, drop, add)
                ok.append(group[dec.decode(x, temperature=0).ids] == group[sample[a:a + BATCH]])
            accs.append(np.concatenate(ok).mean())
        print(f"   {f:<14.0%}" + "".join(f"{a:>8.2%}" for a in accs), flush=True)

    # 3. spelling held-out words
    t0 = time.perf_counter()
    counts = count_words(d.codec, [__import__("pathlib").Path(p) for p in args.corpora])
    held = [w for w, _ in counts.most_common() if w not in d and 3 <= len(w) <= 15]
    print(f"\n3. spelling: {len(held):,} held-out words of 3-15 characters "
          f"(counted in {time.perf_counter() - t0:.0f} s)")
    pick = [held[i] for i in rng.choice(len(held), min(args.spell_words, len(held)), replace=False)]
    speller = Speller(d.codec, d.words)
    indptr, indices = d.codec.encode_words(pick)
    pats = [indices[indptr[i]:indptr[i + 1]] for i in range(len(pick))]
    for name, drop, add in (("exact", 0.0, 0.0), ("5% off + 5% on", 0.05, 0.05)):
        t0 = time.perf_counter()
        res = [speller.spell(logits_of([p], rng, drop, add), beam=args.beam)[0] for p in pats]
        ok = np.array([r is not None and r[0] == w for r, w in zip(res, pick)])
        got_pats = d.codec.encode_words([r[0] if r else "\x00" for r in res])
        twin = np.array([np.array_equal(got_pats[1][got_pats[0][i]:got_pats[0][i + 1]], pats[i])
                         for i in range(len(pick))])  # spelled a word with the very same pattern
        by = {}
        for w, o in zip(pick, ok):
            by.setdefault(script(w), []).append(o)
        detail = ", ".join(f"{s} {np.mean(v):.1%} ({len(v)})" for s, v in sorted(by.items()))
        print(f"   {name:<16} {ok.mean():.2%} of {len(pick)}, {twin.mean():.2%} up to words with the same pattern "
              f"({(time.perf_counter() - t0) / len(pick) * 1e3:.0f} ms per word, beam {args.beam}): {detail}")
        if name == "exact":
            misses = [(w, r and r[0], "=" if t else "") for w, r, o, t in zip(pick, res, ok, twin) if not o]
            print(f"   misses (same pattern: =): {misses[:12]}")


if __name__ == "__main__":
    main()
