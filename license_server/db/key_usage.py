"""Queries behind "which modules still check in with an old signing key" (the admin's keys page).

Both are bounded whatever the size of the tables, and add no index to the attempt log (the
verify path's hot write, where each index costs every check):
- licenses per kid: the `licenses_signing_kid` index (migration 4); licenses issued before that
  column have NULL there and are not counted.
- client versions: the key's licenses from that index, each joined to its attempts since
  `since_ms` through the `attempts_license (license_id, at_ms)` index; the scan stops after
  `scan_rows` attempts (a LIMIT inside, before grouping), so a key that signed a million busy
  licenses costs at most that many index reads.
"""

from __future__ import annotations

from license_server.db.connection import Connection, Row


async def licenses_signed_by(conn: Connection, kid: str) -> tuple[int, int]:
    """(every license whose key `kid` signed, of which not revoked)."""
    row = await conn.fetch_one(
        "SELECT COUNT(*) AS total,"
        " COALESCE(SUM(CASE WHEN status != 'revoked' THEN 1 ELSE 0 END), 0) AS live"
        " FROM licenses WHERE signing_kid = ?",
        (kid,),
    )
    return int(row["total"]), int(row["live"])


async def client_versions(
    conn: Connection, kid: str, since_ms: int, scan_rows: int, limit: int
) -> tuple[list[Row], int]:
    """Per client version: licenses, attempts and the newest attempt (ms) among at most
    `scan_rows` recent attempts of the key's licenses; and how many of them the shown
    versions account for (`scan_rows` when the scan was cut short)."""
    rows = await conn.fetch_all(
        "SELECT client_version, COUNT(DISTINCT license_id) AS licenses, COUNT(*) AS attempts,"
        " MAX(at_ms) AS last_seen_ms FROM ("
        "  SELECT a.client_version, a.license_id, a.at_ms"
        "  FROM licenses l JOIN verification_attempts a"
        "    ON a.license_id = l.id AND a.at_ms >= ?"
        "  WHERE l.signing_kid = ?"
        "  LIMIT ?"
        ") recent GROUP BY client_version ORDER BY last_seen_ms DESC, client_version LIMIT ?",
        (since_ms, kid, scan_rows, limit),
    )
    scanned = sum(int(row["attempts"]) for row in rows)
    return rows, scanned
