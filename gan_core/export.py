"""Portable generator files: ONNX (for onnxruntime, no torch needed) and TorchScript.

Both take a generator as ``gan_core.checkpoint.load_generator`` returns it and write one
self-describing file atomically (temp file in the same directory, fsync, rename). The
exported graph is ``clamp(G(z, labels), -1, 1)`` in eval mode, as ``sampling.generate``
computes it:

- inputs: ``z`` float32 (batch, latent_dim), standard normal; for a class-conditional
  generator also ``labels`` int64 (batch,), class ids in 0..num_classes-1
- output: ``images`` float32 (batch, C, H, W) in [-1, 1]; batch is dynamic

The ONNX file's ``metadata_props`` (the TorchScript file's ``ganforge.json`` extra file)
hold JSON values: format, latent_dim, num_classes (null when unconditional), image_shape
[C, H, W], output_range, checkpoint_step (when known), ganforge_version, torch_version.
A label count other than the batch, a label outside 0..num_classes-1 or a (batch, 1)
label tensor fails at run time in both formats (the message comes from the runtime).

A 4x4 PNG grid from generator.onnx with only numpy, onnxruntime and Pillow installed::

    import json, numpy as np, onnxruntime as ort, PIL.Image
    sess = ort.InferenceSession("generator.onnx")
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    z = np.random.default_rng(0).standard_normal((16, meta["latent_dim"]), dtype=np.float32)
    k = meta["num_classes"]  # None for an unconditional generator
    x = sess.run(None, {"z": z} | ({"labels": np.arange(16) % k} if k else {}))[0]
    x = ((x + 1) * 127.5).round().astype(np.uint8)  # (16, C, H, W), [-1, 1] -> 0..255
    n, c, h, w = x.shape
    grid = x.reshape(4, 4, c, h, w).transpose(0, 3, 1, 4, 2).reshape(4 * h, 4 * w, c)
    PIL.Image.fromarray(grid.squeeze()).save("grid.png")

The TorchScript file: ``torch.jit.load(path)(z)`` or ``torch.jit.load(path)(z, labels)``
for a conditional generator (CPU tensors; ``map_location`` moves it). It is a trace, as
``torch.jit.script`` cannot compile ``nets.Generator``; torch 2.14 marks TorchScript
deprecated (FutureWarning on trace, save and load) but still runs it.

The ONNX bytes are deterministic: the same generator gives the same file, in any process.
The TorchScript bytes are not: torch numbers ("mangles") the classes of every trace after
the first in a process, so only a fresh process's first export repeats byte for byte.
Both functions return the file's sha256, which is what a cache should key an ETag on.

Translators (image-to-image, as ``gan_core.translation.inference.load_translator`` returns
one direction of a paired or unpaired model) export through the same two functions, which
tell them by their class. The graph is ``G(images)`` in eval mode (dropout off; instance
norm uses each image's own statistics, so an image's output does not depend on the rest of
the batch):

- input: ``images`` float32 (batch, C_in, S, S) in [-1, 1] (uint8 pixels / 127.5 - 1, the
  image centre-cropped to a square and resized to S, as ``prepare_image`` does)
- output: ``translated`` float32 (batch, C_out, S, S) in [-1, 1]; batch is dynamic

C is 1 (grey) or 3 (RGB). Their metadata (format ``ganforge-translator-onnx/1`` or
``ganforge-translator-torchscript/1``): kind (paired / unpaired), direction (a2b / b2a),
input_shape and output_shape [C, S, S], input_range, output_range, checkpoint_step (when
known), ganforge_version, torch_version. An unpaired model is two translators: one file per
direction. The ONNX file refuses other channel counts and sides (its input shape is fixed
but for the batch); the TorchScript trace checks the channels only (a ResNet translator is
fully convolutional: another side runs, on sides it was not trained for).

``export_checkpoint(ckpt_dir, path, fmt, direction=..., ema=...)`` loads a checkpoint of
either kind (noise generator or translator) and writes one file: what a service calls.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "EXPORT_FORMATS",
    "ONNX_FORMAT",
    "TORCHSCRIPT_FORMAT",
    "TRANSLATOR_ONNX_FORMAT",
    "TRANSLATOR_TORCHSCRIPT_FORMAT",
    "ExportedFile",
    "export_checkpoint",
    "export_metadata",
    "export_onnx",
    "export_torchscript",
    "is_translator",
]

ONNX_FORMAT = "ganforge-generator-onnx/1"
TORCHSCRIPT_FORMAT = "ganforge-generator-torchscript/1"
TRANSLATOR_ONNX_FORMAT = "ganforge-translator-onnx/1"
TRANSLATOR_TORCHSCRIPT_FORMAT = "ganforge-translator-torchscript/1"
EXPORT_FORMATS = ("onnx", "torchscript")
TORCHSCRIPT_META_FILE = "ganforge.json"  # torch.jit.load(path, _extra_files={this: ""})
MIN_OPSET = 17
DEFAULT_OPSET = 18  # the dynamo exporter's own opset; 17 goes through onnx's version converter
_PROTO_LIMIT = 2**31 - 2**24  # protobuf caps one message at 2 GiB; keep a margin for the graph

# torch.export and torch.jit.trace keep process-global state while they run (fake-tensor
# modes, the tracer's module map), so two exports in one process must not overlap.
_EXPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class ExportedFile:
    """What an export wrote: its path, sha256 (hex; usable as an ETag) and size."""

    path: Path
    sha256: str
    size_bytes: int


class _Unconditional(nn.Module):
    """clamp(G(z)) for an unconditional G: z (N, latent_dim) -> images (N, C, H, W)."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: Tensor) -> Tensor:
        images: Tensor = self.generator(z)
        return images.clamp(-1, 1)


class _Conditional(nn.Module):
    """clamp(G(z, labels)) with the label checks an exported graph can keep."""

    def __init__(self, generator: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.generator = generator
        self.num_classes = num_classes

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        # nets._check_labels is Python control flow on shapes: the exporter resolves it once
        # and the trace bakes it in, so neither file would check anything. Two graph ops
        # stand in for it. ONNX Gather accepts negative indices (-1 = last class), so every
        # out-of-range label is mapped to num_classes, which the embedding lookup rejects.
        k = self.num_classes
        labels = torch.where((labels < 0) | (labels >= k), k, labels)
        # Mul would broadcast a single label over the whole batch; Concat never broadcasts,
        # so joining the labels with a (N, 1) column shaped by z fails unless counts match.
        pin = z.new_zeros((z.shape[0], 1), dtype=torch.int64)
        labels = torch.cat([labels[:, None], pin], dim=1)[:, 0]
        images: Tensor = self.generator(z, labels)
        return images.clamp(-1, 1)


class _Translate(nn.Module):
    """G(images) for a translator: images (N, C_in, S, S) -> translated (N, C_out, S, S)."""

    def __init__(self, translator: nn.Module) -> None:
        super().__init__()
        self.translator = translator

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.translator(images)
        return out


def is_translator(model: nn.Module) -> bool:
    """Whether ``model`` is an image-to-image translator (else a noise generator)."""
    from gan_core.translation.nets import ResnetGenerator, UNetGenerator

    return isinstance(model, UNetGenerator | ResnetGenerator)


def _translator_metadata(translator: nn.Module) -> dict[str, Any]:
    from gan_core import __version__

    T: Any = translator
    size = int(T.image_size)
    config = getattr(T, "config", None)  # set by load_translator, with direction
    meta: dict[str, Any] = {
        "kind": None if config is None else str(config.kind),
        "direction": getattr(T, "direction", None),
        "input_shape": [int(T.in_channels), size, size],
        "output_shape": [int(T.out_channels), size, size],
        "input_range": [-1.0, 1.0],
        "output_range": [-1.0, 1.0],
        "ganforge_version": __version__,
        "torch_version": torch.__version__,
    }
    step = getattr(T, "checkpoint_step", None)
    if step is not None:
        meta["checkpoint_step"] = int(step)
    return meta


def export_metadata(generator: nn.Module) -> dict[str, Any]:
    """The description both exports carry: what a consumer needs to feed and read G (a
    noise generator, or a translator)."""
    from gan_core import __version__

    if is_translator(generator):
        return _translator_metadata(generator)
    G: Any = generator  # nn.Module types unknown attributes as Tensor | Module
    meta: dict[str, Any] = {
        "latent_dim": int(G.latent_dim),
        "num_classes": None if G.num_classes is None else int(G.num_classes),
        "image_shape": [int(s) for s in G.image_shape],  # [C, H, W]
        "output_range": [-1.0, 1.0],
        "ganforge_version": __version__,
        "torch_version": torch.__version__,
    }
    step = getattr(G, "checkpoint_step", None)  # set by checkpoint.load_generator
    if step is not None:
        meta["checkpoint_step"] = int(step)
    return meta


def _frozen_copy(generator: nn.Module) -> nn.Module:
    # A copy, so that the caller's module (perhaps shared with samplers in other threads)
    # is never switched to eval, moved, or re-parametrized by torch.export while it works.
    # Exports are always made on the CPU in float32, in eval mode: BatchNorm uses its
    # running statistics, as every sampler does.
    return copy.deepcopy(generator).to("cpu", torch.float32).eval().requires_grad_(False)


def _graph(generator: nn.Module) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """The module to export and example inputs for it (batch 2: export specializes 0 and 1)."""
    G = _frozen_copy(generator)
    meta = export_metadata(G)
    if is_translator(G):
        return _Translate(G).eval(), (torch.zeros(2, *meta["input_shape"]),)
    z = torch.zeros(2, meta["latent_dim"])
    if meta["num_classes"] is None:
        return _Unconditional(G).eval(), (z,)
    labels = torch.zeros(2, dtype=torch.int64)
    return _Conditional(G, meta["num_classes"]).eval(), (z, labels)


def _merged(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    clash = sorted(set(base) & set(extra or {}))
    if clash:
        raise ValueError(f"metadata keys {clash} are set by the export itself")
    return base | dict(extra or {})


def export_onnx(
    generator: nn.Module,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,  # ONNX opset; >= 17
    metadata: Mapping[str, Any] | None = None,  # extra JSON-able metadata_props (e.g. ids)
) -> ExportedFile:
    """Write G as an ONNX file (inputs z[, labels], output images, dynamic batch), or a
    translator (input images, output translated, dynamic batch)."""
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    translator = is_translator(generator)
    fmt = TRANSLATOR_ONNX_FORMAT if translator else ONNX_FORMAT
    meta = _merged({"format": fmt, **export_metadata(generator)}, metadata)
    # sorted keys, JSON values: the same generator gives the same bytes
    props = {key: json.dumps(meta[key], sort_keys=True) for key in sorted(meta)}
    module, args = _graph(generator)
    n_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    if n_bytes > _PROTO_LIMIT:
        raise ValueError(
            f"generator weights are {n_bytes / 2**30:.1f} GiB; a single-file ONNX model "
            "holds at most 2 GiB"
        )
    names = ["images"] if translator else ["z", "labels"][: len(args)]
    batch = torch.export.Dim("batch", min=1)
    # labels gets a DYNAMIC hint, not the same Dim: the exporter ties it to z's batch
    # through the Concat anyway, and naming the shared axis twice only draws a warning.
    dynamic = {
        "z": {0: batch},
        "labels": {0: torch.export.Dim.DYNAMIC},
        "images": {0: batch},
    }
    with _EXPORT_LOCK, torch.no_grad():
        # The dynamo (torch.export) exporter, not the legacy TorchScript-based one, which
        # torch 2.14 deprecates; its optimizer also folds eval BatchNorm into the weights.
        program = torch.onnx.export(
            module,
            args,
            None,
            input_names=names,
            output_names=["translated" if translator else "images"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes={name: dynamic[name] for name in names},
            verbose=False,
        )
    assert program is not None  # with f=None the exporter returns the program
    model = program.model_proto
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    if translator:
        model.doc_string = (
            "ganforge translator: images float32 (batch, C_in, S, S) in [-1, 1] -> "
            "translated float32 (batch, C_out, S, S) in [-1, 1]"
        )
    else:
        model.doc_string = (
            "ganforge generator: z float32 (batch, latent_dim) ~ N(0, 1)"
            + ("" if meta["num_classes"] is None else ", labels int64 (batch,)")
            + " -> images float32 (batch, C, H, W) in [-1, 1]"
        )
    onnx.checker.check_model(model, full_check=True)
    return _write_atomic(Path(path), model.SerializeToString(deterministic=True))


def export_torchscript(
    generator: nn.Module,
    path: str | Path,
    *,
    metadata: Mapping[str, Any] | None = None,  # extra JSON-able entries for ganforge.json
) -> ExportedFile:
    """Write G as a traced TorchScript file: forward(z) or, if conditional, forward(z, labels);
    a translator: forward(images)."""
    fmt = TRANSLATOR_TORCHSCRIPT_FORMAT if is_translator(generator) else TORCHSCRIPT_FORMAT
    meta = _merged({"format": fmt, **export_metadata(generator)}, metadata)
    extra = {TORCHSCRIPT_META_FILE: json.dumps(meta, sort_keys=True)}
    module, args = _graph(generator)
    buf = io.BytesIO()
    with _EXPORT_LOCK, torch.no_grad(), warnings.catch_warnings():
        # Expected here: TorchScript's deprecation notices, and the TracerWarning for
        # nets._check_labels, whose check _Conditional re-expresses as graph ops.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", module=r"gan_core\.nets")
        # the translators' input checks, and instance norm's check of the spatial size:
        # checks on shapes, which the trace takes as constants
        warnings.filterwarnings("ignore", module=r"gan_core\.translation\.nets")
        warnings.filterwarnings(
            "ignore",
            category=torch.jit.TracerWarning,
            module=r"torch\.nn\.(modules\.instancenorm|functional)",
        )
        traced = torch.jit.trace(module, args, _store_inputs=False)
        torch.jit.save(traced, buf, _extra_files=extra)
    return _write_atomic(Path(path), buf.getvalue())


def export_checkpoint(
    ckpt_dir: str | Path,
    path: str | Path,
    fmt: str,
    *,
    direction: str | None = None,  # a translator's: a2b (the default) or, unpaired, b2a
    ema: bool = True,  # the averaged weights where the run kept them
    metadata: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,  # onnx only
) -> ExportedFile:
    """Export a checkpoint of any kind: its noise generator, or one direction of its
    translator, as ``fmt`` ('onnx' or 'torchscript')."""
    from gan_core import checkpoint as ckpt
    from gan_core.translation.config import TranslationConfig

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format: choose one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    config = ckpt.job_config_from_meta(ckpt.read_meta(ckpt_dir, verify=False))
    model: nn.Module
    if isinstance(config, TranslationConfig):
        from gan_core.translation.inference import load_translator

        model = load_translator(ckpt_dir, direction or "a2b", ema=ema)
    elif direction is not None:
        raise ValueError(
            f"direction: this checkpoint holds a noise-to-image generator, which has no "
            f"direction (got {direction!r})"
        )
    else:
        model = ckpt.load_generator(ckpt_dir, ema=ema)
    if fmt == "onnx":
        return export_onnx(model, path, opset=opset, metadata=metadata)
    return export_torchscript(model, path, metadata=metadata)


def _write_atomic(path: Path, data: bytes) -> ExportedFile:
    """Write data to path via a fsynced temp file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # make the rename itself durable
    finally:
        os.close(fd)
    return ExportedFile(path=path, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
