"""In memory, one thread: text -> word ids (and -> patterns) against tiktoken cl100k's fastest one-thread path.

    python bench/encode.py                                  # every corpus in ../shared/data, first 8 MB of lines
    python bench/encode.py --corpora english_prose /tmp/other.txt --mb 30

Each corpus (a name in ../shared/data or a path) is cut into its non-blank lines (the documents of ``tfree encode
--split lines``), and the sides run alternated in chunks of ~256k characters (bench/alternate.py), best of
--passes: "word ids" is ``Lexicon.add`` (text -> word ids, what ``tfree encode`` stores; a fresh lexicon each
pass), "patterns" is ``Codec.encode_batch(num_threads=1)`` (words, offsets and CSR activation patterns; a fresh
codec each pass), tiktoken is the faster of a loop of ``encode_ordinary`` and ``encode_ordinary_batch(num_threads=1)``
on that corpus; with --hf also an HF ``tokenizers`` byte-level BPE-32k trained on the corpus (``encode_batch``
on one thread, RAYON_NUM_THREADS=1). Gates (issue 23): word ids >= 3x tiktoken on English, >= 1x on every corpus. Also printed: words
per whitespace-separated word, bytes per word, the longest word, and whether splitting is lossless.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alternate import LANGUAGES, alternate, chunks, fastest, lines, load, tiktoken_encoding, tiktoken_paths, versions  # noqa: E402
from tfree_codec import MARKERS, Codec  # noqa: E402


def cut(text: str, mb: float) -> str:
    """The first ``mb`` million characters, ending at a line end."""
    if len(text) <= mb * 1e6:
        return text
    return text[:text.rfind("\n", 0, int(mb * 1e6)) + 1]


def train_bpe(docs: list[str], vocab: int = 32000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(docs, trainer)
    return tok


def patterns_side():
    codec = Codec()
    return lambda part: codec.encode_batch(part, num_threads=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", nargs="+", default=LANGUAGES, help="names in ../shared/data or text files")
    ap.add_argument("--mb", type=float, default=8.0, help="million characters of each corpus (its first lines)")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--english", nargs="*", default=["english_prose"], help="corpora held to the 3x gate")
    ap.add_argument("--hf", action="store_true", help="also an HF tokenizers BPE-32k trained on each corpus")
    args = ap.parse_args()
    if args.hf:
        os.environ["RAYON_NUM_THREADS"] = "1"  # one thread, like the others (set before tokenizers starts its pool)

    enc = tiktoken_encoding()
    Codec().lexicon().add(["Load the kernels first: Grüße, 日本語."])
    Codec().encode_batch(["and the hashing kernels"] * 40, num_threads=1)
    print(versions())
    print(f"lines of the first {args.mb:g}M characters of each corpus; alternated in chunks of ~256k characters, best of "
          f"{args.passes} passes; MB/s of UTF-8 input, one thread\n")
    print("| corpus | MB | lines | tfree word ids | tfree patterns | tiktoken cl100k (fastest path) | word ids / tiktoken | "
          "patterns / tiktoken |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    gates, stats = [], []
    for name in args.corpora:
        text = cut(load(name), args.mb)
        docs = lines(text)
        mb = sum(len(d.encode()) for d in docs) / 1e6
        path, tk = fastest(tiktoken_paths(enc), docs[:20000])
        sides = {"ids": lambda: Codec().lexicon().add, "patterns": patterns_side, "tiktoken": lambda: tk}
        if args.hf:
            bpe = train_bpe(docs)
            sides["hf"] = lambda: bpe.encode_batch
        best = alternate(sides, chunks(docs), args.passes)
        ids, pat, tik = (mb / best[k] for k in ("ids", "patterns", "tiktoken"))
        label = os.path.basename(name)
        hf = f" HF BPE-32k {mb / best['hf']:.1f} MB/s: word ids {best['hf'] / best['ids']:.1f}x it |" if args.hf else ""
        print(f"| {label} | {mb:.1f} | {len(docs):,} | {ids:.1f} | {pat:.1f} | {tik:.1f} ({path}) | **{ids / tik:.2f}x** | "
              f"{pat / tik:.2f}x |{hf}", flush=True)
        need = 3.0 if name in args.english else 1.0
        gates.append((f"{label}: word ids >= {need:g}x tiktoken", ids / tik >= need, f"{ids / tik:.2f}x"))
        codec = Codec()
        words = codec.split(text)
        ws = len(text.split()) or 1
        n_tik = sum(len(t) for t in enc.encode_ordinary_batch(docs[:50000], num_threads=1))
        ws_tik = sum(len(d.split()) for d in docs[:50000]) or 1
        stats.append((label, len(words) / ws, sum(w not in MARKERS for w in words) / ws, n_tik / ws_tik,
                      len(text.encode()) / max(len(words), 1), max((len(w) for w in words if w not in MARKERS), default=0),
                      codec.join(words) == text))
    print("\n| corpus | tfree words per whitespace word | of which non-marker | tiktoken cl100k tokens | bytes per tfree "
          "word | longest word | lossless |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, f, ft, tf, bpw, longest, ok in stats:
        print(f"| {label} | {f:.3f} | {ft:.3f} | {tf:.3f} | {bpw:.2f} | {longest} | {ok} |")
    print("\ngates:")
    for what, ok, figure in gates:
        print(f"  {'met' if ok else 'NOT MET':7} {what}: {figure}")
    print(f"# {versions()}")


if __name__ == "__main__":
    main()
