"""Only some of a procedural dataset, made alone: make_shapes(indices=...) and the held-out pairs
of 'shapes-edges' (held_out_builtin) are exactly what the whole set holds at those places."""

from __future__ import annotations

import pytest
import torch

from gan_core.data import DatasetError
from gan_core.data.pairs import held_out_builtin, load_pairs
from gan_core.data.shapes import make_shapes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_at_indices_are_the_whole_sets_pixels(channels):
    images, labels = make_shapes(300, 16, seed=3, channels=channels)
    picked = [299, 7, 3, 150]  # any order, classes mixed
    some, some_labels = make_shapes(300, 16, seed=3, channels=channels, indices=picked)
    assert some.shape == (4, channels, 16, 16)
    assert torch.equal(some, images[picked]) and torch.equal(some_labels, labels[picked])
    none, _ = make_shapes(300, 16, seed=3, channels=channels, indices=[])
    assert none.shape == (0, channels, 16, 16)


def test_held_out_shapes_edges_are_load_pairs_split():
    whole = load_pairs("shapes-edges", image_size=32)
    a, b = held_out_builtin("shapes-edges", image_size=32)
    assert torch.equal(a, whole.a.split()[1]) and torch.equal(b, whole.b.split()[1])
    first_a, first_b = held_out_builtin("shapes-edges", image_size=32, limit=5)
    assert torch.equal(first_a, a[:5]) and torch.equal(first_b, b[:5])
    with pytest.raises(DatasetError, match="unknown"):
        held_out_builtin("shapes", image_size=32)
