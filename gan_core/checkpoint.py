"""Checkpoints without pickle: safetensors weights, JSON metadata, atomic directory writes.

Layout of one checkpoint, ``<run_dir>/checkpoints/step-00000500/``:

- ``generator.safetensors``   G (``G.*``) and, when EMA is on, the averaged G (``G_ema.*``)
- ``train_state.safetensors`` D, both optimizers' tensors, RNG and data-order state
- ``meta.json``               format, step, epoch, losses, the resolved TrainConfig,
                              library versions, and each file's sha256 and size

A checkpoint is written into a hidden temp directory, every file fsynced, then
renamed into place, so a crash leaves either the old set of checkpoints or the new
one. Loading checks that the directory holds exactly those files and that their
hashes match before any bytes reach safetensors, and never executes code.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from gan_core.config import TrainConfig

if TYPE_CHECKING:
    from pydantic import BaseModel

    from gan_core.jobconfig import AnyConfig
    from gan_core.nets import Generator

FORMAT = "ganforge-checkpoint/1"
GENERATOR_FILE = "generator.safetensors"
STATE_FILE = "train_state.safetensors"
META_FILE = "meta.json"
ALLOWED_FILES = frozenset({GENERATOR_FILE, STATE_FILE, META_FILE})
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, tampered with or not ours."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What the training loop tells its on_checkpoint hook about a checkpoint it wrote."""

    step: int
    path: Path
    files: dict[str, dict[str, Any]]  # name -> {"sha256": hex, "size": bytes}
    size_bytes: int
    losses: dict[str, float]
    # how long it took: what saving prepares (training's EMA G's standing statistics), then
    # serialise, hash, fsync, rename
    seconds: float = 0.0


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Finished checkpoint directories of a run, oldest first (temp dirs are never listed)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def _step_of(path: Path) -> int:
    match = _STEP_DIR.match(path.name)
    return int(match.group(1)) if match else -1


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


# ---------------------------------------------------------------- writing


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> dict[str, Any]:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _tensors_only(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage; cloning to CPU makes each its own.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def optimizer_to_flat(
    prefix: str, opt: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    extra: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{idx}.{key}"] = value
            else:
                extra.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "extra_state": extra}


def optimizer_from_flat(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Rebuild an optimizer state dict from optimizer_to_flat's two halves."""
    state: dict[int, dict[str, Any]] = {}
    head = prefix + ".state."
    for key, value in tensors.items():
        if key.startswith(head):
            idx, name = key[len(head) :].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("extra_state", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _versions() -> dict[str, str]:
    import safetensors
    import torchvision

    from gan_core import __version__

    return {
        "ganforge": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def write_checkpoint(
    run_dir: str | Path,
    *,
    step: int,
    config: BaseModel,  # a TrainConfig, PairedConfig or UnpairedConfig
    generator_tensors: dict[str, torch.Tensor],
    state_tensors: dict[str, torch.Tensor],
    meta_extra: dict[str, Any],
    losses: dict[str, float],
    keep: int | None = None,
) -> CheckpointInfo:
    """Write one checkpoint atomically, then prune to the newest ``keep``."""
    started = time.monotonic()
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        files = {
            GENERATOR_FILE: _write_file(
                tmp / GENERATOR_FILE, st_save(_tensors_only(generator_tensors))
            ),
            STATE_FILE: _write_file(tmp / STATE_FILE, st_save(_tensors_only(state_tensors))),
        }
        meta = {
            "format": FORMAT,
            "step": step,
            "created": time.time(),
            "config": config.model_dump(mode="json"),
            "losses": losses,
            "versions": _versions(),
            "files": files,
            **meta_extra,
        }
        _write_file(tmp / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
        _fsync_dir(tmp)
        if final.exists():  # re-written step (e.g. a cancel right after a periodic save)
            old = root / f".old-{final.name}-{time.monotonic_ns()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        prune_checkpoints(run_dir, keep)
    size = sum(f["size"] for f in files.values()) + (final / META_FILE).stat().st_size
    return CheckpointInfo(
        step=step,
        path=final,
        files=files,
        size_bytes=size,
        losses=losses,
        seconds=time.monotonic() - started,
    )


def prune_checkpoints(run_dir: str | Path, keep: int, protect: Collection[int] = ()) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints and those of the ``protect`` steps."""
    ckpts = list_checkpoints(run_dir)
    doomed = [p for p in ckpts[: max(0, len(ckpts) - keep)] if _step_of(p) not in protect]
    for path in doomed:
        # Rename first so a crash mid-delete never leaves a half checkpoint that lists as valid.
        trash = path.with_name(f".del-{path.name}-{time.monotonic_ns()}")
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    return doomed


def remove_stale_temp(run_dir: str | Path) -> None:
    """Remove temp/half-deleted dirs a crashed writer left behind."""
    root = checkpoint_root(run_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".old-", ".del-")):
                shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------- reading


def read_meta(ckpt_dir: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Parse meta.json; with verify, check the file set and every hash first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"checkpoint {ckpt_dir} does not exist")
    names = {p.name for p in ckpt_dir.iterdir()}
    unexpected = sorted(names - ALLOWED_FILES)
    if unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt_dir.name} holds unexpected file(s) {unexpected}; a ganforge "
            f"checkpoint holds only {sorted(ALLOWED_FILES)} and is never unpickled"
        )
    missing = sorted(ALLOWED_FILES - names)
    if missing:
        raise CheckpointError(f"checkpoint {ckpt_dir.name} is incomplete: missing {missing}")
    try:
        meta = json.loads((ckpt_dir / META_FILE).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt_dir.name}: meta.json is not valid JSON") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {ckpt_dir.name}: unknown format (want {FORMAT})")
    if verify:
        for name in (GENERATOR_FILE, STATE_FILE):
            _verified_bytes(ckpt_dir, name, meta)
    return meta


def _verified_bytes(ckpt_dir: Path, name: str, meta: dict[str, Any]) -> bytes:
    data = (ckpt_dir / name).read_bytes()
    files = meta.get("files")
    entry = files.get(name) if isinstance(files, dict) else None
    want = entry.get("sha256") if isinstance(entry, dict) else None  # malformed: no match
    got = hashlib.sha256(data).hexdigest()
    if want != got:
        raise CheckpointError(
            f"checkpoint {ckpt_dir.name}: {name} does not match the sha256 in meta.json "
            "(corrupted or tampered with)"
        )
    return data


def _load_tensors(ckpt_dir: Path, name: str, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    data = _verified_bytes(ckpt_dir, name, meta)
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {ckpt_dir.name}: {name} is not a valid safetensors file"
        ) from exc


def load_checkpoint(
    ckpt_dir: str | Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Verified (meta, generator tensors, train-state tensors) of one checkpoint."""
    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir, verify=False)
    return (
        meta,
        _load_tensors(ckpt_dir, GENERATOR_FILE, meta),
        _load_tensors(ckpt_dir, STATE_FILE, meta),
    )


def job_config_from_meta(meta: dict[str, Any]) -> AnyConfig:
    """The checkpoint's config, of whichever kind (noise, paired, unpaired)."""
    from gan_core.jobconfig import parse_config  # local: jobconfig imports the translation kinds

    try:
        return parse_config(meta["config"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from exc


def config_from_meta(meta: dict[str, Any]) -> TrainConfig:
    """The config of a noise-to-image checkpoint; a translator's is refused by name."""
    config = job_config_from_meta(meta)
    if not isinstance(config, TrainConfig):
        raise CheckpointError(
            f"this checkpoint holds a {config.kind} translation model: it translates images "
            "(POST .../translate), it does not sample from noise"
        )
    return config


def sub_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a flat tensor dict under ``prefix.``, with the prefix removed."""
    head = prefix + "."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def load_generator(
    ckpt_dir: str | Path, *, ema: bool = True, device: str | torch.device = "cpu"
) -> Generator:
    """Rebuild a checkpoint's generator from the checkpoint alone, in eval mode."""
    from gan_core.nets import build_generator

    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir, verify=False)
    tensors = _load_tensors(ckpt_dir, GENERATOR_FILE, meta)
    config = config_from_meta(meta)
    G = build_generator(config)
    prefix = "G_ema" if ema and any(k.startswith("G_ema.") for k in tensors) else "G"
    try:
        G.load_state_dict(sub_state(tensors, prefix), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {ckpt_dir.name}: weights do not fit its config") from exc
    G.config = config  # type: ignore[assignment]  # so samplers know what they hold
    G.checkpoint_step = int(meta["step"])  # type: ignore[assignment]
    return G.to(device).eval().requires_grad_(False)
