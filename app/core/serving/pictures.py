"""The pictures of a training run: the losses chart and the checkpoint timeline (PNG and GIF).

Pure functions from plain records to image bytes; the same inputs give the same bytes, also
across processes, so the API can cache and ETag them. The chart uses matplotlib's
object-oriented API on an Agg canvas (a new figure per call, no pyplot state), so renders may
run in several threads at once.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from gan_core.sampling import to_uint8_grid

MAX_TIMELINE_ROWS = 64
MAX_TIMELINE_IMAGES = 32
MAX_SIDE = 4096  # px, each side of a timeline PNG or GIF frame
CHART_WIDTH = (200, 2000)
CHART_HEIGHT = (150, 1500)
FRAME_MS = (50, 5000)
GAP = 2  # px between images, as in samples.png

_DPI = 100  # figsize = px / _DPI; whole-pixel sizes come out exact at this DPI
# matplotlib's own copy of DejaVu Sans, by file: a system font of the same name cannot stand in.
_FONT_FILE = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
_LABEL_PAD = 4


@dataclass(frozen=True)
class TrainPoint:
    """The losses at one generator step (a progress row)."""

    step: int
    d_loss: float
    g_loss: float
    augment_p: float | None = None  # the augmentation probability, where the run augments


@dataclass(frozen=True)
class ScorePoint:
    """One checkpoint's score, and whether it is the job's best."""

    step: int
    fd: float | None  # Fréchet distance of the checkpoint, lower is better; None if not scored
    best: bool = False


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors has no single truth value
class TimelineRow:
    """One checkpoint's images of the fixed timeline seeds."""

    step: int
    images: torch.Tensor  # (N, C, H, W) in [-1, 1]


def _check_int(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # No text chunks or timestamps and a fixed compression: the bytes depend on pixels alone.
    img.save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def losses_png(
    train: Sequence[TrainPoint],
    scores: Sequence[ScorePoint],
    *,
    width: int,
    height: int,
    title: str | None = None,
) -> bytes:
    """D/G losses over steps and FD per checkpoint (best marked) as a width x height PNG; a
    run that reports an augmentation probability gets it in a strip below, on [0, 1]."""
    _check_int("width", width, *CHART_WIDTH)
    _check_int("height", height, *CHART_HEIGHT)
    # Text shrinks with small charts so the axes keep most of the area.
    size = 6.5 + 2.5 * min(1.0, (min(width, 2 * height) - 200) / 400)

    def font(scale: float = 1.0) -> FontProperties:
        return FontProperties(fname=_FONT_FILE, size=size * scale)

    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    fig.set_layout_engine("constrained", h_pad=0.03, w_pad=0.03)
    canvas = FigureCanvasAgg(fig)
    augment = [(p.step, p.augment_p) for p in train if _finite(p.augment_p)]
    p_ax: Axes | None = None
    if augment:
        ax, p_ax = fig.subplots(2, 1, sharex=True, height_ratios=(4, 1))
    else:
        ax = fig.add_subplot()
    handles: list[Line2D] = []
    # Non-finite values are dropped: one diverged step must not blank or flatten the chart.
    for name, color, pts in (
        ("D loss", "tab:blue", [(p.step, p.d_loss) for p in train if _finite(p.d_loss)]),
        ("G loss", "tab:orange", [(p.step, p.g_loss) for p in train if _finite(p.g_loss)]),
    ):
        if pts:
            handles += ax.plot(*zip(*pts, strict=True), color=color, linewidth=1.0, label=name)
    scored = [(s.step, s.fd) for s in scores if _finite(s.fd)]
    best = [s for s in scores if s.best]
    for s in best:
        ax.axvline(s.step, color="goldenrod", linestyle="--", linewidth=1.0, zorder=1)
    if scored:
        fd_ax = ax.twinx()
        handles += fd_ax.plot(
            *zip(*scored, strict=True),
            "o-",
            color="tab:green",
            markersize=3.5,
            linewidth=1.0,
            label="FD",
        )
        for s in best:
            if s.fd is not None and _finite(s.fd):
                label = (
                    f"best (FD {s.fd:.3g})"
                    if width < 500
                    else f"best (step {s.step}, FD {s.fd:.3g})"
                )
                handles += fd_ax.plot(
                    [s.step],
                    [s.fd],
                    "*",
                    markersize=size * 1.6,
                    color="gold",
                    markeredgecolor="black",
                    zorder=5,
                    label=label,
                )
        fd_ax.set_ylabel("FD (lower is better)", fontproperties=font())
        fd_ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        _style_ticks(fd_ax, size)
    if not handles and not best:
        ax.text(
            0.5,
            0.5,
            "no data yet",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.4",
            fontproperties=font(1.4),
        )
    if p_ax is not None:
        handles += p_ax.plot(
            *zip(*augment, strict=True), color="tab:purple", linewidth=1.0, label="augment p"
        )
        p_ax.set_ylim(-0.03, 1.03)
        p_ax.set_yticks([0.0, 0.5, 1.0])
        p_ax.set_ylabel("p", fontproperties=font())
        p_ax.grid(True, color="0.85", linewidth=0.6)
        _style_ticks(p_ax, size)
    (p_ax or ax).set_xlabel("generator step", fontproperties=font())
    ax.set_ylabel("loss", fontproperties=font())
    ax.xaxis.set_major_locator(MaxNLocator(nbins=max(2, width // 110), integer=True))
    ax.ticklabel_format(style="plain", useOffset=False)  # no offset text (it takes rc fonts)
    ax.grid(True, color="0.85", linewidth=0.6)
    _style_ticks(ax, size)
    if title:
        ax.set_title(title, fontproperties=font(1.15))
    if handles:
        ncols = min(len(handles), 2 if width < 500 else 4)
        fig.legend(
            handles=handles, loc="outside upper center", prop=font(), ncols=ncols, frameon=False
        )
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return _png(Image.fromarray(np.ascontiguousarray(rgba[:, :, :3])))


def _style_ticks(ax: Axes, size: float) -> None:
    # Tick labels are made at draw time from a family name; "DejaVu Sans" resolves to
    # matplotlib's bundled file first (the font manager lists its own fonts before the system's).
    ax.tick_params(labelsize=size * 0.9, labelfontfamily="DejaVu Sans")


@cache
def _label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's built-in bitmap font: one fixed size and no FreeType, so the same pixels on every
    # build (load_default() in Pillow >= 10.1 may hand back a scalable FreeType font instead).
    loader = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont = loader()
    return font


def _label(step: int) -> str:
    return f"step {step}"


def _label_box(rows: Sequence[TimelineRow]) -> tuple[int, int]:
    """(width, height) of the widest/tallest step label."""
    boxes = [_label_font().getbbox(_label(r.step)) for r in rows]
    return int(max(b[2] for b in boxes)), int(max(b[3] for b in boxes))


def _checked(rows: Sequence[TimelineRow]) -> tuple[list[TimelineRow], tuple[int, int, int, int]]:
    """Rows in step order (oldest first) and their common (N, C, H, W); ValueError otherwise."""
    if not 1 <= len(rows) <= MAX_TIMELINE_ROWS:
        raise ValueError(
            f"rows: need 1..{MAX_TIMELINE_ROWS} rows (MAX_TIMELINE_ROWS), got {len(rows)}"
        )
    shape = tuple(rows[0].images.shape) if isinstance(rows[0].images, torch.Tensor) else ()
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise ValueError(f"rows: images must be (N, C, H, W) tensors with C 1 or 3, got {shape}")
    if not 1 <= shape[0] <= MAX_TIMELINE_IMAGES:
        raise ValueError(
            f"rows: need 1..{MAX_TIMELINE_IMAGES} images per row (MAX_TIMELINE_IMAGES), got {shape[0]}"
        )
    for r in rows:
        if not isinstance(r.images, torch.Tensor) or tuple(r.images.shape) != shape:
            raise ValueError(f"rows: every row must have images of shape {shape} (step {r.step})")
    ordered = sorted(rows, key=lambda r: r.step)
    if len({r.step for r in ordered}) != len(ordered):
        raise ValueError("rows: steps must be distinct")
    n, c, h, w = shape
    return ordered, (n, c, h, w)


def _check_side(what: str, width: int, height: int) -> None:
    if max(width, height) > MAX_SIDE:
        raise ValueError(
            f"rows: the {what} would be {width}x{height} px, over MAX_SIDE={MAX_SIDE} on a side;"
            " pass fewer rows or images"
        )


def _uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, 3) uint8, through the same conversion as samples.png."""
    n, _, h, w = images.shape
    # NaN has no defined uint8 value (it differs by platform); finite inputs are left as they are.
    x = torch.nan_to_num(images.detach().to("cpu", torch.float32), nan=0.0, posinf=1, neginf=-1)
    strip = to_uint8_grid(x, nrow=n, padding=0).numpy()  # (H, N*W, 3): the images side by side
    return strip.reshape(h, n, w, 3).transpose(1, 0, 2, 3)


def _tile(images: np.ndarray, ncols: int) -> np.ndarray:
    """(N, H, W, 3) -> one grid with a GAP px black border and gaps, like make_grid."""
    n, h, w, _ = images.shape
    nrows = -(-n // ncols)
    grid = np.zeros((nrows * (h + GAP) + GAP, ncols * (w + GAP) + GAP, 3), np.uint8)
    for i in range(n):
        y, x = GAP + (i // ncols) * (h + GAP), GAP + (i % ncols) * (w + GAP)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def timeline_png(rows: Sequence[TimelineRow], *, nrow_label: bool = True) -> bytes:
    """One row of images per checkpoint, oldest on top, each labelled with its step on the left."""
    ordered, (n, c, h, w) = _checked(rows)
    text_w, text_h = _label_box(ordered)
    label_w = text_w + 2 * _LABEL_PAD if nrow_label else 0
    grid_w, grid_h = n * (w + GAP) + GAP, len(ordered) * (h + GAP) + GAP
    _check_side("timeline", label_w + grid_w, grid_h)
    canvas = np.zeros((grid_h, label_w + grid_w, 3), np.uint8)
    canvas[:, label_w:] = _tile(np.concatenate([_uint8(r.images) for r in ordered]), ncols=n)
    gray = c == 1  # make_grid repeats one channel three times; keep one, as samples.png does
    img = Image.fromarray(np.ascontiguousarray(canvas[:, :, 0]) if gray else canvas)
    for i, r in enumerate(ordered if nrow_label else []):
        # Each label is drawn in a strip of its row's height, so it never spills into the
        # next row when the images are smaller than the font.
        strip = Image.new(img.mode, (label_w, h), 0)
        ImageDraw.Draw(strip).text(
            (_LABEL_PAD, (h - text_h) // 2), _label(r.step), fill="white", font=_label_font()
        )
        img.paste(strip, (0, GAP + i * (h + GAP)))
    return _png(img)


def _palette(frames: list[np.ndarray]) -> Image.Image:
    """One fixed 256-colour palette for all RGB frames: median cut of their pixels + black, white."""
    pixels = np.concatenate([f.reshape(-1, 3) for f in frames])
    pixels = pixels[:: max(1, len(pixels) >> 20)]  # a fixed stride bounds the work on big GIFs
    cut = Image.fromarray(pixels.reshape(1, -1, 3)).quantize(
        colors=254, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    colors = list(cut.getpalette() or [])[: 254 * 3]
    # Black (gaps, background) and white (labels) are kept exact, not averaged into a box.
    colors += [0] * (254 * 3 - len(colors)) + [0, 0, 0, 255, 255, 255]
    pal = Image.new("P", (1, 1))
    pal.putpalette(colors)
    return pal


def timeline_gif(rows: Sequence[TimelineRow], *, frame_ms: int = 500) -> bytes:
    """An endlessly looping GIF, one frame per checkpoint (oldest first): its images and step."""
    _check_int("frame_ms", frame_ms, *FRAME_MS)
    ordered, (n, c, h, w) = _checked(rows)
    ncols = math.ceil(math.sqrt(n))  # a square-ish grid per frame
    grid_w, grid_h = ncols * (w + GAP) + GAP, -(-n // ncols) * (h + GAP) + GAP
    text_w, text_h = _label_box(ordered)
    caption_h = text_h + 2 * GAP
    frame_w, frame_h = max(grid_w, text_w + 2 * _LABEL_PAD), caption_h + grid_h
    _check_side("GIF frame", frame_w, frame_h)
    x0 = (frame_w - grid_w) // 2
    arrays = []
    for r in ordered:
        frame = np.zeros((frame_h, frame_w, 3), np.uint8)
        frame[caption_h:, x0 : x0 + grid_w] = _tile(_uint8(r.images), ncols)
        img = Image.fromarray(frame)
        ImageDraw.Draw(img).text(
            (_LABEL_PAD, GAP), _label(r.step), fill="white", font=_label_font()
        )
        arrays.append(np.asarray(img))
    if c == 1:
        # Grey frames keep their exact levels through an identity grey palette.
        grey = [v for i in range(256) for v in (i, i, i)]
        frames = [Image.frombytes("P", (frame_w, frame_h), a[:, :, 0].tobytes()) for a in arrays]
        for f in frames:
            f.putpalette(grey)
    else:
        pal = _palette(arrays)
        frames = [
            Image.fromarray(a).quantize(palette=pal, dither=Image.Dither.NONE) for a in arrays
        ]
    buf = io.BytesIO()
    # optimize=False: every frame keeps the one shared palette (no per-frame reordering).
    # GIF stores centiseconds: Pillow truncates frame_ms to a multiple of 10.
    frames[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=frame_ms,
        loop=0,
        optimize=False,
    )
    return buf.getvalue()
