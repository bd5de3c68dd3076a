"""Datasets of pairs (pix2pix: A → B) and of two domains (CycleGAN: A ↔ B), as uint8 tensors.

A folder holds ``A/`` and ``B/`` (or CycleGAN's ``trainA/`` and ``trainB/``; ``testA/`` and
``testB/`` are ignored), or ``AB/``: pix2pix's side-by-side images, A on the left half and B
on the right; a half whose red, green and blue are equal everywhere (in every image) has one
channel. With the same file stems in A and B it is *paired* (``a[i]`` ↔ ``b[i]``); with
no stem in common it is *unpaired* (two domains, any sizes); some but not all in common is
refused, naming a file without its partner, unless ``pairing`` says which is meant. Each
domain has its own channels (1 if all its images are grey, else 3). A fixed validation
split is held out: 5% of the pairs (of each domain's images when unpaired), at least 2,
chosen by a seeded permutation of the sorted names, and named in ``val_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gan_core.data._base import DatasetError
from gan_core.data.files import (
    IMAGE_EXTENSIONS,
    decode_image,
    fit_square,
    image_header_size,
    stack_images,
)
from gan_core.data.shapes import make_shapes

PAIRINGS = ("auto", "paired", "unpaired")
DOMAIN_FOLDERS = (("A", "B"), ("trainA", "trainB"))
AB_FOLDER = "AB"
VAL_SHARE = 0.05  # of the pairs (or of each domain's images) held out for validation
MIN_VAL = 2  # held out at least; a domain needs one more image than this to train on
SHAPES_EDGES_SIZE = 4_000  # pairs in the built-in 'shapes-edges'


@dataclass(frozen=True)
class PairInfo:
    """Static facts about a built-in dataset of pairs."""

    name: str
    pairing: str  # paired | unpaired
    channels_a: int
    channels_b: int
    size: int  # pairs (paired) or images per domain


PAIR_BUILTINS = {"shapes-edges": PairInfo("shapes-edges", "paired", 1, 3, SHAPES_EDGES_SIZE)}


@dataclass(eq=False)  # eq would compare tensors elementwise
class Domain:
    """One side of a dataset: uint8 images (N, C, S, S), their file stems, the held-out ones."""

    images: torch.Tensor
    names: tuple[str, ...]  # sorted; images[i] was read from names[i]
    val_names: tuple[str, ...]  # the held-out stems, sorted
    side: int  # the centre-cropped square's side of the first image, before resizing

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def val_mask(self) -> torch.Tensor:
        held = set(self.val_names)
        return torch.tensor([n in held for n in self.names], dtype=torch.bool)

    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(training images, held-out validation images)."""
        mask = self.val_mask
        return self.images[~mask], self.images[mask]

    def __len__(self) -> int:
        return len(self.names)


@dataclass(eq=False)
class PairDataset:
    """Two domains; when paired, a.images[i] and b.images[i] are one pair (same stem)."""

    name: str
    a: Domain
    b: Domain
    paired: bool

    @property
    def pairing(self) -> str:
        return "paired" if self.paired else "unpaired"

    def __len__(self) -> int:
        """Pairs (paired) or images in both domains together (unpaired)."""
        return len(self.a) if self.paired else len(self.a) + len(self.b)


def val_count(n: int) -> int:
    """How many of n pairs (or of a domain's n images) are held out for validation."""
    return max(MIN_VAL, round(VAL_SHARE * n))


def validation_names(names: list[str] | tuple[str, ...], seed: int, where: str) -> tuple[str, ...]:
    """The held-out stems: VAL_SHARE of them (at least MIN_VAL), by a seeded permutation."""
    ordered = sorted(names)
    k = val_count(len(ordered))
    if len(ordered) <= k:
        raise DatasetError(
            f"{where}: {len(ordered)} images; at least {MIN_VAL + 1} are needed "
            f"({MIN_VAL} are held out for validation)"
        )
    perm = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(seed))
    return tuple(sorted(ordered[int(i)] for i in perm[:k]))


# --------------------------------------------------------------------------- folders


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """Image files directly in `folder`, by stem; two files with one stem are refused."""
    found: dict[str, Path] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    for path in files:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in found:
            raise DatasetError(f"{path}: a second image named {path.stem!r} in {folder.name}/")
        found[path.stem] = path
    if not found:
        raise DatasetError(
            f"{folder}: no images (put {'/'.join(IMAGE_EXTENSIONS)} files directly in it)"
        )
    return dict(sorted(found.items()))


def pair_layout(root: Path) -> tuple[str, str] | str | None:
    """The domain folders (A, B), or 'AB', that `root` holds; None if neither."""
    for a, b in DOMAIN_FOLDERS:
        if (root / a).is_dir() or (root / b).is_dir():
            missing = b if (root / a).is_dir() else a
            if not (root / missing).is_dir():
                raise DatasetError(
                    f"{root / missing}: no images (no such folder; {a}/ and {b}/ both need images)"
                )
            return a, b
    return AB_FOLDER if (root / AB_FOLDER).is_dir() else None


def load_pair_folder(
    root: Path, size: int, *, pairing: str = "auto", seed: int = 0, name: str = "pairs"
) -> PairDataset:
    """A folder of A/ + B/ (trainA/ + trainB/) or AB/, each image resized to size×size."""
    if pairing not in PAIRINGS:
        raise DatasetError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    if not root.is_dir():
        raise DatasetError(f"{root} does not exist or is not a directory")
    layout = pair_layout(root)
    if layout is None:
        raise DatasetError(
            f"{root}: no A/ and B/ folders (or trainA/ and trainB/), nor an AB/ folder"
        )
    if isinstance(layout, str):
        if pairing == "unpaired":
            raise DatasetError(f"{root / AB_FOLDER}: side-by-side AB images are always paired")
        return _load_ab(root / AB_FOLDER, size, seed, name)
    a_files, b_files = (_images_by_stem(root / d) for d in layout)
    common = a_files.keys() & b_files.keys()
    paired = pairing == "paired" or (pairing == "auto" and bool(common))
    if paired and not len(common) == len(a_files) == len(b_files):
        lone = next(p for files in (a_files, b_files) for s, p in files.items() if s not in common)
        other = layout[1] if lone.parent.name == layout[0] else layout[0]
        hint = "" if pairing == "paired" else " (for two unpaired domains, use pairing=unpaired)"
        raise DatasetError(f"{lone}: no partner named {lone.stem!r}.* in {other}/{hint}")
    a_arrays, a_side = _read_domain(a_files, size)
    b_arrays, b_side = _read_domain(b_files, size, partners=a_files if paired else None)
    a_val = validation_names(list(a_files), seed, str(root / layout[0]))
    b_val = a_val if paired else validation_names(list(b_files), seed, str(root / layout[1]))
    return PairDataset(
        name,
        Domain(stack_images(a_arrays), tuple(a_files), a_val, a_side),
        Domain(stack_images(b_arrays), tuple(b_files), b_val, b_side),
        paired,
    )


def _read_domain(
    files: dict[str, Path], size: int, partners: dict[str, Path] | None = None
) -> tuple[list, int]:
    """Each image decoded and fitted; a pair's two images must be the same size (headers)."""
    arrays, side = [], 0
    for stem, path in files.items():
        if partners is not None:
            mine, theirs = image_header_size(path), image_header_size(partners[stem])
            if mine and theirs and mine != theirs:
                raise DatasetError(
                    f"{path}: {mine[0]}x{mine[1]} pixels, but its partner {partners[stem]} is "
                    f"{theirs[0]}x{theirs[1]}; the two images of a pair must be the same size"
                )
        im = decode_image(path)
        side = side or min(im.size)
        arrays.append(fit_square(im, size))
    return arrays, side


def _load_ab(folder: Path, size: int, seed: int, name: str) -> PairDataset:
    """pix2pix's format: each image is A (left half) beside B (right half)."""
    files = _images_by_stem(folder)
    a_arrays, b_arrays, side = [], [], 0
    for path in files.values():
        im = decode_image(path)
        w, h = im.size
        if w % 2:
            raise DatasetError(
                f"{path}: {w} pixels wide; an AB image holds A and B side by side, so its "
                "width must be even"
            )
        side = side or min(w // 2, h)
        a_arrays.append(fit_square(im.crop((0, 0, w // 2, h)), size))
        b_arrays.append(fit_square(im.crop((w // 2, 0, w, h)), size))
    names = tuple(files)
    val = validation_names(names, seed, str(folder))
    a = Domain(_gray_if_equal(stack_images(a_arrays)), names, val, side)
    b = Domain(_gray_if_equal(stack_images(b_arrays)), names, val, side)
    return PairDataset(name, a, b, True)


def _gray_if_equal(images: torch.Tensor) -> torch.Tensor:
    """One channel when R, G and B are equal everywhere (an AB image's grey half, e.g. edges)."""
    if images.shape[1] == 3 and bool((images[:, :1] == images[:, 1:]).all()):
        return images[:, :1].contiguous()
    return images


# --------------------------------------------------------------------------- built-ins


def make_shapes_edges(n: int, size: int, seed: int) -> PairDataset:
    """n pairs: the edge map (A, grey: white outlines on black) of a colour 'shapes' image (B)."""
    edges, photos = _shapes_edges(n, size, seed)
    names = tuple(f"{i:05d}" for i in range(n))
    val = validation_names(names, seed, "shapes-edges")
    return PairDataset(
        "shapes-edges", Domain(edges, names, val, size), Domain(photos, names, val, size), True
    )


def _shapes_edges(
    n: int, size: int, seed: int, indices: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge maps, colour images) of the n pairs, or of those at ``indices`` only."""
    photos, _ = make_shapes(n, size, seed, channels=3, indices=indices)
    n = photos.shape[0]
    edges = torch.empty(n, 1, size, size, dtype=torch.uint8)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for i in torch.arange(n).split(1024):  # chunks bound temporary float memory
        gray = (photos[i].float() * luma).sum(1, keepdim=True)
        grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
        mag = grad.pow(2).sum(1, keepdim=True).sqrt()
        peak = mag.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
        edges[i] = (mag / peak * 255).round_().clamp_(0, 255).to(torch.uint8)
    return edges, photos


def held_out_builtin(
    name: str, *, image_size: int, seed: int = 0, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` held-out pairs of a built-in (A, B) in name order: what
    ``load_pairs(name, ...)``'s domains ``split()`` hold out, made without the rest (the
    whole 'shapes-edges' at 256 px takes minutes and GBs)."""
    if name != "shapes-edges":
        raise DatasetError(
            f"unknown built-in dataset of pairs {name!r}: use {sorted(PAIR_BUILTINS)}"
        )
    names = tuple(f"{i:05d}" for i in range(SHAPES_EDGES_SIZE))
    held = validation_names(names, seed, "shapes-edges")[:limit]
    return _shapes_edges(SHAPES_EDGES_SIZE, image_size, seed, [int(s) for s in held])


def load_pairs(
    name: str,
    *,
    image_size: int,
    seed: int = 0,
    pairing: str = "auto",
    max_items: int | None = None,
) -> PairDataset:
    """A built-in of pairs ('shapes-edges') or 'pairs:PATH' (a folder, see the module doc).

    `max_items` keeps the first N pairs of a built-in; a folder is read whole.
    """
    if image_size < 1:
        raise DatasetError(f"image_size must be positive, got {image_size}")
    if name == "shapes-edges":
        n = SHAPES_EDGES_SIZE if max_items is None else min(max_items, SHAPES_EDGES_SIZE)
        return make_shapes_edges(n, image_size, seed)
    if name.startswith("pairs:") and name[len("pairs:") :].strip():
        path = Path(name[len("pairs:") :].strip()).expanduser()
        return load_pair_folder(path, image_size, pairing=pairing, seed=seed, name=name)
    raise DatasetError(
        f"unknown dataset of pairs {name!r}: use one of {sorted(PAIR_BUILTINS)} or 'pairs:PATH'"
    )
