"""The console flow: ``ganforge train`` then ``ganforge sample``, as a user runs them."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from app.cli import main
from gan_core.checkpoint import latest_checkpoint, list_checkpoints, load_generator, read_meta
from gan_core.sampling import png_grid, sample
from tests.tiny import tiny

REPO = Path(__file__).resolve().parents[2]
TINY = tiny(steps=4, checkpoint_every=10, device="cpu")
# The trained run takes 30 steps: enough for BatchNorm's running statistics to settle, so
# eval-mode samples differ by seed (after a handful of steps they are nearly flat).


def tiny_sets(**changes) -> list[str]:
    """TINY (with changes) as --set arguments."""
    return [f"--set={k}={json.dumps(v)}" for k, v in (TINY | changes).items()]


def ganforge(*args: str) -> subprocess.CompletedProcess:
    """Run the console script's module in a fresh interpreter, on one thread."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    cfg = tmp / "cfg.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp / "run"
    proc = ganforge(
        "train",
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "steps=30",
        "--set",
        "seed=3",
    )
    assert proc.returncode == 0, proc.stderr
    assert "succeeded at step 30" in proc.stdout
    return out


def test_train_writes_checkpoints_with_overrides_applied(trained_run):
    assert [p.name for p in list_checkpoints(trained_run)] == [
        "step-00000010",
        "step-00000020",
        "step-00000030",
    ]
    config = read_meta(latest_checkpoint(trained_run))["config"]
    assert config["steps"] == 30 and config["seed"] == 3  # --set wins over the file
    assert config["g_width"] == 8 and config["channels"] == 1  # the file, then resolved


def test_sample_writes_a_deterministic_png(trained_run, tmp_path):
    out = tmp_path / "grid.png"
    proc = ganforge(
        "sample", "--checkpoint", str(trained_run), "--n", "16", "--seed", "0", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    img = Image.open(io.BytesIO(data))
    assert img.size == (8 * 18 + 2, 2 * 18 + 2) and img.mode == "L"
    # a second run (here in-process) gives the same bytes ...
    again = tmp_path / "again.png"
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(trained_run),
                "--n",
                "16",
                "--seed",
                "0",
                "-o",
                str(again),
            ]
        )
        == 0
    )
    assert again.read_bytes() == data
    # ... which are exactly the library's grid of the latest checkpoint's EMA generator
    G = load_generator(latest_checkpoint(trained_run))
    assert png_grid(sample(G, 16, seed=0), nrow=8) == data


def test_sample_options_change_the_output(trained_run, tmp_path):
    def grid(*extra: str, ckpt: Path = trained_run) -> bytes:
        out = tmp_path / "g.png"
        assert main(["sample", "--checkpoint", str(ckpt), "--n", "8", "-o", str(out), *extra]) == 0
        return out.read_bytes()

    base = grid()
    assert grid("--seed", "1") != base
    assert grid("--raw") != base
    assert grid("--truncation", "0.5") != base
    assert grid(ckpt=list_checkpoints(trained_run)[0]) != base  # a specific checkpoint dir
    assert Image.open(io.BytesIO(grid("--nrow", "4"))).size == (4 * 18 + 2, 2 * 18 + 2)


def test_train_again_resumes(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["train", "--out", str(run), "--no-progress", *tiny_sets(steps=40, seed=3)]) == 0
    assert "succeeded at step 40" in capsys.readouterr().out
    assert read_meta(latest_checkpoint(run))["step"] == 40
    # a changed architecture is refused with the field named
    assert (
        main(
            ["train", "--out", str(run), "--no-progress", *tiny_sets(steps=50, seed=3, g_width=16)]
        )
        == 1
    )
    assert "g_width" in capsys.readouterr().err


def test_invalid_config_exits_2_naming_the_field(tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(TINY | {"image_size": 100}))
    proc = ganforge("train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress")
    assert proc.returncode == 2
    assert "image_size" in proc.stderr
    assert list_checkpoints(tmp_path / "run") == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["--set", "loss=wasserstein"], "loss"),
        (["--set", "learning_rate=0.1"], "learning_rate"),
        (["--set", "precision=fp16", "--set", "device=cpu"], "precision"),
    ],
)
def test_invalid_overrides_exit_2(tmp_path, capsys, overrides, field):
    # tiny otherwise, so that a validation gap fails fast instead of training the defaults
    assert (
        main(
            [
                "train",
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
                *tiny_sets(steps=1),
                *overrides,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "invalid config" in err and field in err


def test_sample_from_missing_checkpoint_fails_cleanly(tmp_path, capsys):
    assert (
        main(["sample", "--checkpoint", str(tmp_path / "nope"), "-o", str(tmp_path / "x.png")]) == 1
    )
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_sample_bad_label_fails_cleanly(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["train", "--out", str(run), "--no-progress", *tiny_sets(conditional=True, steps=1)])
        == 0
    )
    out = tmp_path / "x.png"
    assert (
        main(["sample", "--checkpoint", str(run), "--n", "4", "--label", "7", "-o", str(out)]) == 1
    )
    assert "labels" in capsys.readouterr().err and not out.exists()
    assert (
        main(["sample", "--checkpoint", str(run), "--n", "4", "--label", "4", "-o", str(out)]) == 0
    )


# --- train --score ------------------------------------------------------------------------


def npz_dataset(path: Path, *, labelled: bool, seed: int = 5) -> str:
    """A small shapes .npz (x, and y when labelled) as a dataset name."""
    import numpy as np

    from gan_core.data import make_shapes

    images, labels = make_shapes(400, 16, seed)
    arrays = {"x": images[:, 0].numpy()} | ({"y": labels.numpy()} if labelled else {})
    np.savez(path, **arrays)
    return f"npz:{path}"


def score_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if " scores: " in line]


@pytest.fixture
def quick_extractor(monkeypatch):
    """Train the scorer's extractor for a few steps only (the default is >= 900 steps)."""
    from gan_core.metrics import features

    monkeypatch.setattr(features, "MIN_TRAIN_STEPS", 4)


@pytest.mark.parametrize(("labelled", "kind"), [(True, "classifier"), (False, "rotation")])
def test_train_score_prints_both_generators_after_each_checkpoint(
    tmp_path, capsys, quick_extractor, labelled, kind
):
    from gan_core.metrics import load_extractor, load_reference, score_generator

    data = npz_dataset(tmp_path / "data.npz", labelled=labelled)
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--no-progress", "--score", "--score-samples", "100"]
    assert main([*args, *tiny_sets(dataset=data, steps=20)]) == 0
    out = capsys.readouterr().out
    assert f"training a {kind} feature extractor on 400 images" in out
    lines = score_lines(out)
    assert [line.split()[1] for line in lines] == ["10", "20"]  # one line per checkpoint
    for line in lines:
        ema, raw = line.split(" scores: ")[1].split(" | ")
        assert ema.startswith("ema fd ") and raw.startswith("raw fd ")
        for part in (ema, raw):
            assert "kid " in part and "precision " in part and "recall " in part
            assert ("classes " in part) == labelled  # coverage needs a classifier
            float(part.split()[2])  # the FD is a number
    extractor = load_extractor(run / "scorer" / "extractor.safetensors")
    reference = load_reference(run / "scorer" / "reference.safetensors")
    assert extractor.kind == reference.kind == kind
    # the printed numbers are the library's scores of that checkpoint's EMA and raw generators
    for part, ema in zip(lines[-1].split(" scores: ")[1].split(" | "), (True, False), strict=True):
        G = load_generator(latest_checkpoint(run), ema=ema)
        expected = score_generator(G, extractor, reference, num_samples=100, seed=0)
        assert part.split()[2] == f"{expected.fd:.3f}"

    # run again (resuming to step 30): the cached extractor is reused, not retrained
    files = {p.name: p.read_bytes() for p in (run / "scorer").iterdir()}
    assert main([*args, *tiny_sets(dataset=data, steps=30)]) == 0
    out = capsys.readouterr().out
    assert "reusing the" in out and "training a" not in out
    assert [line.split()[1] for line in score_lines(out)] == ["30"]
    assert {p.name: p.read_bytes() for p in (run / "scorer").iterdir()} == files


def test_train_score_retrains_when_the_data_changed(tmp_path, capsys, quick_extractor):
    path = tmp_path / "data.npz"
    data = npz_dataset(path, labelled=True)
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--no-progress", "--score", "--score-samples", "50"]
    assert main([*args, *tiny_sets(dataset=data, steps=10)]) == 0
    before = (run / "scorer" / "extractor.safetensors").read_bytes()
    npz_dataset(path, labelled=True, seed=6)  # same name, other images
    capsys.readouterr()
    assert main([*args, *tiny_sets(dataset=data, steps=20)]) == 0
    out = capsys.readouterr().out
    assert "not reusing" in out and "made for other data" in out and "training a" in out
    assert (run / "scorer" / "extractor.safetensors").read_bytes() != before


def test_train_score_without_ema_scores_the_raw_generator_only(tmp_path, capsys, quick_extractor):
    data = npz_dataset(tmp_path / "data.npz", labelled=True)
    assert (
        main(
            [
                "train",
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
                "--score",
                "--score-samples",
                "50",
                *tiny_sets(dataset=data, steps=10, ema_decay=None),
            ]
        )
        == 0
    )
    (line,) = score_lines(capsys.readouterr().out)
    assert " raw fd " in line and "ema" not in line and " | " not in line


def test_train_score_samples_must_be_at_least_two(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
                "--score",
                "--score-samples",
                "1",
                *tiny_sets(),
            ]
        )
        == 2
    )
    assert "--score-samples" in capsys.readouterr().err


def test_train_score_on_a_finished_run_prints_its_recorded_scores_at_once(
    tmp_path, capsys, quick_extractor
):
    data = npz_dataset(tmp_path / "data.npz", labelled=True)
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--no-progress", "--score", "--score-samples", "50"]
    assert main([*args, *tiny_sets(dataset=data, steps=20)]) == 0
    scored = score_lines(capsys.readouterr().out)
    checkpoints = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}

    # The same command again: the run is done. Neither the scorer nor the data is touched
    # (no "scorer:" line); the scores printed when each checkpoint was made come back.
    assert main([*args, *tiny_sets(dataset=data, steps=20)]) == 0
    out = capsys.readouterr().out
    assert f"nothing to train: {run} is at step 20 and steps is 20" in out
    assert "scorer:" not in out
    again = score_lines(out)
    assert [line.split()[1] for line in again] == ["10", "20"]
    for before, now in zip(scored, again, strict=True):  # the same numbers, marked as recorded
        assert now.endswith(" (recorded)")
        assert now.rsplit(" (", 1)[0] == before.rsplit(" (", 1)[0]
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == checkpoints


def test_train_score_on_a_finished_unscored_run_says_so_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--no-progress", *tiny_sets(steps=10)]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--no-progress", "--score", *tiny_sets(steps=10)]) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and "steps=20" in out  # how to train longer
    assert "step 10: no recorded scores" in out and "scorer:" not in out
    assert not (run / "scorer").exists()  # no extractor was trained
