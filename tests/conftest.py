import json
import os
import random

import pytest
from hypothesis import HealthCheck, settings

# TFREE_MAX_EXAMPLES=2000 pytest  -> a deeper property search (as tiktoken's TIKTOKEN_MAX_EXAMPLES)
settings.register_profile("tfree", max_examples=int(os.environ.get("TFREE_MAX_EXAMPLES", "200")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tfree")


@pytest.fixture(scope="session")
def make_tiny_shards(tmp_path_factory):
    """make(seed) -> a shard directory of 40 short documents over a 15-word vocabulary (v=1024, m=4): enough for
    a few training steps of a tiny model."""
    from tfree_codec import CodecConfig
    from tfree_codec.shards.writer import encode_to_shards

    def make(seed: int) -> str:
        d = tmp_path_factory.mktemp("data")
        rng = random.Random(seed)
        words = "the a cat dog sat ran on under mat log big small red and then".split()
        with open(d / "docs.jsonl", "w") as f:
            for _ in range(40):
                f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(40)) + "."}) + "\n")
        encode_to_shards([str(d / "docs.jsonl")], str(d / "shards"), CodecConfig(vocab_size=1024, num_activations=4),
                         num_proc=1, progress=False)
        return str(d / "shards")
    return make


@pytest.fixture(scope="module")
def one_thread():
    """As the CLI generates: one torch thread (tiny matrix-vector products; see docs/generate.md)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
