"""Types shared by the data modules."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message tells the user what to fix."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset."""

    name: str
    channels: int  # 1 or 3
    num_classes: int | None  # None: unlabeled
    native_size: int | None  # None: sizes vary, or generated at any size
    class_names: tuple[str, ...] | None = None
    pairing: str | None = None  # None: images; 'paired' / 'unpaired': see gan_core.data.pairs


@dataclass(eq=False)  # eq would compare tensors elementwise
class ImageTensorDataset:
    """A whole dataset in memory: uint8 images (N, C, H, W) and optional int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    info: DatasetInfo

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            shape = tuple(self.images.shape)
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {shape}")
        if self.labels is not None and tuple(self.labels.shape) != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},)")

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str) -> ImageTensorDataset:
        """The same dataset on `device`."""
        labels = None if self.labels is None else self.labels.to(device)
        return ImageTensorDataset(self.images.to(device), labels, self.info)
