import os
import random

import pytest
import torch

from bcq.sim.vectors import random_codebooks  # noqa: F401  (shared with the testbenches)
from bcq.sw.formats.codebooks import default_codebooks


def pytest_report_header(config):
    return f"torch {torch.__version__}; seeds printed per test; replay with SEED=<n>"


@pytest.fixture
def seed(request):
    """A per-test seed, printed so that a failure can be replayed with SEED=<n> pytest ..."""
    s = int(os.environ.get("SEED", random.SystemRandom().randrange(1 << 31)))
    print(f"\nseed={s}  replay: SEED={s} pytest '{request.node.nodeid}'")
    return s


@pytest.fixture(scope="session")
def default_cb():
    return default_codebooks()
