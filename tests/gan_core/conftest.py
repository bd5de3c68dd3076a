"""Fixtures shared by the engine's training tests."""

from __future__ import annotations

import pytest

from gan_core.data import load_dataset


@pytest.fixture(scope="module")
def shapes16():
    """256 procedural 16px images: enough for a few steps at batch 8, loaded once per module."""
    return load_dataset("shapes", image_size=16, max_items=256)
