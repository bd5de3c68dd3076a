"""The remote verbs (`ganforge jobs|datasets|samples`) as a user runs them: subprocesses
against a real server, configured only by GANFORGE_URL/GANFORGE_KEY; `jobs watch` also
under a pseudo-terminal, where it draws a tqdm bar."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time

import numpy as np
import pytest
from PIL import Image

from ganforge_client import Client, JobCanceled
from tests.integration.conftest import free_port
from tests.tiny import tiny

pytestmark = pytest.mark.integration


def gf(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def ok(env: dict[str, str], *args: str) -> str:
    out = gf(env, *args)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


class Terminal:
    """A command on a pseudo-terminal (120 columns), its output collected as it comes."""

    def __init__(self, env: dict[str, str], *args: str):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            env={**env, "TERM": "xterm"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.master, self.chunks = master, list[bytes]()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the command closed its terminal
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait(self, timeout: float = 90) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"still running:\n{self.output}") from None
        self.reader.join(5)
        os.close(self.master)
        return rc


def test_datasets_upload_list_show_delete(cli_env, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.npz"
    np.savez(path, x=rng.integers(0, 256, (64, 16, 16), dtype=np.uint8))
    ds = json.loads(ok(cli_env, "datasets", "upload", str(path), "--name", "noise", "--json"))
    assert (ds["name"], ds["kind"], ds["num_images"]) == ("noise", "npz", 64)
    listed = json.loads(ok(cli_env, "datasets", "list", "--json"))
    assert ds["id"] in [d["id"] for d in listed] and "shapes" in [d["id"] for d in listed]
    table = ok(cli_env, "datasets", "list").splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "KIND"]
    assert any(line.startswith(ds["id"]) for line in table)
    assert json.loads(ok(cli_env, "datasets", "show", ds["id"], "--json"))["id"] == ds["id"]
    assert ok(cli_env, "datasets", "delete", ds["id"]).strip() == f"deleted {ds['id']}"

    term = Terminal(cli_env, "datasets", "upload", str(path))  # on a terminal: a byte bar
    assert term.wait() == 0, term.output
    assert "%|" in term.output and "uploaded ds_" in term.output


def test_create_watch_list_show_and_sample(cli_env, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(tiny(steps=999)))
    job = json.loads(
        ok(
            cli_env,
            *("jobs", "create", "--config", str(config), "--set", "steps=60"),
            *("--set", "checkpoint_every=30", "--name", "from-cli", "--json"),
        )
    )
    assert job["status"] == "queued" and job["name"] == "from-cli"
    assert (job["config"]["steps"], job["config"]["g_width"]) == (60, 8)  # file, then --set

    term = Terminal(cli_env, "jobs", "watch", job["id"])
    assert term.wait() == 0, term.output
    assert "%|" in term.output and "60/60" in term.output  # tqdm's bar, at the end
    assert "checkpoint ckpt_" in term.output and f"{job['id']} succeeded" in term.output

    plain = ok(cli_env, "jobs", "watch", job["id"])  # not a terminal: lines, no bar
    assert "%|" not in plain and f"{job['id']} succeeded at step 60/60" in plain
    assert json.loads(ok(cli_env, "jobs", "watch", job["id"], "--json"))["status"] == "succeeded"

    assert [j["id"] for j in json.loads(ok(cli_env, "jobs", "list", "--limit", "1", "--json"))] == [
        job["id"]
    ]
    table = ok(cli_env, "jobs", "list", "--status", "succeeded").splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "STATUS"] and job["id"] in table[1]
    shown = json.loads(ok(cli_env, "jobs", "show", job["id"], "--json"))
    assert shown["status"] == "succeeded" and shown["progress"]["step"] == 60
    assert "step 60/60" in ok(cli_env, "jobs", "show", job["id"])

    grid = tmp_path / "grid.png"
    report = json.loads(
        ok(cli_env, "samples", job["id"], "--n", "4", "--nrow", "2", "-o", str(grid), "--json")
    )
    assert Image.open(grid).size == (2 * 18 + 2, 2 * 18 + 2)
    assert report["step"] == 60 and report["bytes"] == grid.stat().st_size
    older = tmp_path / "older.png"
    with Client(cli_env["GANFORGE_URL"], cli_env["GANFORGE_KEY"]) as c:
        step30 = [k.id for k in c.list_checkpoints(job["id"]) if k.step == 30][0]
    said = ok(
        cli_env,
        *("samples", job["id"], "--checkpoint", step30, "--n", "4", "--seed", "3"),
        *("--ema", "false", "--truncation", "0.7", "-o", str(older)),
    )
    assert step30 in said and "(step 30)" in said and older.read_bytes() != grid.read_bytes()


def test_watch_fails_for_a_canceled_job_then_resume_cancel_delete(cli_env):
    with Client(cli_env["GANFORGE_URL"], cli_env["GANFORGE_KEY"]) as c:
        job = c.create_job(tiny(steps=200_000, checkpoint_every=50))
        term = Terminal(cli_env, "jobs", "watch", job.id)
        deadline = time.monotonic() + 60
        while c.get_job(job.id).progress.step < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        c.cancel_job(job.id)  # while watch runs
        assert term.wait() == 1, term.output
        assert "%|" in term.output and f"{job.id} canceled" in term.output
        step = c.get_job(job.id).progress.step

        resumed = json.loads(
            ok(cli_env, "jobs", "resume", job.id, "--steps", str(step + 100_000), "--json")
        )
        assert resumed["status"] == "queued"
        assert resumed["progress"]["total_steps"] == step + 100_000
        said = ok(cli_env, "jobs", "cancel", job.id)
        assert job.id in said and "cancel" in said
        with pytest.raises(JobCanceled):
            c.wait(job.id, timeout=60)
        plain = gf(cli_env, "jobs", "watch", job.id)
        assert plain.returncode == 1 and f"{job.id} canceled" in plain.stdout

        assert json.loads(ok(cli_env, "jobs", "delete", job.id, "--json")) == {
            "id": job.id,
            "deleted": True,
        }
        gone = gf(cli_env, "jobs", "show", job.id)
        assert gone.returncode == 2 and gone.stderr.startswith("error: job ")


def test_errors_usage_and_an_unreachable_server(cli_env, tmp_path):
    bad = gf(cli_env, "jobs", "create", "--set", "image_size=100")
    assert bad.returncode == 2 and bad.stderr.startswith("error: config.image_size")
    assert "field: config.image_size" in bad.stderr and not bad.stdout

    usage = gf(cli_env, "jobs", "create", "--set", "steps")
    assert usage.returncode == 2 and "FIELD=VALUE" in usage.stderr
    assert gf(cli_env, "jobs").returncode == 2  # a verb is required
    assert gf(cli_env, "jobs", "list", "--limit", "0").returncode == 2

    key_flag = gf({**cli_env, "GANFORGE_KEY": ""}, "jobs", "list", "--key", "gf_key_no_no")
    assert key_flag.returncode == 2 and "API key" in key_flag.stderr
    assert "ps" in ok(cli_env, "jobs", "list", "--help")  # why --key is the second choice

    url = f"http://127.0.0.1:{free_port()}"
    down = gf(cli_env, "datasets", "list", "--url", url)
    assert down.returncode == 2 and url in down.stderr and "connection refused" in down.stderr

    missing = gf(cli_env, "samples", "job_0000000000000000", "-o", str(tmp_path / "x.png"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_running_jobs_line_says_why_its_step_stands_still():
    """The server's progress.phase (e.g. preparing_scorer at step 0) shows in the watch line."""
    from ganforge_client.models import Job
    from ganforge_client.output import progress_text

    def line(phase: str | None, status: str = "running") -> str:
        progress = {"step": 0, "total_steps": 100, "phase": phase}
        return progress_text(
            Job.model_validate({"id": "job_1", "status": status, "progress": progress})
        )

    assert "preparing scorer" in line("preparing_scorer")
    assert "handing back" in line("handing_back")
    assert "training" not in line("training")
    assert "preparing" not in line("preparing_scorer", status="queued")


def test_datasets_upload_of_pairs_with_pairing(cli_env, tmp_path):
    """`datasets upload --pairing`: the same A/ + B/ zip read as pairs by name, or as two
    domains when asked; the line says which, and the hint is a translation job's."""
    from tests.api.test_pair_uploads import pairs_zip

    path = tmp_path / "edges.zip"
    path.write_bytes(pairs_zip(n=6))
    out = ok(cli_env, "datasets", "upload", str(path))
    assert "(edges, paired): 6 images" in out and "paired, 2 held out" in out, out
    assert "jobs create --set kind=paired --set dataset=ds_" in out, out
    unpaired = ok(cli_env, "datasets", "upload", str(path), "--pairing", "unpaired")
    assert "jobs create --set kind=unpaired --set dataset=ds_" in unpaired, unpaired
    two = json.loads(
        ok(cli_env, "datasets", "upload", str(path), "--pairing", "unpaired", "--json")
    )
    assert (two["kind"], two["pairing"]) == ("unpaired", "unpaired"), two
    assert set(two["domains"]) == {"A", "B"}, two
