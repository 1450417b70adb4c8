"""What evaluation reads from a dictionary: every word's scores as one torch product (for the calibration fit),
and summed log-probabilities under several calibrations through the decoder, whose pruned search reads only the
words that hold mass (at most 1e-6 of it left out; full scoring with ``search="full"``)."""
from __future__ import annotations

import numpy as np

from .decoder import Decoder
from .wordscore import Ranking


class DictionaryLogProbs:
    """``.scores((N, v) logits) -> (N, W)`` (the torch path: every word), and ``.log_probs_sum``."""

    def __init__(self, dictionary, search: str, score: str = "sigmoid_diff"):
        from .torch_decoder import TorchDecoder  # noqa: PLC0415  (imports torch)

        self.dictionary, self.search, self.score = dictionary, search, score
        self.full, self._decoders = TorchDecoder(dictionary, score), {}

    def scores(self, logits):
        return self.full.scores(logits)

    def log_probs_sum(self, logits, target, params) -> np.ndarray:
        """For each (scale a, count-prior weights w) in ``params``: the sum over rows of log softmax(a * s +
        count_prior(w))[target], as calibration.log_softmax_at gives it from the scores. logits (N, v) and
        target (N,) are torch tensors."""
        x, t = logits.float().cpu().numpy(), target.cpu().numpy()
        out = []
        for a, w in params:
            key = (a, tuple(w))
            if key not in self._decoders:
                rank = Ranking(self.score, a, tuple(w) if any(w) else None)
                self._decoders[key] = Decoder(self.dictionary, search=self.search, rank=rank)
            out.append(float(self._decoders[key].log_probs(x, t, 1.0).sum()))
        return np.array(out)
