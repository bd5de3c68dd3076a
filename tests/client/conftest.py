"""One real embedded `ganforge serve` per test module, and a Client of it.

A module can set ``SERVER_ENV`` (a dict of GANFORGE_* settings) for its server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ganforge_client import Client
from tests.integration.conftest import Stack

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def server(request, tmp_path_factory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("client"), None)
    stack.env.update(
        {
            "GANFORGE_SCORE_SAMPLES": "0",
            "GANFORGE_PROGRESS_INTERVAL": "0.2",
            "GANFORGE_MAX_JOBS_PER_OWNER": "20",
            **getattr(request.module, "SERVER_ENV", {}),
        }
    )
    stack.start_api()
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def key(server: Stack) -> str:
    return (server.tmp / ".ganforge" / "admin-key").read_text().strip()


@pytest.fixture
def client(server: Stack, key: str) -> Iterator[Client]:
    with Client(server.url, key) as c:
        yield c


@pytest.fixture(scope="module")
def cli_env(server: Stack, key: str) -> dict[str, str]:
    """The environment a user of the remote verbs has: only the server's URL and key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANFORGE_")}
    path = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])  # the checkout's
    env.update({"GANFORGE_URL": server.url, "GANFORGE_KEY": key, "PYTHONPATH": path})
    return env
