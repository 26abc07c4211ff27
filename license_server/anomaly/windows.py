"""Sliding windows in memory with bounded size: the detectors' only state.

Every map here is keyed by something a client chooses (a network, the hash of an unknown key,
a domain) or by a license id, so every map has a cap and drops its oldest entry when full
(ASVS 4.0.3 V11.1.4, anti-automation; V1.11.2 / resource exhaustion): a flood of distinct keys
or addresses costs the detectors a bounded amount of memory and O(1) work per attempt. What a
cap drops is counted (`evicted`), so a detector that was made to forget can say so.

Windows are bucketed (`WindowCounter`: a window of W in 10 buckets slides by W/10), which keeps
an update O(1) amortised; the count is exact to within one bucket at the old edge.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)

BUCKETS = 10
SWEEP_SLICE = 2_000  # keys examined between two yields of a stepwise sweep


class WindowCounter(Generic[K]):
    """How many events per key within the last `window_ms` (bucketed), at most `cap` keys."""

    __slots__ = ("_bucket_ms", "_entries", "cap", "evicted", "window_ms")

    def __init__(self, window_ms: int, cap: int) -> None:
        self.window_ms = window_ms
        self._bucket_ms = max(1, window_ms // BUCKETS)
        self.cap = cap
        self.evicted = 0
        # key -> [total, deque of [bucket, count]]
        self._entries: dict[K, list] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: K, at_ms: int, n: int = 1) -> int:
        """Count `n` events of `key` at `at_ms`; returns the key's count in the window."""
        bucket = at_ms // self._bucket_ms
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.cap:
                del self._entries[next(iter(self._entries))]
                self.evicted += 1
            entry = self._entries[key] = [0, deque()]
        buckets: deque = entry[1]
        oldest = bucket - BUCKETS + 1
        while buckets and buckets[0][0] < oldest:
            entry[0] -= buckets.popleft()[1]
        if buckets and buckets[-1][0] >= bucket:
            buckets[-1][1] += n  # attempts commit a little out of order: the newest bucket
        else:
            buckets.append([bucket, n])
        entry[0] += n
        return entry[0]

    def count(self, key: K, now_ms: int) -> int:
        entry = self._entries.get(key)
        if entry is None:
            return 0
        oldest = now_ms // self._bucket_ms - BUCKETS + 1
        return sum(n for b, n in entry[1] if b >= oldest)

    def sweep(self, now_ms: int) -> int:
        """Drop keys with nothing left in the window; returns how many."""
        oldest = now_ms // self._bucket_ms - BUCKETS + 1
        stale = [key for key, entry in self._entries.items() if entry[1][-1][0] < oldest]
        for key in stale:
            del self._entries[key]
        return len(stale)

    def sweep_steps(self, now_ms: int) -> Iterator[None]:
        """`sweep` in slices of SWEEP_SLICE keys, yielding between them (the caller gives the
        event loop back there); an entry updated meanwhile is kept."""
        oldest = now_ms // self._bucket_ms - BUCKETS + 1
        entries = self._entries
        keys = list(entries)
        for first in range(0, len(keys), SWEEP_SLICE):
            for key in keys[first : first + SWEEP_SLICE]:
                entry = entries.get(key)
                if entry is not None and entry[1][-1][0] < oldest:
                    del entries[key]
            yield


class WindowSet(Generic[K, V]):
    """The distinct values seen per key within the last `window_ms`, with when each was last
    seen. At most `cap` keys and `per_key` values per key (the oldest value makes room)."""

    __slots__ = ("_entries", "cap", "evicted", "per_key", "window_ms")

    def __init__(self, window_ms: int, cap: int, per_key: int) -> None:
        self.window_ms = window_ms
        self.cap = cap
        self.per_key = per_key
        self.evicted = 0
        self._entries: dict[K, dict[V, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: K, value: V, at_ms: int) -> int | None:
        """Note `value` for `key`; returns the number of distinct values in the window when
        `value` is new to it (the only time the number can grow), else None."""
        values = self._entries.get(key)
        if values is None:
            if len(self._entries) >= self.cap:
                del self._entries[next(iter(self._entries))]
                self.evicted += 1
            values = self._entries[key] = {}
        seen = values.get(value)
        if seen is not None:
            if at_ms > seen:
                values[value] = at_ms
            return None
        cutoff = at_ms - self.window_ms
        expired = [v for v, last in values.items() if last < cutoff]
        for v in expired:
            del values[v]
        if len(values) >= self.per_key:
            del values[next(iter(values))]
        values[value] = at_ms
        return len(values)

    def values(self, key: K, now_ms: int) -> dict[V, int]:
        """The values of `key` seen within the window, with when each was last seen."""
        cutoff = now_ms - self.window_ms
        return {v: last for v, last in self._entries.get(key, {}).items() if last >= cutoff}

    def items(self) -> Iterator[tuple[K, dict[V, int]]]:
        return iter(self._entries.items())

    def sweep(self, now_ms: int) -> int:
        cutoff = now_ms - self.window_ms
        stale = [k for k, values in self._entries.items() if max(values.values()) < cutoff]
        for key in stale:
            del self._entries[key]
        return len(stale)

    def sweep_steps(self, now_ms: int) -> Iterator[None]:
        """`sweep` in slices of SWEEP_SLICE keys (see WindowCounter.sweep_steps)."""
        cutoff = now_ms - self.window_ms
        entries = self._entries
        keys = list(entries)
        for first in range(0, len(keys), SWEEP_SLICE):
            for key in keys[first : first + SWEEP_SLICE]:
                values = entries.get(key)
                if values is not None and max(values.values()) < cutoff:
                    del entries[key]
            yield


def admit(mapping: dict, cap: int) -> None:
    """Make room for one more key in `mapping` (drop the oldest inserted) when it is full."""
    if len(mapping) >= cap:
        del mapping[next(iter(mapping))]
