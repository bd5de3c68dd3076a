"""Who renders next: render slots granted round-robin across owners, and identical renders shared.

Renders are CPU-bound and the machine has few cores, so only ``slots`` run at once. With a
plain semaphore the waiters are served first come, first served: one owner's six n=256
requests made another owner's n=4 request wait for all six (20 s instead of 50 ms). Here each
owner has its own queue and a freed slot goes to the waiting owner served least recently;
renders are cut into
chunks that each take a slot, so a large render yields between chunks. Everything runs on
the event loop; no lock is needed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class FairSlots:
    """``slots`` concurrent holders; waiters are served one owner at a time, in turn."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError("need at least one slot")
        self.free = slots
        self._queues: dict[Hashable, deque[asyncio.Future[None]]] = {}
        self._served: dict[Hashable, int] = {}  # owner -> number of its latest grant
        self._grants = 0
        # ("wait" | "grant", owner), newest last: what tests and benchmarks read
        self.log: deque[tuple[str, Hashable]] = deque(maxlen=1000)

    @asynccontextmanager
    async def slot(self, owner: Hashable) -> AsyncIterator[None]:
        await self._acquire(owner)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, owner: Hashable) -> None:
        if self.free > 0 and not self._queues:
            self.free -= 1
            self._note(owner)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(owner, deque()).append(waiter)
        self.log.append(("wait", owner))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted, but the caller went away: pass the slot on
            else:
                self._forget(owner, waiter)
            raise

    def _release(self) -> None:
        self.free += 1
        while self.free > 0 and self._queues:
            # The waiting owner whose last turn is longest ago (or who never had one).
            owner = min(self._queues, key=lambda o: self._served.get(o, -1))
            queue = self._queues[owner]
            waiter = queue.popleft()
            if not queue:
                del self._queues[owner]
            if not waiter.done():
                self.free -= 1
                self._note(owner)
                waiter.set_result(None)

    def _forget(self, owner: Hashable, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(owner)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[owner]

    def _note(self, owner: Hashable) -> None:
        self._grants += 1
        self._served[owner] = self._grants
        if len(self._served) > 10_000:  # forget owners long gone
            self._served = {o: n for o, n in self._served.items() if n > self._grants - 1000}
        self.log.append(("grant", owner))

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())


class SingleFlight(Generic[T]):
    """Concurrent calls with the same key share one run of the work: its result or its error.

    The work runs as its own task, so a client that goes away neither cancels it for the
    others waiting on it nor wastes it: it finishes (and fills the caches) regardless.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[T]] = {}
        self.runs = 0  # how many times work actually ran (tests and benchmarks read it)

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._running[key] = task
            self.runs += 1
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    def _done(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so nobody waiting is not an unhandled error
