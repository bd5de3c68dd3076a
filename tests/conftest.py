"""Suite-wide settings: one intra-op thread.

The test machines are small and shared; the tests use tiny nets for which extra threads
only spin. One thread also keeps CPU results reproducible from run to run.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Module-level call above covers import-time work; this re-asserts it for the session
    # (a test module that changes the count is expected to restore it).
    torch.set_num_threads(1)
    yield
