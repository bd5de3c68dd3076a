"""Checkpoints: rebuild G from the files alone, metadata, refusal of foreign or tampered
files (nothing ever unpickled), atomic writes, stale temp dirs, pruning."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from gan_core import checkpoint as ckpt
from gan_core import training
from gan_core.checkpoint import (
    ALLOWED_FILES,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_generator,
    prune_checkpoints,
    read_meta,
    remove_stale_temp,
    write_checkpoint,
)
from gan_core.config import TrainConfig
from gan_core.data import load_dataset
from gan_core.sampling import latents
from tests.tiny import tiny

TINY = tiny(device="cpu", steps=4, checkpoint_every=2)


def _train_capturing_run(run_dir: Path, **kw):
    """Train a tiny run; return (result, the live TrainState whose networks were trained)."""
    runs = []

    class Capturing(training.TrainState):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            runs.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "TrainState", Capturing)
        ds = load_dataset("shapes", image_size=16, max_items=128)
        result = training.train(TrainConfig(**(TINY | kw)), run_dir, dataset=ds)
    assert len(runs) == 1
    return result, runs[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train_capturing_run(tmp_path_factory.mktemp("run"))


@pytest.fixture
def ckpt_copy(trained, tmp_path) -> Path:
    """A private copy of the final checkpoint, for tampering."""
    result, _ = trained
    dst = tmp_path / "checkpoints" / result.checkpoint.name
    shutil.copytree(result.checkpoint, dst)
    return dst


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "conditional"])
def test_load_generator_rebuilds_g_from_the_checkpoint_alone(tmp_path, conditional):
    result, run = _train_capturing_run(tmp_path, conditional=conditional)
    z = latents(6, 16, seed=1)
    y = torch.arange(6) % 5 if conditional else None
    with torch.no_grad():
        want_raw = run.G.eval()(z, y)
        want_ema = run.ema.model.eval()(z, y)
    G_ema = load_generator(result.checkpoint)  # no config passed: it comes from meta.json
    G_raw = load_generator(result.checkpoint, ema=False)
    assert not G_ema.training and not any(p.requires_grad for p in G_ema.parameters())
    assert G_ema.checkpoint_step == 4 and G_ema.config == result.config
    assert G_ema.num_classes == (5 if conditional else None)
    with torch.no_grad():
        assert torch.equal(G_ema(z, y), want_ema)
        assert torch.equal(G_raw(z, y), want_raw)
    assert not torch.equal(want_ema, want_raw)  # EMA and raw really are two generators


def test_generator_without_ema_loads_raw_for_both(tmp_path):
    result, run = _train_capturing_run(tmp_path, ema_decay=None)
    _, gen, _ = load_checkpoint(result.checkpoint)
    assert gen and all(k.startswith("G.") for k in gen)
    z = latents(4, 16, seed=0)
    with torch.no_grad():
        want = run.G.eval()(z)
        assert torch.equal(load_generator(result.checkpoint)(z), want)
        assert torch.equal(load_generator(result.checkpoint, ema=False)(z), want)


def test_meta_contents_and_file_set(trained):
    result, _ = trained
    path = result.checkpoint
    assert (
        {p.name for p in path.iterdir()}
        == set(ALLOWED_FILES)
        == {"generator.safetensors", "train_state.safetensors", "meta.json"}
    )
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format"] == ckpt.FORMAT
    assert meta["step"] == 4
    assert TrainConfig.model_validate(meta["config"]) == result.config
    assert set(meta["losses"]) == {"d", "g"}
    assert all(isinstance(v, float) for v in meta["losses"].values())
    assert {"ganforge", "torch", "safetensors", "python"} <= set(meta["versions"])
    assert meta["versions"]["torch"] == torch.__version__
    assert set(meta["files"]) == {"generator.safetensors", "train_state.safetensors"}
    for name, entry in meta["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert read_meta(path) == meta


def test_train_state_holds_d_optimizers_rng_and_data_order(trained):
    result, run = trained
    _, gen, state = load_checkpoint(result.checkpoint)
    assert {k.split(".")[0] for k in gen} == {"G", "G_ema"}
    assert {k.split(".")[0] for k in state} == {"D", "opt_g", "opt_d", "rng", "batcher"}
    for k, v in run.D.state_dict().items():
        assert torch.equal(state[f"D.{k}"], v)


# --------------------------------------------------------------------------- refusals


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_live(tmp_path):
    # sanity check of the payload the next tests rely on
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("loader", [read_meta, load_checkpoint, load_generator])
def test_extra_pickle_file_is_refused_unopened(ckpt_copy, tmp_path, loader):
    marker = tmp_path / "pwned"
    (ckpt_copy / "evil.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="evil.pkl"):
        loader(ckpt_copy)
    assert not marker.exists()


def test_pickle_in_place_of_weights_is_refused_unexecuted(ckpt_copy, tmp_path):
    """Even with a matching hash in meta.json, a pickle never reaches an unpickler."""
    marker = tmp_path / "pwned"
    data = pickle.dumps(_Payload(marker))
    (ckpt_copy / "generator.safetensors").write_bytes(data)
    meta = json.loads((ckpt_copy / "meta.json").read_text())
    meta["files"]["generator.safetensors"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    (ckpt_copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="generator.safetensors"):
        load_generator(ckpt_copy)
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt_copy)
    assert not marker.exists()


def _flip(path: Path, offset: int) -> bytes:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("name", ["generator.safetensors", "train_state.safetensors"])
def test_flipped_byte_fails_the_hash(ckpt_copy, name):
    _flip(ckpt_copy / name, 20)  # inside the JSON header
    with pytest.raises(CheckpointError, match="sha256"):
        read_meta(ckpt_copy)
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(ckpt_copy)
    if name == "generator.safetensors":
        with pytest.raises(CheckpointError, match="sha256"):
            load_generator(ckpt_copy)
    # read_meta(verify=False) only checks the file set and format
    assert read_meta(ckpt_copy, verify=False)["step"] == 4


def test_flipped_weight_byte_fails_the_hash(ckpt_copy):
    path = ckpt_copy / "generator.safetensors"
    _flip(path, path.stat().st_size - 1)  # tensor data, not header
    with pytest.raises(CheckpointError, match="sha256"):
        load_generator(ckpt_copy)


@pytest.mark.parametrize("offset", [0, 3, 9, 20])  # header length field and header JSON
def test_garbage_header_with_matching_hash_is_an_error_not_a_crash(ckpt_copy, offset):
    data = _flip(ckpt_copy / "generator.safetensors", offset)
    meta = json.loads((ckpt_copy / "meta.json").read_text())
    meta["files"]["generator.safetensors"]["sha256"] = hashlib.sha256(data).hexdigest()
    (ckpt_copy / "meta.json").write_text(json.dumps(meta))
    read_meta(ckpt_copy)  # hashes agree now
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_generator(ckpt_copy)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(ckpt_copy)


@pytest.mark.parametrize("name", sorted(ALLOWED_FILES))
def test_missing_file(ckpt_copy, name):
    (ckpt_copy / name).unlink()
    for loader in (read_meta, load_checkpoint, load_generator):
        with pytest.raises(CheckpointError, match=name):
            loader(ckpt_copy)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "nope")


@pytest.mark.parametrize(
    "meta_text",
    [
        "{not json",
        "[1, 2]",
        json.dumps({"format": "someone-else/1"}),
        "\xff\xfe",
    ],
    ids=["bad-json", "not-an-object", "foreign-format", "not-utf8"],
)
def test_bad_meta_is_refused(ckpt_copy, meta_text):
    path = ckpt_copy / "meta.json"
    if meta_text == "\xff\xfe":
        path.write_bytes(b"\xff\xfe\x00")
    else:
        path.write_text(meta_text)
    with pytest.raises(CheckpointError):
        read_meta(ckpt_copy)
    with pytest.raises(CheckpointError):
        load_generator(ckpt_copy)


@pytest.mark.parametrize(
    "files",
    [[], "x", {"generator.safetensors": "abc"}, {"generator.safetensors": None}, None],
    ids=["list", "string", "entry-string", "entry-null", "null"],
)
def test_malformed_hash_table_is_refused(ckpt_copy, files):
    meta = json.loads((ckpt_copy / "meta.json").read_text())
    meta["files"] = files
    (ckpt_copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        read_meta(ckpt_copy)
    with pytest.raises(CheckpointError):
        load_generator(ckpt_copy)


def test_invalid_config_in_meta_is_refused(ckpt_copy):
    meta = json.loads((ckpt_copy / "meta.json").read_text())
    meta["config"]["image_size"] = 100  # not a dcgan size
    (ckpt_copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="config"):
        load_generator(ckpt_copy)


def test_weights_that_do_not_fit_the_config_are_refused(ckpt_copy):
    meta = json.loads((ckpt_copy / "meta.json").read_text())
    meta["config"]["g_width"] = 16
    (ckpt_copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_generator(ckpt_copy)


# --------------------------------------------------------------------------- writing


def _write(run_dir: Path, step: int, keep: int | None = None, value: float = 0.0):
    return write_checkpoint(
        run_dir,
        step=step,
        config=TrainConfig(channels=1),
        generator_tensors={"G.w": torch.full((3,), value)},
        state_tensors={"D.w": torch.arange(4.0)},
        meta_extra={},
        losses={"d": 1.0, "g": 2.0},
        keep=keep,
    )


def test_write_checkpoint_result(tmp_path):
    info = _write(tmp_path, 7, value=1.5)
    assert info.step == 7 and info.path == tmp_path / "checkpoints" / "step-00000007"
    assert info.size_bytes == sum(p.stat().st_size for p in info.path.iterdir())
    meta, gen, state = load_checkpoint(info.path)
    assert meta["files"] == info.files
    assert torch.equal(gen["G.w"], torch.full((3,), 1.5))
    assert torch.equal(state["D.w"], torch.arange(4.0))


def _fail_on_call(monkeypatch, n: int) -> None:
    real = ckpt._write_file
    calls = [0]

    def flaky(path, data):
        calls[0] += 1
        if calls[0] == n:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", flaky)


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("failing_call", [1, 2, 3])
def test_crash_mid_write_leaves_previous_checkpoints_intact(tmp_path, monkeypatch, failing_call):
    _write(tmp_path, 2)
    _write(tmp_path, 4)
    before = _snapshot(tmp_path)
    _fail_on_call(monkeypatch, failing_call)
    with pytest.raises(OSError):
        _write(tmp_path, 6, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000004"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] == []
    assert _snapshot(tmp_path) == before  # not pruned either
    for p in list_checkpoints(tmp_path):
        read_meta(p)


def test_crash_while_rewriting_a_step_keeps_the_old_one(tmp_path, monkeypatch):
    _write(tmp_path, 4, value=1.0)
    _fail_on_call(monkeypatch, 2)
    with pytest.raises(OSError):
        _write(tmp_path, 4, value=2.0)
    _, gen, _ = load_checkpoint(latest_checkpoint(tmp_path))
    assert torch.equal(gen["G.w"], torch.full((3,), 1.0))
    monkeypatch.undo()
    _write(tmp_path, 4, value=3.0)  # a successful rewrite replaces it
    _, gen, _ = load_checkpoint(latest_checkpoint(tmp_path))
    assert torch.equal(gen["G.w"], torch.full((3,), 3.0))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000004"]


def test_crash_during_training_save_keeps_earlier_checkpoints_and_resumes(tmp_path, monkeypatch):
    ds = load_dataset("shapes", image_size=16, max_items=128)
    config = TrainConfig(**(TINY | {"steps": 6}))
    training.train(TrainConfig(**(TINY | {"steps": 4})), tmp_path, dataset=ds)
    _fail_on_call(monkeypatch, 2)
    with pytest.raises(OSError):
        training.train(config, tmp_path, dataset=ds)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000004"]
    monkeypatch.undo()
    result = training.train(config, tmp_path, dataset=ds)
    assert result.step == 6 and read_meta(result.checkpoint)["step"] == 6


def test_stale_temp_dirs_are_never_listed_and_are_removed(tmp_path):
    _write(tmp_path, 2)
    root = tmp_path / "checkpoints"
    stale = [
        root / ".tmp-step-00000004-123-456",
        root / ".old-step-00000002-9",
        root / ".del-step-00000001-9",
    ]
    for d in stale:
        d.mkdir()
        (d / "meta.json").write_text("{}")
    (root / "notes.txt").write_text("not a checkpoint")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002"]
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    remove_stale_temp(tmp_path)
    assert not any(d.exists() for d in stale)
    assert (root / "step-00000002").is_dir() and (root / "notes.txt").exists()
    remove_stale_temp(tmp_path / "no-such-run")  # nothing to do is fine


def test_training_start_removes_stale_temp_dirs(tmp_path):
    stale = tmp_path / "checkpoints" / ".tmp-step-00000008-1-2"
    stale.mkdir(parents=True)
    ds = load_dataset("shapes", image_size=16, max_items=64)
    training.train(TrainConfig(**(TINY | {"steps": 2})), tmp_path, dataset=ds)
    assert not stale.exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002"]


def test_listing_is_in_step_order(tmp_path):
    for step in (10, 9, 100, 1):
        _write(tmp_path, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-00000001",
        "step-00000009",
        "step-00000010",
        "step-00000100",
    ]
    assert (
        list_checkpoints(tmp_path / "empty") == [] and latest_checkpoint(tmp_path / "empty") is None
    )


def test_prune_keeps_newest(tmp_path):
    for step in (1, 2, 3, 4, 5):
        _write(tmp_path, step)
    removed = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == ["step-00000001", "step-00000002", "step-00000003"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000005"]
    assert prune_checkpoints(tmp_path, 5) == []
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000004",
        "step-00000005",
    ]


def test_write_with_keep_prunes(tmp_path):
    for step in range(1, 6):
        _write(tmp_path, step, keep=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-00000003",
        "step-00000004",
        "step-00000005",
    ]
