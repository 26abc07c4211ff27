"""A small bounded in-process cache with a time-to-live, for the verify hot path.

Oldest entries are evicted first when full (insertion order of a dict), which is enough for
license lookups whose entries live seconds; no lock is needed on one event loop.

An optional `tag` function files each entry under a tag as well (the license cache: the license
id), so that forgetting everything of one tag costs the entries it has, not a scan of the whole
cache: with 100,000 cached licenses a scan blocked the event loop for milliseconds on every
activation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class TtlCache(Generic[K, V]):
    def __init__(
        self,
        ttl: float,
        size: int,
        clock: Callable[[], float] = time.monotonic,
        tag: Callable[[V], Hashable] | None = None,
    ) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._tag = tag
        self._items: dict[K, tuple[float, V, Hashable]] = {}
        self._by_tag: dict[Hashable, set[K]] = {}
        self.hits = self.misses = 0  # read by the metrics (web/metrics.py)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key, _MISSING)
        if item is _MISSING:
            self.misses += 1
            return None
        expires, value, _ = item  # type: ignore[misc]
        if expires < self._clock():
            self._remove(key)
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        if self._ttl <= 0 or self._size <= 0:
            return
        self._remove(key)
        while len(self._items) >= self._size:
            self._remove(next(iter(self._items)))
        tag = None if self._tag is None else self._tag(value)
        self._items[key] = (self._clock() + self._ttl, value, tag)
        if tag is not None:
            self._by_tag.setdefault(tag, set()).add(key)

    def discard_tag(self, tag: Hashable) -> None:
        """Drop every entry filed under `tag` (needs the `tag` function)."""
        for key in self._by_tag.pop(tag, ()):
            del self._items[key]

    def clear(self) -> None:
        self._items.clear()
        self._by_tag.clear()

    def _remove(self, key: K) -> None:
        item = self._items.pop(key, None)
        if item is None or item[2] is None:
            return
        keys = self._by_tag[item[2]]
        keys.discard(key)
        if not keys:
            del self._by_tag[item[2]]
