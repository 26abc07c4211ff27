"""A loop-lag probe for the benchmarks: how late the event loop runs a task that sleeps 1 ms.

What a verify request queued on the loop would wait through while the code under measurement
holds the loop (wall time: noisy on a shared machine, so the benchmarks report CPU time too).

    async with LoopLag() as lag:
        await work()
    print(lag.longest, lag.probes)
"""

from __future__ import annotations

import asyncio


class LoopLag:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._probe())
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._done.set()
        if self._task is not None:
            await self._task

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._done.is_set():
            before = loop.time()
            await asyncio.sleep(0.001)
            self.lags.append(loop.time() - before - 0.001)

    @property
    def longest(self) -> float:
        return max(self.lags, default=0.0)

    @property
    def probes(self) -> int:
        return len(self.lags)
