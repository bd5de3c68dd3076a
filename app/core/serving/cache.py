"""Small in-process caches: an LRU that loads each key once, and a short-lived TTL map."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRU(Generic[V]):
    """A thread-safe LRU whose loader runs at most once per key at a time.

    Bounded by entries, and with ``weigh`` also by their total weight (e.g. bytes): rendered
    PNGs range from a few kB to tens of MB, so a count alone bounds nothing.
    """

    def __init__(
        self,
        capacity: int,
        *,
        max_weight: int | None = None,
        weigh: Callable[[V], int] | None = None,
    ):
        self.capacity = capacity
        self.max_weight, self.weigh = max_weight, weigh
        self.weight = 0
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self.loads = 0  # how many times a loader ran (tests and benchmarks read it)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def _weight(self, value: V) -> int:
        return self.weigh(value) if self.weigh is not None else 0

    def put(self, key: Hashable, value: V) -> None:
        if self.capacity <= 0:
            return
        if self.max_weight is not None and self._weight(value) > self.max_weight:
            return  # larger than the whole cache: not kept
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.weight -= self._weight(old)
            self._items[key] = value
            self.weight += self._weight(value)
            while len(self._items) > self.capacity or (
                self.max_weight is not None and self.weight > self.max_weight
            ):
                _, evicted = self._items.popitem(last=False)
                self.weight -= self._weight(evicted)

    def get_or_load(self, key: Hashable, loader: Callable[[], V]) -> V:
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # only callers of this key wait; others proceed
            value = self.get(key)
            if value is None:
                value = loader()
                self.loads += 1
                self.put(key, value)
        with self._lock:
            self._key_locks.pop(key, None)
        return value

    def __len__(self) -> int:
        return len(self._items)


class TTLCache(Generic[V]):
    """Values remembered for ``ttl`` seconds (then looked up again); bounded in size."""

    def __init__(self, ttl: float, size: int = 10_000):
        self.ttl, self.size = ttl, size
        self._items: dict[Hashable, tuple[V, float]] = {}

    def get(self, key: Hashable) -> V | None:
        hit = self._items.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def discard_where(self, predicate: Callable[[V], bool]) -> None:
        """Forget every entry whose value matches (e.g. all tokens of a revoked key)."""
        for key, (value, _) in list(self._items.items()):
            if predicate(value):
                self._items.pop(key, None)

    def put(self, key: Hashable, value: V) -> None:
        if len(self._items) >= self.size:  # crude but bounded: start over
            self._items.clear()
        self._items[key] = (value, time.monotonic() + self.ttl)
