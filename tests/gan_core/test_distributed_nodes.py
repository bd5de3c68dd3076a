"""Data-parallel training across hosts: two ``torchrun`` launchers, each a "node" of one
process, meet at a c10d rendezvous endpoint on loopback and run ``ganforge train`` as one
group, as two machines would (docs/configuration.md, "Across machines"). c10d, not the
static --master-addr form, because it is what multi-host users run; it needs no network
beyond the endpoint, so it works offline.

Each node gets its own --out, as a host with a local disk would: only rank 0 writes there.
c10d ranks nodes by (host name, launcher pid), not by --node-rank, so either node may be rank
0; the test finds out which. Every launcher runs in its own session and is killed with its
workers (which torchrun starts in sessions of their own, so they outlive a launcher killed
alone) when the test ends, pass or fail."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gan_core.checkpoint import latest_checkpoint, load_checkpoint, read_meta
from tests.dist_ranks import TINY, different

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds a node's processes in /proc"
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = TINY | {"steps": 6, "checkpoint_every": 6}
# a machine loaded by other tests can take tens of seconds to start two torchruns and their
# ranks (a pair took 13 s on a busy 2-core box); a hang still fails well within it
FINISH_S = 180.0


def sets(config: dict) -> list[str]:
    return [f"--set={k}={json.dumps(v)}" for k, v in config.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One "host": a torchrun launcher with one rank running ``ganforge train``."""

    def __init__(self, node: int, endpoint: str, run_id: str, out: Path, config: dict):
        self.out, self.log = out, out.with_suffix(".log")
        cmd = [
            *(sys.executable, "-m", "torch.distributed.run"),
            *("--nnodes", "2", "--nproc-per-node", "1", "--max-restarts", "0"),
            *("--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", run_id),
            # on real hosts the endpoint's host finds it is the host by its name; on loopback
            # both would match 127.0.0.1, so say which one serves the rendezvous store
            *("--rdzv-conf", f"is_host={int(node == 0)},join_timeout=120"),
            *("-m", "app.cli", "train", "--out", str(out), "--no-progress", *sets(config)),
        ]
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"node still running after {timeout_s:g} s:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the launcher and every process under it, as a host that goes down."""
        pids = [self.proc.pid, *descendants(self.proc.pid)]  # before they lose their parent
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()


def descendants(pid: int) -> list[int]:
    """The processes under pid (its children, theirs, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


@pytest.fixture
def start_nodes(tmp_path) -> Iterator:
    """start_nodes(config) -> [node 0, node 1], at a fresh rendezvous; both are killed after
    the test (those that finished, already gone, are unaffected)."""
    started: list[Node] = []

    def start(config: dict) -> list[Node]:
        endpoint, run_id = f"127.0.0.1:{free_port()}", uuid.uuid4().hex
        for node in range(2):
            started.append(Node(node, endpoint, run_id, tmp_path / f"node{node}", config))
        return started[-2:]

    yield start
    for node in started:
        if node.proc.poll() is None:
            node.kill()


def checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of run_dir's latest checkpoint: G and the EMA G (generator/), D, the
    optimizers, the batcher and the RNG states (state/)."""
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None, run_dir
    _, gen, state = load_checkpoint(ckpt)
    return {f"generator/{k}": v for k, v in gen.items()} | {
        f"state/{k}": v for k, v in state.items()
    }


def test_two_torchrun_nodes_train_as_devices_2_does_in_one_process(tmp_path, start_nodes):
    nodes = start_nodes(CONFIG)
    deadline = time.monotonic() + FINISH_S
    while any(n.proc.poll() is None for n in nodes):  # fail at the first node that fails
        failed = [n for n in nodes if n.proc.poll()]
        assert not failed and time.monotonic() < deadline, [n.output()[-3000:] for n in nodes]
        time.sleep(0.2)
    assert [n.proc.returncode for n in nodes] == [0, 0], [n.output()[-3000:] for n in nodes]
    # rank 0 alone writes checkpoints and reports; the other rank's --out stays empty
    writers = [n for n in nodes if latest_checkpoint(n.out) is not None]
    assert len(writers) == 1, [n.out for n in nodes]
    (writer,) = writers
    assert "succeeded at step 6" in writer.output()
    other = nodes[1 - nodes.index(writer)]
    assert "succeeded" not in other.output()
    assert list(other.out.glob("checkpoints/*")) == []
    assert read_meta(latest_checkpoint(writer.out))["config"]["devices"] == 2

    # the same config on two ranks started in one process by `ganforge train --devices 2`,
    # one torch thread per rank as under torchrun with OMP_NUM_THREADS=1: the same maths
    from app.cli import main

    reference, threads = tmp_path / "devices2", torch.get_num_threads()
    torch.set_num_threads(2)  # launch gives each of 2 CPU ranks threads // 2
    try:
        args = ["train", "--out", str(reference), "--no-progress", "--devices", "2"]
        assert main([*args, *sets(CONFIG)]) == 0
    finally:
        torch.set_num_threads(threads)
    across, here = checkpoint_tensors(writer.out), checkpoint_tensors(reference)
    for net in ("generator/G.", "generator/G_ema.", "state/D.", "state/opt_d."):
        assert any(k.startswith(net) for k in across), (net, sorted(across))
    # bit for bit: G, D, EMA G, optimizer states, the data order and RNG states
    assert different(across, here) == []


def test_a_node_that_goes_down_fails_the_other_within_seconds(tmp_path, start_nodes):
    # long enough that it cannot finish before the kill; checkpoints show it is under way
    node0, node1 = start_nodes(CONFIG | {"steps": 100_000, "checkpoint_every": 4})
    deadline = time.monotonic() + FINISH_S
    while not any(latest_checkpoint(n.out) for n in (node0, node1)):
        assert time.monotonic() < deadline, node0.output()[-3000:] + node1.output()[-3000:]
        assert node0.proc.poll() is None and node1.proc.poll() is None
        time.sleep(0.2)
    # the rendezvous host, with its rank and the store the launchers share (killing node 1
    # instead ends node 0 alike: 2.8 s against 1.3 s for this, measured once)
    node0.kill()
    killed = time.monotonic()
    code = node1.wait(60)
    assert code != 0, node1.output()[-3000:]
    assert time.monotonic() - killed < 60
    assert "by peer" in node1.output()  # gloo saw its peer go ("Connection closed/reset")
