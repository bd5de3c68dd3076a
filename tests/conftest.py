"""Suite-wide settings: one intra-op thread, and checkpoint limits the tiny configs fit.

The test machines are small and shared; the tests use tiny nets for which extra threads
only spin. One thread also keeps CPU results reproducible from run to run.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.tiny import TEST_LIMITS

torch.set_num_threads(1)
for _name, _value in TEST_LIMITS.items():  # read by every Settings() and passed to servers
    os.environ.setdefault(_name, _value)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Module-level call above covers import-time work; this re-asserts it for the session
    # (a test module that changes the count is expected to restore it).
    torch.set_num_threads(1)
    yield
