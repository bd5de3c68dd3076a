"""Response bodies of /v1/datasets: uploads and built-ins, with the domains of pairs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas import UtcDateTime
from app.core.models import Dataset
from gan_core.data import DatasetInfo
from gan_core.data.pairs import PAIR_BUILTINS, val_count


class DatasetDomain(BaseModel):
    """One domain (A or B) of a dataset of pairs or of two domains."""

    num_images: int | None = Field(None, description="images in the domain (None: generated)")
    channels: int
    image_size: int | None = Field(
        None, description="side of the first image's centre square (None: generated at any size)"
    )
    val_images: int | None = Field(None, description="of them held out for validation")


class DatasetPublic(BaseModel):
    id: str
    name: str
    kind: str = Field(description="npz | image-folder | paired | unpaired, or builtin")
    builtin: bool
    available: bool
    pairing: Literal["paired", "unpaired"] | None = Field(
        None, description="paired (A → B pairs) or unpaired (two domains); None: images"
    )
    where: str | None = None
    num_images: int | None = Field(
        None, description="images; pairs when paired; images of A and B together when unpaired"
    )
    channels: int | None = Field(None, description="of the images; of domain B for pairs")
    image_size: int | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    domains: dict[str, DatasetDomain] | None = Field(None, description="pairs: A and B")
    val_size: int | None = Field(
        None, description="held out for validation: pairs, or images of A and B together"
    )
    size_bytes: int | None = None
    created_at: UtcDateTime | None = None

    @classmethod
    def of(cls, ds: Dataset) -> DatasetPublic:
        pairing = ds.kind if ds.kind in ("paired", "unpaired") else None
        return cls(
            id=ds.id,
            name=ds.name,
            kind=ds.kind,
            builtin=False,
            available=True,
            pairing=pairing,
            num_images=ds.num_images,
            channels=ds.channels,
            image_size=ds.image_size,
            num_classes=ds.num_classes,
            class_names=ds.class_names,
            domains=ds.domains,
            val_size=ds.val_size,
            size_bytes=ds.size_bytes,
            created_at=ds.created_at,
        )

    @classmethod
    def of_builtin(cls, info: DatasetInfo, available: bool, where: str) -> DatasetPublic:
        pair = PAIR_BUILTINS.get(info.name)
        domains, val_size = None, None
        if pair is not None:
            val = val_count(pair.size)
            domains = {
                key: DatasetDomain(num_images=pair.size, channels=c, val_images=val)
                for key, c in (("A", pair.channels_a), ("B", pair.channels_b))
            }
            val_size = val if pair.pairing == "paired" else 2 * val
        return cls(
            id=info.name,
            name=info.name,
            kind="builtin",
            builtin=True,
            available=available,
            pairing=info.pairing,
            where=where,
            num_images=pair.size if pair else None,
            channels=info.channels,
            image_size=info.native_size,
            num_classes=info.num_classes,
            class_names=list(info.class_names or []) or None,
            domains=domains,
            val_size=val_size,
        )


class DatasetsPublic(BaseModel):
    items: list[DatasetPublic]
