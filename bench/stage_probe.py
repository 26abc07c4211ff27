#!/usr/bin/env python3
"""Launcher used by bench/stage_cpu.py: runs a server script with CPU probes around named stages.

    STAGE_SPEC='[["module", "Class.method", "label", "sync|async"], ...]' STAGE_OUT=out.json \\
        python bench/stage_probe.py run.py serve

Each named function is wrapped, before the script runs, so that the event-loop thread's CPU
time inside it (`time.thread_time_ns`: on-CPU time only, unlike a sampling profiler's wall
clock, which also counts the time the thread sat preempted) is added to its label, minus the
time spent in other wrapped stages it calls (self time). Only functions that do not suspend
may be wrapped: an `async` stage that awaits something slow would count other tasks' time.
SIGUSR1 starts counting; SIGUSR2 stops and writes the sums, the calls, the thread's CPU time
over the window and the cost of one pair of probes (each `thread_time_ns` is a system call)
to STAGE_OUT. Never used by the server itself.
"""

from __future__ import annotations

import collections
import functools
import importlib
import json
import os
import runpy
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_now = time.thread_time_ns
_spent: collections.Counter[str] = collections.Counter()
_calls: collections.Counter[str] = collections.Counter()
_stack: list[list] = []  # [label, when its current self-time segment began]
_state = {"on": False, "started": 0}
_main = threading.main_thread().ident


def _enter(label: str) -> None:
    now = _now()
    if _stack:
        top = _stack[-1]
        _spent[top[0]] += now - top[1]
    _stack.append([label, now])


def _leave() -> None:
    now = _now()
    label, began = _stack.pop()
    _spent[label] += now - began
    _calls[label] += 1
    if _stack:
        _stack[-1][1] = now


def _wrap_sync(fn, label: str):
    @functools.wraps(fn)
    def probed(*args, **kwargs):
        if not _state["on"] or threading.get_ident() != _main:
            return fn(*args, **kwargs)
        _enter(label)
        try:
            return fn(*args, **kwargs)
        finally:
            _leave()

    return probed


def _wrap_async(fn, label: str):
    @functools.wraps(fn)
    async def probed(*args, **kwargs):
        if not _state["on"]:
            return await fn(*args, **kwargs)
        _enter(label)
        try:
            return await fn(*args, **kwargs)
        finally:
            _leave()

    return probed


def install(spec: list[list[str]]) -> None:
    for module_name, attribute, label, kind in spec:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        wrap = _wrap_async if kind == "async" else _wrap_sync
        setattr(owner, name, wrap(getattr(owner, name), label))


def _start(*_: object) -> None:
    _spent.clear()
    _calls.clear()
    _stack.clear()
    _state["started"] = _now()
    _state["on"] = True


def _stop(*_: object) -> None:
    _state["on"] = False
    window = _now() - _state["started"]
    began = _now()
    for _ in range(10_000):
        _now()
        _now()
    pair = (_now() - began) / 10_000
    result = {"spent_ns": _spent, "calls": _calls, "window_ns": window, "probe_pair_ns": pair}
    Path(os.environ["STAGE_OUT"]).write_text(json.dumps(result))


def run_script(start, stop) -> None:
    """Run the script named on the command line (with its arguments) as `__main__`, `start`
    on SIGUSR1 and `stop` on SIGUSR2; the probes' shared launcher (bench/bytecode_probe.py)."""
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    script, *args = sys.argv[1:]
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    install(json.loads(os.environ["STAGE_SPEC"]))
    run_script(_start, _stop)


if __name__ == "__main__":
    main()
