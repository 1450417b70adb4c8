import os

from hypothesis import HealthCheck, settings

# TFREE_MAX_EXAMPLES=2000 pytest  -> a deeper property search (as tiktoken's TIKTOKEN_MAX_EXAMPLES)
settings.register_profile("tfree", max_examples=int(os.environ.get("TFREE_MAX_EXAMPLES", "200")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tfree")
