"""A small bounded in-process cache with a time-to-live, for the verify hot path.

Oldest entries are evicted first when full (insertion order of a dict), which is enough for
license lookups whose entries live seconds; no lock is needed on one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        item = self._items.get(key, _MISSING)
        if item is _MISSING:
            return None
        expires, value = item  # type: ignore[misc]
        if expires < self._clock():
            del self._items[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self._ttl <= 0 or self._size <= 0:
            return
        self._items.pop(key, None)
        while len(self._items) >= self._size:
            del self._items[next(iter(self._items))]
        self._items[key] = (self._clock() + self._ttl, value)

    def discard_where(self, predicate: Callable[[K, V], bool]) -> None:
        for key in [k for k, (_, v) in self._items.items() if predicate(k, v)]:
            del self._items[key]

    def clear(self) -> None:
        self._items.clear()
