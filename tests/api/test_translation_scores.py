"""Scores of translation checkpoints through the API, with jobs run as the worker runs them:
each target domain gets its own rotation extractor (trained for real, once per domain for the
whole store), every checkpoint of a paired or unpaired job is scored on the held-out split,
``best`` and ``ema=auto`` follow FD (an unpaired job's: both directions' over their floors),
and what shows scores shows a translator's.

The extractors' recipe is cut to a few optimizer steps (MIN_TRAIN_STEPS, one epoch): what is
tested is the service's wiring, not the features' quality (tests/gan_core/test_metrics_translation
checks that a trained translator scores better than its start and than copying)."""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app.api.main import create_app
from app.core.settings import Settings
from gan_core.metrics import features
from gan_core.metrics.translation import TranslationScorer
from ganforge_client import models
from tests.api.conftest import make_key
from tests.api.upload_helpers import make_zip, upload

# The smallest nets that train (as tests/api/test_translation_jobs.py), with an EMA so that
# each checkpoint has two translators to choose between.
PAIRED = {
    "kind": "paired",
    "image_size": 32,
    "g_width": 8,
    "d_width": 8,
    "batch_size": 2,
    "steps": 6,
    "checkpoint_every": 2,
    "keep_checkpoints": 1,
    "ema_decay": 0.5,
    "device": "cpu",
}
UNPAIRED = {**PAIRED, "kind": "unpaired", "pool_size": 4, "steps": 4}
TRAINED_ONCE = "training it (once for the fleet)"  # app.core.serving.scores' log line


def _picture(mode: str, seed: int) -> bytes:
    """A 32 px picture of a few random boxes (domain A: grey; B: colour)."""
    rng = random.Random(seed)
    img = Image.new(mode, (32, 32), 0 if mode == "L" else (0, 0, 0))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = rng.randrange(24), rng.randrange(24)
        fill = rng.randrange(80, 256) if mode == "L" else tuple(rng.randrange(256) for _ in "rgb")
        draw.rectangle((x, y, x + rng.randrange(4, 9), y + rng.randrange(4, 9)), fill=fill)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def domains_zip() -> bytes:
    """Two unpaired domains (no names in common): 24 grey A images, 30 colour B images."""
    members = {f"trainA/a{i:02d}.png": _picture("L", i) for i in range(24)}
    members |= {f"trainB/b{i:02d}.png": _picture("RGB", 100 + i) for i in range(30)}
    return make_zip(members)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with scoring on and cheap extractors; a log of the scorers' lines."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("translation-scores"),
        progress_interval=0.05,
        max_jobs_per_owner=20,
        score_samples=64,  # > 0: scoring on (a translator scores its whole held-out split)
    )
    lines = _Lines()
    scores_log = logging.getLogger("ganforge.scores")
    scores_log.addHandler(lines)
    level = scores_log.level
    scores_log.setLevel(logging.INFO)
    key = make_key(settings, "alice")
    with (
        pytest.MonkeyPatch.context() as mp,
        TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        mp.setattr(features, "MIN_TRAIN_STEPS", 8)
        mp.setitem(features.DEFAULT_EPOCHS, "rotation", 1)
        yield client, settings, lines.lines
    scores_log.removeHandler(lines)
    scores_log.setLevel(level)


def _run(settings: Settings, job_id: str) -> tuple[str, float]:
    from worker.runner import run_job

    t0 = time.monotonic()
    status = run_job(job_id, settings=settings)
    return status, time.monotonic() - t0


def _submit(client, config: dict) -> str:
    r = client.post("/v1/jobs", json={"name": "scored translator", "config": config})
    assert r.status_code == 202, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def paired(served):
    """Two paired jobs on shapes-edges (another seed: the same data): (job ids, timings)."""
    client, settings, lines = served
    jobs, timings = [], []
    for seed in (0, 1):
        job_id = _submit(client, {**PAIRED, "seed": seed})
        status, seconds = _run(settings, job_id)
        assert status == "succeeded", client.get(f"/v1/jobs/{job_id}").json()
        jobs.append(job_id)
        timings.append(seconds)
    print(f"paired jobs on shapes-edges (6 steps, 3 checkpoints each): {timings} s")
    return jobs


@pytest.fixture(scope="module")
def unpaired(served):
    client, settings, _ = served
    r = upload(client, domains_zip(), filename="boxes.zip")
    assert r.status_code == 201 and r.json()["kind"] == "unpaired", r.text
    job_id = _submit(client, {**UNPAIRED, "dataset": r.json()["id"]})
    status, seconds = _run(settings, job_id)
    assert status == "succeeded", client.get(f"/v1/jobs/{job_id}").json()
    print(f"unpaired job on a 24+30 image upload (4 steps, 2 checkpoints): {seconds:.1f} s")
    return job_id


def _history(client, job_id: str) -> list[dict]:
    r = client.get(f"/v1/jobs/{job_id}/metrics")
    assert r.status_code == 200, r.text
    return r.json()["checkpoints"]


def test_every_checkpoint_of_a_paired_job_is_scored(served, paired):
    client, _, _ = served
    history = _history(client, paired[0])
    assert [c["step"] for c in history] == [2, 4, 6]
    for c in history:
        assert c["score_status"] == "scored", c
        s = c["scores"]
        assert (s["kind"], s["extractor"], s["num_inputs"]) == ("paired", "rotation", {"a2b": 200})
        for name in ("ema", "raw"):
            t = s[name]
            assert set(t) >= {"fd", "kid", "kid_std", "l1", "psnr", "ssim"}, t
            assert t["fd"] >= 0 and t["kid_std"] >= 0 and 0 <= t["l1"] <= 2
            assert t["psnr"] > 0 and -1 <= t["ssim"] <= 1 and t["fd_b2a"] is None
        assert s["preferred"] in ("ema", "raw")
        assert s["fd"] == s[s["preferred"]]["fd"] == min(s["ema"]["fd"], s["raw"]["fd"])
        for key in ("kid", "l1", "psnr", "ssim"):  # the top level is the preferred one's
            assert s[key] == s[s["preferred"]][key]
        # the baseline: real held-out targets (FD near the floor), and copying the input
        assert set(s["baseline"]) == {"fd", "kid", "kid_std", "l1", "psnr", "ssim"}
        assert s["baseline"]["fd"] < s["fd"]  # 6 steps of training are far from real images
        assert s["seconds"] > 0
    seconds = [c["scores"]["seconds"] for c in history]
    print(f"scoring a paired checkpoint (ema + raw, 200 held-out pairs): {seconds} s")


def test_best_is_the_lowest_fd_and_kept(served, paired):
    client, settings, _ = served
    job_id = paired[0]
    history = _history(client, job_id)
    want = min(history, key=lambda c: (c["scores"]["fd"], -c["step"]))
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["best_checkpoint_id"] == want["id"] and job["best_fd"] == want["scores"]["fd"]
    best = client.get(f"/v1/jobs/{job_id}/checkpoints/best").json()
    assert best["id"] == want["id"] and best["best"] is True
    # keep_checkpoints=1: the newest and the best are stored, the rest pruned
    stored = {c["step"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]}
    assert stored == {6, want["step"]}
    assert {c["step"] for c in history if c["stored"]} == stored
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/best/translations.png?n=2")
    assert r.status_code == 200 and r.headers["x-checkpoint-id"] == want["id"], r.text


def test_ema_auto_translates_with_the_translator_that_scored_better(served, paired):
    client, _, _ = served
    job_id = paired[0]
    preferred = set()
    for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]:
        base = f"/v1/jobs/{job_id}/checkpoints/{c['id']}/translations.png?n=2"
        auto, ema, raw = (client.get(f"{base}&ema={e}") for e in ("auto", "true", "false"))
        assert auto.status_code == ema.status_code == raw.status_code == 200, auto.text
        assert ema.content != raw.content  # two translators: the choice shows
        chosen = ema if c["scores"]["preferred"] == "ema" else raw
        assert auto.content == chosen.content and auto.headers["etag"] == chosen.headers["etag"]
        assert "immutable" in auto.headers["cache-control"]  # scored: auto is fixed now
        preferred.add(c["scores"]["preferred"])
    print(f"preferred translators of the stored checkpoints: {sorted(preferred)}")


def test_an_unpaired_jobs_checkpoints_are_scored_both_ways(served, unpaired):
    client, _, _ = served
    history = _history(client, unpaired)
    assert [(c["step"], c["score_status"]) for c in history] == [(2, "scored"), (4, "scored")]
    for c in history:
        s = c["scores"]
        assert s["kind"] == "unpaired" and s["num_inputs"] == {"a2b": 2, "b2a": 2}
        assert s["fd"] >= 0 and s["fd_b2a"] >= 0 and s["kid_b2a"] is not None
        assert s["l1"] is s["psnr"] is s["ssim"] is None  # no targets without pairs
        assert set(s["baseline"]) == {"fd", "kid", "kid_std", "fd_b2a", "kid_b2a", "kid_std_b2a"}
        assert s["fd"] == s[s["preferred"]]["fd"] and s["fd_b2a"] == s[s["preferred"]]["fd_b2a"]
    job = client.get(f"/v1/jobs/{unpaired}").json()
    # best follows both directions: the mean of each one's FD over its floor
    want = min(history, key=lambda c: (_both_ways(c["scores"]), -c["step"]))
    assert job["best_checkpoint_id"] == want["id"]


def _both_ways(s: dict) -> float:
    """An unpaired checkpoint's key (docs/scores.md): each direction's FD over its baseline."""
    return (s["fd"] / s["baseline"]["fd"] + s["fd_b2a"] / s["baseline"]["fd_b2a"]) / 2


# (FD over its floor A->B, B->A) of the ema and raw translators of each checkpoint: A->B alone
# favours step 4 (1.0 < 1.2) and each checkpoint's EMA; both ways favour step 2 (raw, 1.5)
# over step 4 (raw, 3.05), and each checkpoint's raw translator.
LOPSIDED = {2: {"ema": (1.2, 2.0), "raw": (1.5, 1.5)}, 4: {"ema": (1.0, 6.0), "raw": (1.1, 5.0)}}


def test_an_unpaired_jobs_best_and_ema_auto_follow_both_directions(served, monkeypatch):
    """The worker scores each checkpoint of an unpaired job, its translators' FDs set (as
    multiples of the real held-out images' floors) so that A->B and B->A disagree: best and
    ema=auto follow both directions, not A->B alone."""
    from gan_core import checkpoint as ckpt

    client, settings, _ = served
    scoring = TranslationScorer.score

    def score(self, ckpt_dir):
        step = int(ckpt.read_meta(ckpt_dir, verify=False)["step"])
        self.lopsided = iter(LOPSIDED[step].values())  # ema, then raw, as score scores them
        return scoring(self, ckpt_dir)

    def score_models(self, models):
        over_a2b, over_b2a = next(self.lopsided)
        base = self.baseline
        return {
            "fd": over_a2b * base["fd"],
            "kid": base["kid"],
            "kid_std": base["kid_std"],
            "fd_b2a": over_b2a * base["fd_b2a"],
            "kid_b2a": base["kid_b2a"],
            "kid_std_b2a": base["kid_std_b2a"],
        }

    monkeypatch.setattr(TranslationScorer, "score", score)
    monkeypatch.setattr(TranslationScorer, "score_models", score_models)
    r = upload(client, domains_zip(), filename="lopsided.zip")
    assert r.status_code == 201, r.text
    job_id = _submit(client, {**UNPAIRED, "keep_checkpoints": 2, "dataset": r.json()["id"]})
    assert _run(settings, job_id)[0] == "succeeded"
    history = {c["step"]: c for c in _history(client, job_id)}
    assert sorted(history) == [2, 4]
    for step, c in history.items():
        s = c["scores"]
        assert c["score_status"] == "scored" and s["preferred"] == "raw", c
        assert s["fd"] == s["raw"]["fd"] and s["fd"] > s["ema"]["fd"]  # A->B alone: ema
        ratios = (s["fd"] / s["baseline"]["fd"], s["fd_b2a"] / s["baseline"]["fd_b2a"])
        assert ratios == pytest.approx(LOPSIDED[step]["raw"])
    assert history[4]["scores"]["fd"] < history[2]["scores"]["fd"]  # A->B alone: step 4
    assert _both_ways(history[2]["scores"]) < _both_ways(history[4]["scores"])
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["best_checkpoint_id"] == history[2]["id"]
    assert job["best_fd"] == history[2]["scores"]["fd"]
    best = client.get(f"/v1/jobs/{job_id}/checkpoints/best").json()
    assert best["id"] == history[2]["id"] and best["best"] is True
    # ema=auto translates with the raw translator, through best
    base = f"/v1/jobs/{job_id}/checkpoints/best/translations.png?n=2&direction=b2a"
    auto, ema, raw = (client.get(f"{base}&ema={e}") for e in ("auto", "true", "false"))
    assert auto.status_code == ema.status_code == raw.status_code == 200, auto.text
    assert auto.headers["x-checkpoint-id"] == history[2]["id"]
    assert ema.content != raw.content and auto.content == raw.content


def test_each_domains_extractor_is_trained_once_and_reused(served, paired, unpaired):
    _, settings, lines = served
    folders = sorted(p.name for p in (settings.resolved_store_dir / "scorers").iterdir())
    # shapes-edges' B (two jobs, one extractor); the upload's B and A
    assert len(folders) == 3, folders
    assert all("-rotation-v" in name for name in folders)
    assert sorted(name.rsplit("-", 1)[1] for name in folders) == [
        "1x32x32",
        "3x32x32",
        "3x32x32",
    ]
    for folder in folders:
        files = (settings.resolved_store_dir / "scorers" / folder).iterdir()
        assert sorted(p.name for p in files) == ["extractor.safetensors", "reference.safetensors"]
    trained = [line for line in lines if TRAINED_ONCE in line]
    assert len(trained) == 3, lines  # not again for the second paired job


def test_what_shows_scores_shows_a_translators(served, paired):
    client, _, _ = served
    job_id = paired[1]
    history = _history(client, job_id)
    # CSV: a row per checkpoint with its FD, KID and the paired numbers
    r = client.get(f"/v1/jobs/{job_id}/metrics", headers={"Accept": "text/csv"})
    assert r.status_code == 200, r.text
    rows = [x for x in csv.DictReader(io.StringIO(r.text)) if x["kind"] == "checkpoint"]
    assert [x["step"] for x in rows] == ["2", "4", "6"]
    for row, c in zip(rows, history, strict=True):
        s = c["scores"]
        assert float(row["fd"]) == s["fd"] and float(row["ssim"]) == s["ssim"]
        assert float(row["kid_ema"]) == s["ema"]["kid"] and float(row["psnr"]) == s["psnr"]
        assert row["precision_ema"] == "" and row["fd_b2a"] == ""
    # the events: each checkpoint with its scores
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "0"}) as r:
        data = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    checkpoints = [d for d in data if "score_status" in d]
    assert [d["step"] for d in checkpoints] == [2, 4, 6]
    assert all(
        d["scores"]["fd"] == c["scores"]["fd"] for d, c in zip(checkpoints, history, strict=True)
    )
    assert all(
        d["scores"]["l1"] == c["scores"]["l1"] for d, c in zip(checkpoints, history, strict=True)
    )
    # the Python client's models read them (the union picks the translator's model)
    for item in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]:
        parsed = models.Checkpoint.model_validate(item)
        assert parsed.scores is not None and isinstance(parsed.scores.ema, models.TranslatorScores)
        assert parsed.scores.ssim == item["scores"]["ssim"]
        assert parsed.scores.ema.psnr == item["scores"]["ema"]["psnr"]
    # Prometheus: the scoring time of every scored checkpoint is in the histogram
    text = client.get("/metrics").text
    count = next(
        line
        for line in text.splitlines()
        if line.startswith("ganforge_checkpoint_score_seconds_count")
    )
    assert float(count.split()[-1]) >= 6  # the two paired jobs' checkpoints at least


def test_a_scoring_failure_never_fails_the_job(served, monkeypatch):
    client, settings, _ = served

    def broken(self, models):
        raise RuntimeError("the scorer broke (injected)")

    monkeypatch.setattr(TranslationScorer, "score_models", broken)
    job_id = _submit(client, {**PAIRED, "steps": 4, "seed": 7})
    assert _run(settings, job_id)[0] == "succeeded"
    history = _history(client, job_id)  # all of them: unscored ones are not kept as best
    assert [(c["step"], c["score_status"]) for c in history] == [(2, "failed"), (4, "failed")]
    assert all("the scorer broke" in c["scores"]["error"] for c in history)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["best_checkpoint_id"] is None and job["error"] is None

    def no_scorer(self, data, device):
        raise OSError("the store is unreadable (injected)")

    monkeypatch.setattr("app.core.serving.scores.Scorers.for_translation", no_scorer)
    job_id = _submit(client, {**PAIRED, "steps": 2, "seed": 8})
    assert _run(settings, job_id)[0] == "succeeded"
    assert [(c["step"], c["score_status"]) for c in _history(client, job_id)] == [(2, "off")]


def test_a_checkpoint_left_unscored_by_a_shutdown_is_scored_by_the_resuming_worker(
    served, paired, monkeypatch
):
    """SHUTDOWN while the first checkpoint is scored: the scoring is abandoned, the job goes
    back to the queue with that checkpoint pending; the next run scores it before training on,
    and best ends up as if nothing had happened."""
    from worker.hooks import SHUTDOWN

    client, settings, _ = served
    scoring = TranslationScorer.score
    abandoned = threading.Event()

    def interrupted(self, ckpt_dir):
        SHUTDOWN.set()  # as a SIGTERM would, while this checkpoint is scored
        abandoned.wait(30)
        raise RuntimeError("abandoned")

    job_id = _submit(client, {**PAIRED, "seed": 3})
    monkeypatch.setattr(TranslationScorer, "score", interrupted)
    try:
        assert _run(settings, job_id)[0] == "released"
    finally:
        abandoned.set()
        SHUTDOWN.clear()
    monkeypatch.setattr(TranslationScorer, "score", scoring)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["best_checkpoint_id"] is None, job
    (left,) = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    assert (left["step"], left["score_status"], left["scores"]) == (2, "pending", None)

    assert _run(settings, job_id)[0] == "succeeded"
    history = _history(client, job_id)
    assert [(c["step"], c["score_status"]) for c in history] == [
        (2, "scored"),
        (4, "scored"),
        (6, "scored"),
    ]
    want = min(history, key=lambda c: (c["scores"]["fd"], -c["step"]))
    assert client.get(f"/v1/jobs/{job_id}").json()["best_checkpoint_id"] == want["id"]
