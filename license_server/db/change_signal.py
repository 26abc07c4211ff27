"""A change signal beside the SQLite database: one number that every process on the host maps.

Before trusting its caches a check must know whether anything changed since its last look
(issue #11, item 4). Asking the database costs a thread hop and a query on every check
(measured: about 85 us of CPU per request on the hot path). Instead, every transaction that
writes the change log publishes its newest seq into this 8-byte file, which every process maps
into memory: a check reads one integer, and only when it differs from what the process last
saw does it read the change log (`licensing.changes`).

Why no lock: each publish writes the seq of its own transaction, which no other transaction
has, after that transaction committed. A publish may overwrite a newer one (two writers
racing), but the value then still differs from anything a reader recorded before the later
commit, so that reader looks at the database, which has both. The value never returns to one
a reader has seen, so no committed change goes unnoticed. The file is created 0600 like the
database; it holds no data, only a counter.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

_COUNTER = struct.Struct("<Q")


class ChangeSignal:
    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _COUNTER.size:
                os.ftruncate(fd, _COUNTER.size)  # zeros; idempotent when processes race
            self._map = mmap.mmap(fd, _COUNTER.size)
        finally:
            os.close(fd)  # the mapping keeps the file

    def value(self) -> int:
        return _COUNTER.unpack_from(self._map, 0)[0]

    def publish(self, seq: int) -> None:
        _COUNTER.pack_into(self._map, 0, seq)

    def close(self) -> None:
        self._map.close()
