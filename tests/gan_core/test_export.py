"""Generator exports: ONNX and TorchScript files that match torch at any batch size, carry
their own metadata, reject bad labels, are written atomically, and the docstring's
numpy + onnxruntime snippet works with torch out of reach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument
from PIL import Image

import gan_core
from gan_core import export
from gan_core.checkpoint import load_generator
from gan_core.config import TrainConfig
from gan_core.data import load_dataset
from gan_core.export import TORCHSCRIPT_META_FILE, export_onnx, export_torchscript
from gan_core.nets import build_generator
from gan_core.sampling import generate, latents
from gan_core.training import train
from tests.tiny import tiny

# TorchScript is deprecated in torch 2.14; loading the file is what is under test here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

ORT_ERRORS = (Fail, InvalidArgument, ValueError)
TINY = tiny()
NAMES = ["mlp", "dcgan", "conditional-dcgan"]


def _settled(G: torch.nn.Module, conditional: bool = False) -> torch.nn.Module:
    """G with BatchNorm running statistics moved away from their (0, 1) init, in eval mode."""
    torch.manual_seed(1)
    G.train()
    with torch.no_grad():
        for _ in range(4):
            y = torch.randint(0, G.num_classes, (32,)) if conditional else None
            G(torch.randn(32, G.latent_dim) * 2 + 0.5, y)
    return G.eval()


def _has_moved_batchnorm(G: torch.nn.Module) -> bool:
    bns = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    return bool(bns) and all(m.running_mean.abs().max() > 1e-3 for m in bns)


@pytest.fixture(scope="module")
def generators(tmp_path_factory) -> dict[str, torch.nn.Module]:
    mlp = _settled(build_generator(TrainConfig(arch="mlp", channels=1, **TINY)))
    dcgan = _settled(build_generator(TrainConfig(channels=3, **TINY)))
    # The conditional one comes from a real (short) run's checkpoint, as the service loads it.
    run_dir = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(**tiny(conditional=True, steps=4, checkpoint_every=4, device="cpu"))
    result = train(cfg, run_dir, dataset=load_dataset("shapes", image_size=16, max_items=64))
    cond = load_generator(result.checkpoint)
    gens = {"mlp": mlp, "dcgan": dcgan, "conditional-dcgan": cond}
    assert all(_has_moved_batchnorm(G) for G in gens.values())
    return gens


@pytest.fixture(scope="module")
def exported(generators, tmp_path_factory) -> dict[str, tuple[torch.nn.Module, Path, Path]]:
    """name -> (generator, its .onnx file, its TorchScript file)."""
    out = {}
    for name, G in generators.items():
        d = tmp_path_factory.mktemp(name)
        onnx_file = export_onnx(G, d / "generator.onnx")
        ts_file = export_torchscript(G, d / "generator.pt")
        assert onnx_file.size_bytes == (d / "generator.onnx").stat().st_size
        out[name] = (G, onnx_file.path, ts_file.path)
    return out


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # the rejected runs below would each log an error line
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _inputs(G: torch.nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    z = latents(n, G.latent_dim, seed)
    y = None if G.num_classes is None else torch.arange(n) % G.num_classes
    return z, y


def _feed(z: torch.Tensor, y: torch.Tensor | None) -> dict[str, np.ndarray]:
    return {"z": z.numpy()} | ({} if y is None else {"labels": y.numpy()})


@pytest.mark.parametrize("name", NAMES)
def test_onnx_matches_torch_at_two_batch_sizes(exported, name):
    G, onnx_path, _ = exported[name]
    onnx.checker.check_model(onnx.load(onnx_path), full_check=True)
    sess = _session(onnx_path)
    for n in (3, 7):  # neither is the batch of 2 the export was made with
        z, y = _inputs(G, n, seed=n)
        got = sess.run(["images"], _feed(z, y))[0]
        want = generate(G, z, y).numpy()
        assert got.shape == (n, *G.image_shape) and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-4
        assert got.min() >= -1.0 and got.max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_torchscript_matches_torch_at_two_batch_sizes(exported, name):
    G, _, ts_path = exported[name]
    loaded = torch.jit.load(str(ts_path))
    for n in (3, 7):
        z, y = _inputs(G, n, seed=n)
        with torch.no_grad():
            got = loaded(z) if y is None else loaded(z, y)
        assert (got - generate(G, z, y)).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_both_files_describe_the_generator(exported, name):
    G, onnx_path, ts_path = exported[name]
    model = onnx.load(onnx_path)
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    extra = {TORCHSCRIPT_META_FILE: ""}
    torch.jit.load(str(ts_path), _extra_files=extra)
    ts_meta = json.loads(extra[TORCHSCRIPT_META_FILE])
    assert meta["format"] == export.ONNX_FORMAT and ts_meta["format"] == export.TORCHSCRIPT_FORMAT
    for m in (meta, ts_meta):
        assert m["latent_dim"] == G.latent_dim
        assert m["num_classes"] == G.num_classes
        assert m["image_shape"] == list(G.image_shape)
        assert m["ganforge_version"] == gan_core.__version__
        assert m.get("checkpoint_step") == getattr(G, "checkpoint_step", None)
    assert name != "conditional-dcgan" or meta["checkpoint_step"] == 4
    assert model.opset_import[0].version >= 17


def test_inputs_are_z_and_labels_only_when_conditional(exported):
    for name in NAMES:
        G, onnx_path, _ = exported[name]
        sess = _session(onnx_path)
        inputs = {i.name: (i.type, i.shape) for i in sess.get_inputs()}
        want = {"z": ("tensor(float)", ["batch", G.latent_dim])}
        if G.num_classes is not None:
            want["labels"] = ("tensor(int64)", ["batch"])
        assert inputs == want, name
        assert [(o.name, o.shape) for o in sess.get_outputs()] == [
            ("images", ["batch", *G.image_shape])
        ]


BAD_LABELS = {
    "missing": None,
    "one label for four latents": [0],  # would broadcast over the batch without the pin
    "three for four": [0, 1, 2],
    "column (N, 1)": [[0], [1], [2], [3]],
    "negative": [0, 1, 2, -1],  # ONNX Gather would read -1 as the last class
    "too large": [0, 1, 2, 5],
}


@pytest.mark.parametrize("labels", BAD_LABELS.values(), ids=BAD_LABELS.keys())
def test_conditional_exports_reject_bad_labels(exported, labels):
    G, onnx_path, ts_path = exported["conditional-dcgan"]
    assert G.num_classes == 5
    z = latents(4, G.latent_dim, seed=0)
    feed = {"z": z.numpy()}
    if labels is not None:
        feed["labels"] = np.array(labels, dtype=np.int64)
    with pytest.raises(ORT_ERRORS):
        _session(onnx_path).run(None, feed)
    loaded = torch.jit.load(str(ts_path))
    with pytest.raises(RuntimeError):
        loaded(z) if labels is None else loaded(z, torch.tensor(labels))


def test_unconditional_exports_take_no_labels(exported):
    G, onnx_path, ts_path = exported["dcgan"]
    z = latents(2, G.latent_dim, seed=0)
    with pytest.raises(ORT_ERRORS):
        _session(onnx_path).run(None, {"z": z.numpy(), "labels": np.zeros(2, np.int64)})
    with pytest.raises(RuntimeError):
        torch.jit.load(str(ts_path))(z, torch.zeros(2, dtype=torch.long))


def test_onnx_bytes_are_deterministic_and_the_generator_is_left_alone(generators, tmp_path):
    G = generators["conditional-dcgan"]
    first = export_onnx(G, tmp_path / "a.onnx")
    G.train()  # the export must not switch the caller's module, and must export eval mode
    try:
        second = export_onnx(G, tmp_path / "b.onnx")
        assert G.training
    finally:
        G.eval()
    assert first.sha256 == second.sha256
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_opset_17_and_extra_metadata(generators, tmp_path):
    G = generators["mlp"]
    path = export_onnx(G, tmp_path / "g.onnx", opset=17, metadata={"checkpoint_id": "ck_1"}).path
    model = onnx.load(path)
    assert model.opset_import[0].version == 17
    assert json.loads({p.key: p.value for p in model.metadata_props}["checkpoint_id"]) == "ck_1"
    z, _ = _inputs(G, 3, seed=0)
    got = _session(path).run(None, {"z": z.numpy()})[0]
    assert np.abs(got - generate(G, z, None).numpy()).max() < 1e-4
    with pytest.raises(ValueError, match="opset"):
        export_onnx(G, tmp_path / "old.onnx", opset=16)
    with pytest.raises(ValueError, match="latent_dim"):
        export_onnx(G, tmp_path / "clash.onnx", metadata={"latent_dim": 3})


def test_writes_are_atomic(generators, tmp_path, monkeypatch):
    G = generators["mlp"]
    target = tmp_path / "generator.onnx"
    target.write_bytes(b"old")
    export_onnx(G, target)  # replaces an existing file
    good = target.read_bytes()
    assert good != b"old" and os.listdir(tmp_path) == ["generator.onnx"]

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(export.os, "replace", crash)
    for fn in (export_onnx, export_torchscript):
        with pytest.raises(OSError, match="disk full"):
            fn(G, target)
        assert target.read_bytes() == good  # the old file is whole, and no temp file is left
        assert os.listdir(tmp_path) == ["generator.onnx"]


def _snippet() -> str:
    """The indented block after the '::' line of gan_core.export's docstring."""
    doc = export.__doc__ or ""
    block = doc.split("Pillow installed::\n", 1)[1].split("\n\n", 1)[0]
    return textwrap.dedent(block)


# Blocks torch and ganforge as if they were not installed, runs the snippet, and proves
# neither was imported along the way.
SNIPPET_RUNNER = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "gan_core", "app"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NotInstalled())
exec(compile(sys.argv[1], "snippet", "exec"))
loaded = [m for m in sys.modules if m.split(".")[0] in ("torch", "gan_core")]
assert not loaded, loaded
print("ok")
"""


@pytest.mark.parametrize("name", ["dcgan", "conditional-dcgan"])  # RGB; grayscale + labels
def test_docstring_snippet_makes_a_png_grid_without_torch(exported, tmp_path, name):
    G, onnx_path, _ = exported[name]
    (tmp_path / "generator.onnx").write_bytes(onnx_path.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-c", SNIPPET_RUNNER, _snippet()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr

    # The same 16 images from torch, tiled 4x4 the way the snippet tiles them.
    z = torch.from_numpy(
        np.random.default_rng(0).standard_normal((16, G.latent_dim), dtype=np.float32)
    )
    y = None if G.num_classes is None else torch.arange(16) % G.num_classes
    x = ((generate(G, z, y).numpy() + 1) * 127.5).round()
    c, h, w = G.image_shape
    want = x.reshape(4, 4, c, h, w).transpose(0, 3, 1, 4, 2).reshape(4 * h, 4 * w, c)
    with Image.open(tmp_path / "grid.png") as img:
        assert img.mode == ("L" if c == 1 else "RGB")
        got = np.asarray(img, dtype=np.float64).reshape(4 * h, 4 * w, c)
    assert np.abs(got - want).max() <= 1  # a float hair can round the other way
