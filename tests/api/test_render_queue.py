"""Render slots shared fairly across owners, and identical renders run once."""

from __future__ import annotations

import asyncio

import pytest

from app.core.serving.render_queue import FairSlots, SingleFlight


def test_a_freed_slot_goes_to_the_owner_served_least_recently():
    async def main() -> list[str]:
        slots = FairSlots(1)
        order: list[str] = []
        gate = asyncio.Event()

        async def render(owner: str, name: str) -> None:
            async with slots.slot(owner):
                order.append(name)
                await gate.wait()

        tasks = [asyncio.create_task(render("a", f"a{i}")) for i in range(4)]
        await asyncio.sleep(0)  # a0 holds the slot, a1..a3 wait
        tasks += [asyncio.create_task(render("b", "b0")), asyncio.create_task(render("c", "c0"))]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks)
        return order

    # first come first served would run a1, a2, a3 before b0 and c0
    assert asyncio.run(main()) == ["a0", "b0", "c0", "a1", "a2", "a3"]


def test_a_waiter_that_goes_away_does_not_lose_the_slot():
    async def main() -> None:
        slots = FairSlots(1)
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with slots.slot("a"):
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await held.wait()
        quitter = asyncio.create_task(slots.slot("b").__aenter__())
        await asyncio.sleep(0)
        quitter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await quitter
        release.set()
        await holder
        async with slots.slot("c"):  # free again, not leaked to the canceled waiter
            assert slots.free == 0
        assert slots.free == 1 and slots.waiting == 0

    asyncio.run(main())


def test_identical_concurrent_work_runs_once_and_survives_a_caller_leaving():
    async def main() -> None:
        flight: SingleFlight[int] = SingleFlight()
        started = asyncio.Event()
        finish = asyncio.Event()

        async def work() -> int:
            started.set()
            await finish.wait()
            return 42

        first = asyncio.create_task(flight.run("k", work))
        await started.wait()
        others = [asyncio.create_task(flight.run("k", work)) for _ in range(31)]
        await asyncio.sleep(0)
        first.cancel()  # the first client hangs up; the others still get the result
        finish.set()
        assert await asyncio.gather(*others) == [42] * 31
        assert flight.runs == 1
        assert await flight.run("k", work) == 42 and flight.runs == 2  # done: a new run

    asyncio.run(main())
