"""Translator exports: ONNX and TorchScript files of each direction of a trained checkpoint
match the translator at any batch size, describe themselves, refuse inputs of the wrong
shape; export_checkpoint picks the kind, and exports a noise checkpoint as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

import gan_core
from gan_core import export
from gan_core.checkpoint import load_generator
from gan_core.config import TrainConfig
from gan_core.data import load_dataset
from gan_core.data.pairs import load_pairs
from gan_core.export import TORCHSCRIPT_META_FILE, export_checkpoint, export_onnx
from gan_core.training import train
from gan_core.translation.inference import load_translator, translate
from tests.gan_core.test_translation_training import cfg, make_unpaired_folder
from tests.tiny import tiny

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
]

ORT_ERRORS = (Fail, InvalidArgument, ValueError)
CASES = [("paired", "a2b"), ("unpaired", "a2b"), ("unpaired", "b2a")]
IDS = ["paired", "unpaired-a2b", "unpaired-b2a"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A paired run with EMA (grey -> colour U-Net) and an unpaired one (colour <-> grey)."""
    edges = load_pairs("shapes-edges", image_size=32, max_items=32)
    paired = train(cfg("paired", ema_decay=0.5), tmp_path_factory.mktemp("paired"), dataset=edges)
    root = make_unpaired_folder(tmp_path_factory.mktemp("domains"))
    domains = load_pairs(f"pairs:{root}", image_size=32, pairing="unpaired")
    unpaired = train(cfg("unpaired"), tmp_path_factory.mktemp("unpaired"), dataset=domains)
    return {"paired": paired.checkpoint, "unpaired": unpaired.checkpoint}


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory) -> dict[tuple[str, str], tuple[Path, Path]]:
    """(kind, direction) -> (its .onnx file, its TorchScript file)."""
    out = {}
    for kind, direction in CASES:
        d = tmp_path_factory.mktemp(f"{kind}-{direction}")
        meta = {"checkpoint_id": f"ck_{kind}"}
        files = [
            export_checkpoint(checkpoints[kind], d / name, fmt, direction=direction, metadata=meta)
            for name, fmt in (("t.onnx", "onnx"), ("t.pt", "torchscript"))
        ]
        assert all(f.size_bytes == f.path.stat().st_size for f in files)
        out[kind, direction] = (files[0].path, files[1].path)
    return out


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # the rejected runs below would each log an error line
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _images(T: torch.nn.Module, n: int, seed: int) -> torch.Tensor:
    """n inputs in [-1, 1] of the translator's shape, with the pixel steps of real images."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, T.in_channels, 32, 32), generator=g, dtype=torch.uint8)
    return pixels.float() / 127.5 - 1.0


@pytest.mark.parametrize(("kind", "direction"), CASES, ids=IDS)
def test_onnx_matches_the_translator_at_two_batch_sizes(checkpoints, exported, kind, direction):
    onnx_path, _ = exported[kind, direction]
    onnx.checker.check_model(onnx.load(onnx_path), full_check=True)
    T = load_translator(checkpoints[kind], direction)
    sess = _session(onnx_path)
    for n in (1, 5):  # neither is the batch of 2 the export was made with
        x = _images(T, n, seed=n)
        got = sess.run(["translated"], {"images": x.numpy()})[0]
        with torch.no_grad():
            want = T(x).numpy()
        assert got.shape == (n, T.out_channels, 32, 32) and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-4
        # as translate() turns it into pixels: the same, but for a float hair at a .5
        pixels = translate(T, ((x + 1) * 127.5).round().to(torch.uint8)).numpy()
        assert np.abs(((got + 1) * 127.5).round() - pixels).max() <= 1


@pytest.mark.parametrize(("kind", "direction"), CASES, ids=IDS)
def test_torchscript_matches_the_translator(checkpoints, exported, kind, direction):
    _, ts_path = exported[kind, direction]
    T = load_translator(checkpoints[kind], direction)
    loaded = torch.jit.load(str(ts_path))
    for n in (1, 5):
        x = _images(T, n, seed=n)
        with torch.no_grad():
            assert (loaded(x) - T(x)).abs().max().item() < 1e-4


@pytest.mark.parametrize(("kind", "direction"), CASES, ids=IDS)
def test_both_files_describe_the_translator(checkpoints, exported, kind, direction):
    onnx_path, ts_path = exported[kind, direction]
    T = load_translator(checkpoints[kind], direction)
    model = onnx.load(onnx_path)
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    extra = {TORCHSCRIPT_META_FILE: ""}
    torch.jit.load(str(ts_path), _extra_files=extra)
    ts_meta = json.loads(extra[TORCHSCRIPT_META_FILE])
    assert meta["format"] == export.TRANSLATOR_ONNX_FORMAT
    assert ts_meta["format"] == export.TRANSLATOR_TORCHSCRIPT_FORMAT
    for m in (meta, ts_meta):
        assert (m["kind"], m["direction"]) == (kind, direction)
        assert m["input_shape"] == [T.in_channels, 32, 32]
        assert m["output_shape"] == [T.out_channels, 32, 32]
        assert m["input_range"] == m["output_range"] == [-1.0, 1.0]
        assert m["checkpoint_step"] == 4
        assert m["checkpoint_id"] == f"ck_{kind}"
        assert m["ganforge_version"] == gan_core.__version__
    sess = _session(onnx_path)
    assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [
        ("images", "tensor(float)", ["batch", T.in_channels, 32, 32])
    ]
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [
        ("translated", ["batch", T.out_channels, 32, 32])
    ]
    assert model.opset_import[0].version >= 17


def test_inputs_of_the_wrong_shape_are_refused(exported):
    onnx_path, ts_path = exported["unpaired", "a2b"]  # colour -> grey
    sess = _session(onnx_path)
    for shape in [(1, 1, 32, 32), (1, 3, 64, 64), (3, 32, 32)]:
        with pytest.raises(ORT_ERRORS):
            sess.run(None, {"images": np.zeros(shape, np.float32)})
    with pytest.raises(RuntimeError):
        torch.jit.load(str(ts_path))(torch.zeros(1, 1, 32, 32))


def test_ema_choice_and_refusals(checkpoints, exported, tmp_path):
    paired = checkpoints["paired"]
    raw = export_checkpoint(paired, tmp_path / "raw.onnx", "onnx", ema=False)
    x = _images(load_translator(paired), 2, seed=0)
    with torch.no_grad():
        want_raw = load_translator(paired, ema=False)(x).numpy()
        want_ema = load_translator(paired)(x).numpy()
    assert np.abs(want_raw - want_ema).max() > 1e-3  # the two weights really differ
    got_raw = _session(raw.path).run(None, {"images": x.numpy()})[0]
    got_ema = _session(exported["paired", "a2b"][0]).run(None, {"images": x.numpy()})[0]
    assert np.abs(got_raw - want_raw).max() < 1e-4
    assert np.abs(got_ema - want_ema).max() < 1e-4  # the default is the averaged one
    with pytest.raises(ValueError, match="direction: a paired model translates a2b"):
        export_checkpoint(paired, tmp_path / "x.onnx", "onnx", direction="b2a")
    with pytest.raises(ValueError, match="format"):
        export_checkpoint(paired, tmp_path / "x.bin", "tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.onnx"]


def test_a_noise_checkpoint_exports_as_before(tmp_path):
    run = train(
        TrainConfig(**tiny(steps=2, checkpoint_every=2, device="cpu")),
        tmp_path / "run",
        dataset=load_dataset("shapes", image_size=16, max_items=32),
    )
    via_checkpoint = export_checkpoint(run.checkpoint, tmp_path / "a.onnx", "onnx")
    direct = export_onnx(load_generator(run.checkpoint), tmp_path / "b.onnx")
    assert via_checkpoint.sha256 == direct.sha256  # the same bytes as the generator API's
    meta = {p.key: json.loads(p.value) for p in onnx.load(direct.path).metadata_props}
    assert meta["format"] == export.ONNX_FORMAT and "direction" not in meta
    with pytest.raises(ValueError, match="direction: this checkpoint holds a noise"):
        export_checkpoint(run.checkpoint, tmp_path / "c.onnx", "onnx", direction="a2b")
