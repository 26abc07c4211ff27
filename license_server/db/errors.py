"""Database errors the rest of the server sees, whatever the backend.

`licensing/` and `web/` never catch a driver's exception (sqlite3, asyncpg): each backend's
connection translates them into these, so a duplicate code is a `UniqueViolation` on SQLite and
on PostgreSQL alike, and the transaction runner (`Database.transaction`) knows which failures
mean "run the whole unit of work again".
"""

from __future__ import annotations


class DatabaseError(Exception):
    """A database operation failed; the transaction it was part of is rolled back."""


class UniqueViolation(DatabaseError):
    """An insert or update would duplicate a UNIQUE value."""


class SerializationFailure(DatabaseError):
    """A concurrent transaction got in the way (PostgreSQL serialization failure or deadlock,
    SQLite busy): nothing was written, and running the unit of work again may succeed."""


class ReadOnlyViolation(DatabaseError):
    """A write was attempted on a read-only connection (a bug in a read path)."""
