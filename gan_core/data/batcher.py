"""Shuffled, resumable training batches from an in-memory dataset."""

from __future__ import annotations

import torch

from gan_core.data._base import DatasetError, ImageTensorDataset


class Batcher:
    """Yields training batches from an in-memory uint8 tensor without a DataLoader."""

    def __init__(
        self,
        dataset: ImageTensorDataset,
        batch_size: int,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        shard: slice | None = None,
    ) -> None:
        if not 1 <= batch_size <= len(dataset):
            raise DatasetError(
                f"batch_size: {batch_size} must be between 1 and the dataset size {len(dataset)}"
            )
        self.device = torch.device(device)
        self.dataset = dataset.to(self.device)  # our datasets fit; one copy beats per-batch ones
        self.batch_size = batch_size
        # data parallel: every rank draws the same global batch and keeps its part of it, so
        # the order (and the state saved) is the same on every rank and for any number of them
        self.shard = shard
        self._gen = torch.Generator().manual_seed(seed)  # CPU: the same order on any device
        self._set_perm(torch.randperm(len(dataset), generator=self._gen))
        self._pos = 0
        self._served = 0

    def _set_perm(self, perm: torch.Tensor) -> None:
        self._perm = perm  # on the CPU: drawn there, saved from there
        # One copy per epoch: slicing a device-side copy costs no host-device sync per batch.
        self._perm_device = perm.to(self.device)

    def reshuffle(self, seed: int) -> None:
        """A new data order from here on, drawn from ``seed`` (a rolled-back run's retry)."""
        self._gen.manual_seed(seed)
        self._set_perm(torch.randperm(len(self._perm), generator=self._gen))
        self._pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A full batch (or this rank's part of it): x float32 in [-1, 1] (N, C, H, W) on the
        device, y int64 or None."""
        if self._pos + self.batch_size > len(self._perm):
            # Drop the tail: every batch is full and every epoch is a fresh permutation.
            self._set_perm(torch.randperm(len(self._perm), generator=self._gen))
            self._pos = 0
        idx = self._perm_device[self._pos : self._pos + self.batch_size]
        if self.shard is not None:
            idx = idx[self.shard]
        self._pos += self.batch_size
        self._served += self.batch_size
        x = self.dataset.images[idx].float().div_(127.5).sub_(1.0)
        labels = self.dataset.labels
        return x, None if labels is None else labels[idx]

    @property
    def epoch(self) -> float:
        """Images served so far, in dataset lengths."""
        return self._served / len(self.dataset)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, because it is saved with safetensors."""
        return {
            "generator": self._gen.get_state().clone(),
            "permutation": self._perm.clone(),
            "position": torch.tensor(self._pos, dtype=torch.int64),
            "served": torch.tensor(self._served, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a state_dict(); next() then continues exactly as the original would have."""
        perm = state["permutation"].to("cpu", torch.int64)
        if tuple(perm.shape) != (len(self.dataset),):
            raise ValueError(
                f"batcher state is for {perm.numel()} images, the dataset has {len(self.dataset)}"
            )
        self._gen.set_state(state["generator"].to("cpu", torch.uint8).contiguous())
        self._set_perm(perm.clone())
        self._pos = int(state["position"])
        self._served = int(state["served"])
