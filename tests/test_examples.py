"""Every script in examples/ runs as documented (so the examples never rot)."""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
EXPECT = {
    "01_encode.py": "16 words, 379 active rows",
    "02_shards_to_torch.py": "word embeddings: (353, 64)",
    "03_generate.py": "It is a truth universally acknowledged",
    "04_datasets_map.py": "num_rows: 110",
}


def test_every_example_is_listed():
    assert sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")) == sorted(EXPECT)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs(name, tmp_path):
    args = [str(tmp_path)] if name == "02_shards_to_torch.py" else []
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert EXPECT[name] in out.stdout
