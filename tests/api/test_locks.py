"""Fleet-wide locks in the database: work one process does while the others wait for it."""

from __future__ import annotations

import threading
import time

from app.core.db import migrate
from app.core.jobs import locks


def test_concurrent_callers_build_once_and_all_get_the_result(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    built: list[str] = []
    result: dict[str, str] = {}
    results: list[str] = []

    def build(who: str) -> str:
        built.append(who)
        time.sleep(0.3)  # long enough for the others to find the lock taken
        result["value"] = f"made by {who}"
        return result["value"]

    def caller(who: str) -> None:
        results.append(
            locks.load_or_build(
                url,
                "thing",
                who,
                load=lambda: result.get("value"),
                build=lambda: build(who),
                poll=0.05,
            )
        )

    threads = [threading.Thread(target=caller, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(built) == 1 and results == [f"made by {built[0]}"] * 4


def test_a_lock_left_by_a_dead_holder_expires(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    migrate(url)
    assert locks.try_acquire(url, "thing", "dead", ttl=0.2)  # its holder dies holding it
    assert not locks.try_acquire(url, "thing", "alive", ttl=60)
    time.sleep(0.3)
    assert locks.try_acquire(url, "thing", "alive", ttl=60)  # taken over after the lease
    locks.release(url, "thing", "alive")
    assert locks.try_acquire(url, "thing", "next", ttl=60)
