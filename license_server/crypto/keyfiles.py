"""Reading and writing secret files in the keys directory with owner-only permissions.

ASVS 4.0.3 V6.4.1/V6.4.2: key material is kept out of the code and the repository, created with
mode 0600 inside a 0700 directory, and a key file that others can read is refused at start-up
rather than silently used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class KeyFileError(Exception):
    """A key file is unreadable, malformed or has unsafe permissions; one line for the operator."""


def ensure_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # A directory we created ourselves gets tightened; we never loosen anything.
        os.chmod(path, mode & 0o700)


def write_secret(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 atomically; never overwrite an existing key."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if the key appeared meanwhile: first writer wins
    finally:
        tmp.unlink()


def replace_file(path: Path, data: bytes) -> None:
    """Atomically replace a non-secret-but-private file (e.g. the keyring index), mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


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
