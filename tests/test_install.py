"""What a command that needs an extra says where it is missing: one line naming the extra. (.ci/codec-only checks
a real venv without torch: encode, shards, dict and the codec API.)"""
import subprocess
import sys

import pytest

# Runs the CLI in a fresh interpreter where the named packages cannot be imported, as in an install without them.
WITHOUT = """import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from tfree_cli.main import main
main(sys.argv[2:], prog_name="tfree")
"""


def tfree_without(packages, *args):
    return subprocess.run([sys.executable, "-c", WITHOUT, ",".join(packages), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow  # a tfree subprocess
def test_a_model_command_without_torch_names_the_extra_in_one_line():
    r = tfree_without(["torch"], "generate", "It is")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "Error: tfree generate needs torch, which is not installed: pip install 'tfree-codec[train]'"


def test_a_missing_module_that_is_no_extra_is_a_bug_not_a_hint():
    from tfree_cli.common import needs_extra

    with pytest.raises(ModuleNotFoundError):
        needs_extra(ModuleNotFoundError("No module named 'tfree_codec.nowhere'", name="tfree_codec.nowhere"))
    assert "[train]" in needs_extra(ModuleNotFoundError("No module named 'torch'", name="torch"))
