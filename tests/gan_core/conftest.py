"""Fixtures shared by the engine's training tests."""

from __future__ import annotations

import pytest
import torch

from gan_core.data import load_dataset


@pytest.fixture(scope="module")
def shapes16():
    """256 procedural 16px images: enough for a few steps at batch 8, loaded once per module."""
    return load_dataset("shapes", image_size=16, max_items=256)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny convolutions (they gain nothing from threads, and
    on a busy 2-core box the threads spin); a module asks with pytestmark."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
