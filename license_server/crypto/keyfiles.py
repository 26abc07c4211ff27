"""Reading and writing secret files in the keys directory with owner-only permissions.

ASVS 4.0.3 V6.4.1/V6.4.2: key material is kept out of the code and the repository, created with
mode 0600 inside a 0700 directory, and a key file that others can read is refused at start-up
rather than silently used. Files are created under a unique temporary name and linked or
renamed into place, so a crash never leaves a half-written key and a leftover temporary file
never blocks a later start; when two processes create the same file, the first writer wins.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Temporary files end so; nothing that loads keys matches it (`*.pem`, `data.key`).
TEMP_SUFFIX = ".tmp"


class KeyFileError(Exception):
    """A key file is unreadable, malformed or has unsafe permissions; one line for the operator."""


def ensure_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # A directory we created ourselves gets tightened; we never loosen anything.
        os.chmod(path, mode & 0o700)


def write_secret(path: Path, data: bytes) -> bool:
    """Create `path` with mode 0600 atomically, unless it exists; True if this call wrote it.

    The content goes to a temporary file with a unique name first, then is hard-linked to
    `path`: link(2) fails if `path` exists, so of two processes creating the same key at once
    the first writer wins and the other keeps the winner's file (the caller reads it back). A
    reader never sees a half-written key, and a temporary file left by a crash is never reused.
    """
    tmp = _private_temp_copy(path, data)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def replace_file(path: Path, data: bytes) -> None:
    """Atomically replace a private file (e.g. the keyring state), mode 0600; last writer wins."""
    tmp = _private_temp_copy(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _private_temp_copy(path: Path, data: bytes) -> Path:
    """`data` in a new 0600 file with a unique name beside `path`, on disk (fsynced)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        Path(tmp_name).unlink(missing_ok=True)
        raise
    os.close(fd)
    return Path(tmp_name)


def _fsync_dir(directory: Path) -> None:
    # The new name itself must survive a power cut, not only the file's content.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock between processes for a read-modify-write in `directory` (flock(2) on
    `.lock`; released by the kernel if the holder dies, so a crash never leaves it stuck)."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_secret(path: Path) -> bytes:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} is missing") from None
    if mode & 0o077:
        raise KeyFileError(
            f"key file {path} is readable by other users (mode {mode:04o}); run: chmod 600 {path}"
        )
    return path.read_bytes()
