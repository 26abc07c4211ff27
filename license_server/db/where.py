"""A WHERE clause built from optional filters, for the admin's and the API's filtered pages.

Only fixed SQL fragments written in this package are joined; every value is a parameter
(ASVS 4.0.3 V5.3.4). A filter left as None adds nothing.
"""

from __future__ import annotations


class Where:
    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[object] = []

    def add(self, clause: str, *params: object) -> Where:
        """A fixed fragment with `?` for each of `params`."""
        self.clauses.append(clause)
        self.params.extend(params)
        return self

    def equal(self, column: str, value: object | None) -> Where:
        return self if value is None else self.add(f"{column} = ?", value)

    def keyset(self, before_id: int | None) -> Where:
        """Newest-first keyset pages: the rows after the last one shown."""
        return self if before_id is None else self.add("id < ?", before_id)

    def time_range(self, column: str, since: int | None, until: int | None) -> Where:
        """`since` inclusive, `until` exclusive."""
        if since is not None:
            self.add(f"{column} >= ?", since)
        if until is not None:
            self.add(f"{column} < ?", until)
        return self

    def sql(self) -> str:
        """' WHERE ...' (with its leading space), or '' when nothing filters."""
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""
