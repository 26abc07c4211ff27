#!/usr/bin/env python3
"""Launcher used by bench/bytecodes.py: runs a server script, counting the Python bytecodes the
event-loop thread executes.

    BYTECODE_OUT=out.json python bench/bytecode_probe.py run.py serve

SIGUSR1 starts counting (`sys.settrace` with opcode events, on the main thread, which runs
the event loop); SIGUSR2 stops and writes, per function (`file:function`), the bytecodes it
executed and the times it was called or resumed, to BYTECODE_OUT. Counting slows the server
down some thirty times, which changes nothing counted: the same requests run the same
bytecodes. Threads (the attempt writer's, the readers') are not counted. Never used by the
server itself.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from pathlib import Path

from stage_probe import run_script  # bench/: the probes' shared launcher

ROOT = Path(__file__).resolve().parent.parent
_ops: collections.Counter[tuple[str, str]] = collections.Counter()
_calls: collections.Counter[tuple[str, str]] = collections.Counter()


def _trace(frame, event: str, arg: object):
    code = frame.f_code
    if event == "opcode":
        _ops[code.co_filename, code.co_name] += 1
    elif event == "call":  # a call, or a coroutine resumed
        frame.f_trace_opcodes = True
        _calls[code.co_filename, code.co_name] += 1
    return _trace


def _start(*_: object) -> None:
    _ops.clear()
    _calls.clear()
    sys.settrace(_trace)


def _stop(*_: object) -> None:
    sys.settrace(None)
    rows = [[file, name, _ops[file, name], _calls[file, name]] for file, name in _calls | _ops]
    Path(os.environ["BYTECODE_OUT"]).write_text(json.dumps(rows))


def main() -> None:
    sys.path.insert(0, str(ROOT))
    run_script(_start, _stop)


if __name__ == "__main__":
    main()
