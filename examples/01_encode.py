"""Text -> words -> trigram activation patterns, and back: the codec in ten lines.

    python examples/01_encode.py "Any text, in any language: 日本語も。"
"""
import sys

from tfree_codec import Codec

codec = Codec()  # v = 8192 rows, m = 10 activations per trigram; no training corpus needed
text = sys.argv[1] if len(sys.argv) > 1 else "Hello, world!  Grüße aus Köln, 3.14 €."
enc = codec.encode(text)
for i, word in enumerate(enc.words):
    start, end = enc.offsets[i]
    print(f"{word!r:>16} chars {start:>3}-{end:<3} rows {enc.patterns(i)[:6].tolist()}... ({len(enc.patterns(i))} active)")
assert codec.join(enc.words) == text  # lossless, for every string
print(f"{len(enc)} words, {len(enc.indices)} active rows, codec {codec.fingerprint()}")
