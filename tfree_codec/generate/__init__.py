"""Text from a trained model, and how likely texts are under it: takes a checkpoint (a run directory, a checkpoint
directory, or the bundled model) and a prompt or texts; hands on generated text, streamed word by word
(``LanguageModel.stream``), and bits per byte (``LanguageModel.score``). ``language_model`` is the public face,
``context`` the window a generating model reads (KV cache, Over-Encoding rows), ``speculative`` drafting with the
Over-Decoding head, ``score`` the bits of given texts, ``serve`` an OpenAI-compatible HTTP API over a model
(``tfree serve``). Nothing here imports the trainer (train/)."""
from .language_model import (BUNDLED_MODEL, LanguageModel, Piece, export, find_checkpoint, generate, load,
                             sample_logits, stream, timed, torch_threads)

__all__ = ["BUNDLED_MODEL", "LanguageModel", "Piece", "export", "find_checkpoint", "generate", "load",
           "sample_logits", "stream", "timed", "torch_threads"]
