"""Codec speed and fertility against tiktoken (cl100k_base) and an HF `tokenizers` byte-level BPE, same run, same text.

    python bench/encode.py                      # every corpus in ../shared/data
    python bench/encode.py --corpora english_prose --repeat 5

Each corpus is cut into documents of about --doc-kb KB at line ends; every tool encodes the same documents and the
results are dropped as they come (a streaming encoder's view). "word ids" is ``Lexicon.add`` (text -> word ids,
the path ``tfree encode`` stores; a fresh lexicon each pass). Times are the best of --repeat passes. Also checked:
lossless splitting of every whole file, and the longest word against the configured limit.
"""
from __future__ import annotations

import argparse
import lzma
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfree_codec import MARKERS, Codec  # noqa: E402

DATA = os.environ.get("TFREE_DATA", os.path.join(ROOT, "..", "shared", "data"))  # ../shared beside the clone


def load(name: str) -> str:
    with lzma.open(os.path.join(DATA, f"{name}.txt.xz"), "rt", encoding="utf-8", newline="") as f:
        return f.read()


def documents(text: str, size: int) -> list[str]:
    docs, i = [], 0
    while i < len(text):
        j = text.find("\n", i + size)
        j = len(text) if j < 0 else j + 1
        docs.append(text[i:j])
        i = j
    return docs


def best_time(fn, docs, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(docs)
        best = min(best, time.perf_counter() - t0)
    return best


def tiktoken_encoding():
    cache = os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(ROOT, "bench", ".cache", "tiktoken"))
    if not os.path.isdir(cache) or not os.listdir(cache):
        subprocess.run(["bash", os.path.join(ROOT, "..", "shared", "tools", "tiktoken_offline.sh"), cache], check=True)
    import tiktoken
    return tiktoken.get_encoding("cl100k_base")


def train_bpe(text: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(documents(text, 1 << 16), trainer)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", nargs="*", default=["english_prose", "mono_de", "mono_es", "mono_fr", "mono_ja", "mono_ru", "mono_zh"])
    ap.add_argument("--doc-kb", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    codec = Codec()
    enc = tiktoken_encoding()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"codec: {codec}")
    print(f"documents of ~{args.doc_kb} KB, best of {args.repeat}; MB/s of UTF-8 input; threads = {args.threads}\n")
    rows = []
    english_words_per_byte = None
    for name in args.corpora:
        text = load(name)
        nbytes = len(text.encode())
        docs = documents(text, args.doc_kb << 10)
        codec.encode_batch(docs[:4], num_threads=1)  # warm: compiled kernels and the word cache
        words = codec.split(text)
        lossless = codec.join(words) == text
        longest = max(len(w) for w in words if w not in MARKERS)
        ws = len(text.split())
        n_words = len(words)
        n_text_words = sum(1 for w in words if w not in MARKERS)
        if name == "english_prose":
            english_words_per_byte = n_words / nbytes
        bpe = train_bpe(text, 32000)
        n_tik = sum(len(t) for t in enc.encode_ordinary_batch(docs))
        n_bpe = sum(len(e.ids) for e in bpe.encode_batch(docs))

        t_tf1 = best_time(lambda d: [codec.encode(x) for x in d], docs, args.repeat)
        t_ids = best_time(lambda d: codec.lexicon().add(d), docs, args.repeat)  # text -> word ids, fresh lexicon
        t_tfn = best_time(lambda d: codec.encode_batch(d, num_threads=args.threads), docs, args.repeat)
        t_tk1 = best_time(lambda d: [enc.encode_ordinary(x) for x in d], docs, args.repeat)
        t_tkn = best_time(lambda d: enc.encode_ordinary_batch(d, num_threads=args.threads), docs, args.repeat)
        t_hf1 = best_time(lambda d: [bpe.encode(x) for x in d], docs, args.repeat)
        mb = nbytes / 1e6
        r = dict(name=name, mb=mb, lossless=lossless, longest=longest,
                 tf1=mb / t_tf1, ids=mb / t_ids, tfn=mb / t_tfn, tk1=mb / t_tk1, tkn=mb / t_tkn, hf1=mb / t_hf1,
                 fert=n_words / ws, fert_text=n_text_words / ws, tik_fert=n_tik / ws, bpe_fert=n_bpe / ws,
                 bpw=nbytes / n_words, wpb_vs_en=(n_words / nbytes) / english_words_per_byte if english_words_per_byte else float("nan"))
        rows.append(r)
        print(f"{name}: {mb:.1f} MB, lossless={lossless}, longest word {longest} chars | tfree {r['tf1']:.1f} MB/s "
              f"(x{r['tf1'] / r['tk1']:.2f} tiktoken, x{r['tf1'] / r['hf1']:.2f} HF BPE), {args.threads} threads "
              f"{r['tfn']:.1f} MB/s (x{r['tfn'] / r['tf1']:.2f} one thread, x{r['tfn'] / r['tkn']:.2f} tiktoken's) | word ids "
              f"{r['ids']:.1f} MB/s (x{r['ids'] / r['tk1']:.2f} tiktoken)", flush=True)

    print("\n## Speed (MB/s; ratios measured in this run)\n")
    print(f"| corpus | MB | tfree 1 thread | tiktoken cl100k 1 thread | HF BPE-32k 1 thread | tfree / tiktoken | tfree / HF | "
          f"tfree {args.threads} threads | / tfree 1 thread | tiktoken {args.threads} threads | word ids 1 thread | / tiktoken |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['mb']:.1f} | {r['tf1']:.1f} | {r['tk1']:.1f} | {r['hf1']:.1f} | {r['tf1'] / r['tk1']:.2f}x | "
              f"{r['tf1'] / r['hf1']:.2f}x | {r['tfn']:.1f} | {r['tfn'] / r['tf1']:.2f}x | {r['tkn']:.1f} | {r['ids']:.1f} | "
              f"{r['ids'] / r['tk1']:.2f}x |")
    print("\n## Words (per whitespace-separated word) and bytes per word\n")
    print("| corpus | tfree words | of which non-marker | tiktoken cl100k tokens | HF BPE-32k tokens (own corpus) | "
          "bytes per tfree word | words/byte vs English | longest word | lossless |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['fert']:.3f} | {r['fert_text']:.3f} | {r['tik_fert']:.3f} | {r['bpe_fert']:.3f} | "
              f"{r['bpw']:.2f} | {r['wpb_vs_en']:.2f} | {r['longest']} | {r['lossless']} |")


if __name__ == "__main__":
    main()
