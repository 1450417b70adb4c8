"""Continue a prompt with the bundled T-FREE model (4 layers x 256, trained on Jane Austen), word by word.

    python examples/03_generate.py "It is a truth universally acknowledged"
"""
import sys

from tfree_codec.generate import LanguageModel

lm = LanguageModel.load()  # or a run directory / checkpoint from `tfree train`
prompt = sys.argv[1] if len(sys.argv) > 1 else "It is a truth universally acknowledged"
print(prompt, end="")
for piece in lm.stream(prompt, max_new_tokens=40, seed=0, temperature=0.8, top_p=0.95):
    print(piece.text, end="", flush=True)
print()
