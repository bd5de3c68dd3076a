"""The pictures of a training run (app.core.serving.pictures): pure functions, no server."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from app.core.serving import pictures
from app.core.serving.pictures import (
    GAP,
    ScorePoint,
    TimelineRow,
    TrainPoint,
    losses_png,
    timeline_gif,
    timeline_png,
)
from gan_core.sampling import to_uint8_grid

ROOT = Path(__file__).resolve().parents[2]

# The inputs are built by the same code here and in the subprocesses (the script imports this).
FIXTURES = """
import math, torch
from app.core.serving.pictures import ScorePoint, TimelineRow, TrainPoint

def train(n=200):
    return [TrainPoint(10 * i, 1.0 + 0.3 * math.sin(i / 9), 0.7 + 0.2 * math.cos(i / 7))
            for i in range(n)]

def scores(best=1500):
    return [ScorePoint(s, 300.0 / (1 + s / 400), s == best) for s in range(250, 2001, 250)]

def rows(r=4, n=6, c=3, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [TimelineRow(500 * (k + 1), torch.rand(n, c, size, size, generator=g) * 2 - 1)
            for k in range(r)]
"""
fixtures: dict = {}
exec(FIXTURES, fixtures)
train, scores, rows = fixtures["train"], fixtures["scores"], fixtures["rows"]


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _label_width(rs: list[TimelineRow], n: int, size: int) -> int:
    return _open(timeline_png(rs)).width - (n * (size + GAP) + GAP)


# -- losses.png


@pytest.mark.parametrize("size", [(200, 150), (800, 400), (1234, 567), (2000, 1500)])
def test_losses_png_has_the_requested_size(size):
    img = _open(losses_png(train(), scores(), width=size[0], height=size[1], title="job 1"))
    assert img.format == "PNG" and img.mode == "RGB" and img.size == size
    assert not {"Software", "Creation Time"} & set(img.info)  # nothing that varies by version/time


def test_losses_png_is_deterministic_and_in_threads():
    args = dict(width=640, height=360, title="t")
    first = losses_png(train(), scores(), **args)
    assert losses_png(train(), scores(), **args) == first
    inputs = [(train(50 + 30 * k), scores(250 * (k + 1))) for k in range(6)]
    serial = [losses_png(t, s, **args) for t, s in inputs]
    assert len(set(serial)) == len(serial)
    with ThreadPoolExecutor(6) as pool:  # several renders at once must not share state
        threaded = list(pool.map(lambda ts: losses_png(*ts, **args), inputs * 2))
    assert threaded == serial * 2


def test_empty_job_gives_a_chart_with_a_note():
    img = _open(losses_png([], [], width=800, height=400))
    assert img.size == (800, 400)
    gray = np.asarray(img.convert("L"))
    # The plot area is white with light grid lines; only the "no data yet" note is dark there.
    assert (gray[170:230, 300:500] < 150).any()
    assert not (gray[60:120, 100:250] < 150).any()
    assert losses_png([], [], width=800, height=400) != losses_png(
        train(), [], width=800, height=400
    )


def test_non_finite_values_are_skipped():
    clean = train()
    bad = list(clean)
    for i, v in ((20, math.nan), (90, math.inf), (150, -math.inf)):
        bad.insert(i, TrainPoint(clean[i].step + 5, v, v))
    fds = scores() + [ScorePoint(2250, math.nan, False), ScorePoint(2500, math.inf, False)]
    kw = dict(width=800, height=400)
    assert losses_png(bad, fds, **kw) == losses_png(clean, scores(), **kw)
    # One loss non-finite, the other kept: it renders, and differs from dropping both.
    half = [TrainPoint(p.step, math.nan if p.step == 500 else p.d_loss, p.g_loss) for p in clean]
    assert _open(losses_png(half, scores(), **kw)).size == (800, 400)
    assert losses_png(half, scores(), **kw) != losses_png(clean, scores(), **kw)
    only_bad = [TrainPoint(1, math.nan, math.inf)]
    assert losses_png(only_bad, [], **kw) == losses_png([], [], **kw)


def test_best_checkpoint_changes_the_picture():
    kw = dict(width=800, height=400)
    a, b = losses_png(train(), scores(1500), **kw), losses_png(train(), scores(750), **kw)
    none = losses_png(train(), scores(best=-1), **kw)
    assert len({a, b, none}) == 3
    unscored_best = [ScorePoint(1000, None, True)]
    assert losses_png(train(), unscored_best, **kw) != losses_png(train(), [], **kw)


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        (dict(width=199, height=400), "width"),
        (dict(width=2001, height=400), "width"),
        (dict(width=800.0, height=400), "width"),
        (dict(width=800, height=149), "height"),
        (dict(width=800, height=1501), "height"),
    ],
)
def test_chart_bounds(kw, name):
    with pytest.raises(ValueError, match=name):
        losses_png([], [], **kw)


# -- timeline.png


@pytest.mark.parametrize(("c", "mode"), [(1, "L"), (3, "RGB")])
def test_timeline_png_layout_and_pixels(c, mode):
    n, size = 6, 12
    rs = rows(r=4, n=n, c=c, size=size)
    img = _open(timeline_png(list(reversed(rs))))  # any order in; oldest on top out
    label_w = _label_width(rs, n, size)
    assert img.mode == mode
    assert label_w > 20  # room for "step 2000"
    assert img.size == (label_w + n * (size + GAP) + GAP, 4 * (size + GAP) + GAP)
    px = np.asarray(img)
    for r, row in enumerate(rs):
        top = GAP + r * (size + GAP)
        label = px[top : top + size, :label_w]
        assert (label == 255).any()  # the step is written in the label column
        for i in range(n):
            left = label_w + GAP + i * (size + GAP)
            want = to_uint8_grid(row.images[i : i + 1], nrow=1, padding=0).numpy()
            got = px[top : top + size, left : left + size]
            np.testing.assert_array_equal(got, want[:, :, 0] if c == 1 else want)
        assert (px[top - GAP : top, label_w:] == 0).all()  # the gap above the row is black
    bare = _open(timeline_png(rs, nrow_label=False))
    assert bare.size == (n * (size + GAP) + GAP, img.height)
    np.testing.assert_array_equal(np.asarray(bare), px[:, label_w:])


def test_timeline_labels_differ_by_step_and_stay_in_their_row():
    rs = rows(r=3, n=2, c=1, size=6)  # images smaller than the font
    img = _open(timeline_png(rs))
    assert img.height == 3 * (6 + GAP) + GAP
    px = np.asarray(img)
    label_w = _label_width(rs, 2, 6)
    for r in range(3):
        top = GAP + r * (6 + GAP)
        assert (px[top - GAP : top, :label_w] == 0).all()  # clipped, not spilled into the gap
    moved = [TimelineRow(r.step + 1, r.images) for r in rs]
    assert timeline_png(moved) != timeline_png(rs)


def test_timeline_png_is_deterministic():
    assert timeline_png(rows()) == timeline_png(rows())
    assert timeline_png(rows()) != timeline_png(rows(seed=1))


# -- timeline.gif


def _frames(data: bytes) -> tuple[Image.Image, list[Image.Image]]:
    gif = _open(data)
    return gif, [f.copy() for f in ImageSequence.Iterator(gif)]


def test_timeline_gif_frames_loop_and_duration():
    rs = rows(r=5, n=6, c=3, size=10)
    data = timeline_gif(rs, frame_ms=250)
    gif, frames = _frames(data)
    assert gif.format == "GIF" and len(frames) == 5
    assert gif.info["loop"] == 0
    assert all(f.info["duration"] == 250 for f in frames)
    assert len({f.size for f in frames}) == 1
    assert len({f.convert("RGB").tobytes() for f in frames}) == 5
    for f in frames:  # noise images use all the colours; black and white must stay exact
        px = np.asarray(f.convert("RGB"))
        caption = px[: px.shape[0] - (2 * (10 + GAP) + GAP)]
        assert (caption == 255).all(axis=2).any() and (caption[-GAP:] == 0).all()
    assert timeline_gif(rs, frame_ms=250) == data
    assert timeline_gif(rs, frame_ms=500) != data
    _, one = _frames(timeline_gif(rs[:1]))
    assert len(one) == 1 and _open(timeline_gif(rs[:1])).info["loop"] == 0


def _grid_of(frame: Image.Image, row: TimelineRow, mode: str) -> None:
    """The frame's image grid (below the caption, centred) equals the row's pixels exactly."""
    n, _, h, w = row.images.shape
    ncols = math.ceil(math.sqrt(n))
    want = to_uint8_grid(row.images, nrow=ncols, padding=GAP).numpy()
    px = np.asarray(frame.convert(mode))
    x0 = (frame.width - want.shape[1]) // 2
    got = px[frame.height - want.shape[0] :, x0 : x0 + want.shape[1]]
    np.testing.assert_array_equal(got, want[:, :, 0] if mode == "L" else want)


def test_timeline_gif_keeps_grey_levels_exactly():
    rs = rows(r=3, n=5, c=1, size=8)
    _, frames = _frames(timeline_gif(rs))
    for frame, row in zip(frames, rs, strict=True):
        _grid_of(frame, row, "L")


def test_timeline_gif_colours_are_exact_when_few():
    # Up to 254 colours plus black and white fit the palette, so they come back exactly.
    g = torch.Generator().manual_seed(3)
    levels = torch.tensor([-1.0, 0.0, 1.0])
    rs = [TimelineRow(s, levels[torch.randint(0, 3, (4, 3, 9, 9), generator=g)]) for s in (1, 2, 3)]
    _, frames = _frames(timeline_gif(rs))
    for frame, row in zip(frames, rs, strict=True):
        _grid_of(frame, row, "RGB")


# -- shared bounds


@pytest.mark.parametrize("render", [timeline_png, timeline_gif])
def test_timeline_bounds(render):
    ok = rows(r=2, n=2, size=4)
    bad = {
        "no rows": [],
        "too many rows": [TimelineRow(i, ok[0].images) for i in range(65)],
        "too many images": [TimelineRow(1, torch.zeros(33, 3, 4, 4))],
        "no images": [TimelineRow(1, torch.zeros(0, 3, 4, 4))],
        "two channels": [TimelineRow(1, torch.zeros(2, 2, 4, 4))],
        "3-d": [TimelineRow(1, torch.zeros(3, 4, 4))],
        "shapes differ": [ok[0], TimelineRow(9, torch.zeros(2, 3, 5, 4))],
        "same step twice": [ok[0], TimelineRow(ok[0].step, ok[1].images)],
        # expand: the shape of big images without their memory (bounds are checked first)
        "too wide": [TimelineRow(1, torch.zeros(1, 1, 1, 1).expand(32, 1, 700, 700))],
        "too tall": [TimelineRow(i, torch.zeros(1, 1, 1, 1).expand(1, 1, 4096, 8)) for i in (1, 2)],
    }
    for case, rs in bad.items():
        with pytest.raises(ValueError, match="rows"):
            render(rs)
            pytest.fail(case)
    assert pictures.MAX_TIMELINE_ROWS == 64 and pictures.MAX_TIMELINE_IMAGES == 32
    assert pictures.MAX_SIDE == 4096
    render([TimelineRow(i, ok[0].images) for i in range(64)])  # the limit itself is fine


@pytest.mark.parametrize("frame_ms", [49, 5001, 100.0])
def test_gif_frame_ms_bounds(frame_ms):
    with pytest.raises(ValueError, match="frame_ms"):
        timeline_gif(rows(r=1), frame_ms=frame_ms)


# -- across processes


SCRIPT = (
    FIXTURES
    + """
import hashlib, json, sys
from app.core.serving.pictures import losses_png, timeline_gif, timeline_png
out = {
    "losses": losses_png(train(), scores(), width=640, height=360, title="t"),
    "timeline": timeline_png(rows()),
    "gif": timeline_gif(rows(), frame_ms=300),
}
out = {k: hashlib.sha256(v).hexdigest() for k, v in out.items()}
out["imports"] = sorted(m for m in ("fastapi", "celery", "matplotlib.pyplot") if m in sys.modules)
print(json.dumps(out))
"""
)


def test_same_bytes_in_other_processes_without_a_display():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            cwd=ROOT,
            env={**env, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2")
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    here = {
        "losses": _sha(losses_png(train(), scores(), width=640, height=360, title="t")),
        "timeline": _sha(timeline_png(rows())),
        "gif": _sha(timeline_gif(rows(), frame_ms=300)),
        "imports": [],  # app.core imports neither FastAPI, Celery nor pyplot
    }
    assert results[0] == results[1] == here
