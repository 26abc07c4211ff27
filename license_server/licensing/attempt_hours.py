"""Verifications and refusals per hour, for the dashboard, without scanning the attempt log.

The log (`verification_attempts`) may hold millions of rows, and the pruner's roll-ups only
cover attempts past retention (90 days by default), so neither answers "the last week, hour by
hour" cheaply. A periodic job (`fold_closed_hours`, run by the maintenance process every
minute) counts each closed hour once into `attempt_hours` by result and reason: one index range
of the log per hour, replaced whole, so running it twice or on two instances at once changes
nothing. The dashboard then reads:
- folded hours from `attempt_hours` (a few rows per hour);
- hours after the last folded one (the current hour, and the one that just closed until the
  job has run) from the log through its `at_ms` index: at most a couple of hours of rows;
- hours before the first folded one (a server upgraded to this version, whose old attempts
  were pruned) from `attempt_rollups`.
No index is added to the log, whose inserts are the verify path's hot write.

An hour is folded only `SETTLE_SECONDS` after it closed: an attempt is stamped when its request
starts and committed when the batch is written, so the last ones of an hour arrive a little late.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

from license_server.db import attempt_hours as rows
from license_server.db.connection import Connection
from license_server.db.database import Database

HOUR = rows.HOUR
SETTLE_SECONDS = 60
# A first run (or one after a long stop) folds at most this far back; older hours are
# left to the roll-ups.
BACKFILL_HOURS = 8 * 24
ACCEPTED = "active"


def closed_before(now: int) -> int:
    """The start of the first hour that may not be folded yet."""
    return (now - SETTLE_SECONDS) // HOUR * HOUR


async def fold_closed_hours(db: Database, now: int, retention_days: int | None = None) -> int:
    """Fold every closed, settled hour not folded yet; returns how many hours it folded.
    One short transaction per hour (the writer is shared with the verify path). Hours the
    pruner may be deleting (older than `retention_days`) are left to its roll-ups."""
    end = closed_before(now)
    async with db.read() as conn:
        _, last = await rows.folded_range(conn)
        oldest_ms = await rows.oldest_attempt_ms(conn)
    if last is not None:
        start = last + HOUR
    elif oldest_ms is not None:
        start = (oldest_ms // 1000) // HOUR * HOUR
    else:
        start = end  # nothing logged yet: nothing to fold
    start = max(start, end - BACKFILL_HOURS * HOUR)
    if retention_days is not None:  # the first whole hour after the pruning cutoff
        start = max(start, -(-(now - retention_days * 86400) // HOUR) * HOUR)
    folded = 0
    for hour in range(start, end, HOUR):
        await db.transaction(functools.partial(_fold, hour))
        folded += 1
    return folded


async def _fold(hour: int, conn: Connection) -> None:
    await conn.lock_name("attempt-hours")  # two instances fold one after the other
    await rows.fold_hour(conn, hour)


@dataclass(frozen=True, slots=True)
class HourCount:
    hour: int  # Unix seconds, start of the hour (UTC)
    verifications: int  # every attempt
    refusals: int  # attempts not answered active


@dataclass(frozen=True, slots=True)
class Traffic:
    hours: list[HourCount]  # oldest first, every hour of the window (zeros included)
    reasons_day: list[tuple[str, str, int]]  # (result, reason, attempts), most first
    reasons_week: list[tuple[str, str, int]]


async def traffic(db: Database, now: int, hours: int = 7 * 24, top: int = 10) -> Traffic:
    """Hourly verifications and refusals for the `hours` up to now (the current hour last),
    and the most frequent refusal reasons of the last 24 hours and of the whole window."""
    end = now // HOUR * HOUR + HOUR  # the current hour included
    start = end - hours * HOUR
    async with db.read() as conn:
        first, last = await rows.folded_range(conn)
        counted = []
        if first is None:  # nothing folded (yet): the log for the window, roll-ups before
            counted += await rows.rolled_up_counts(conn, start, end)
            counted += await rows.live_counts(conn, start * 1000, end * 1000)
        else:
            if start < first:
                counted += await rows.rolled_up_counts(conn, start, first)
            counted += await rows.folded_counts(conn, max(start, first), end)
            live_from = max(start, last + HOUR)
            counted += await rows.live_counts(conn, live_from * 1000, end * 1000)
    totals: Counter[int] = Counter()
    refusals: Counter[int] = Counter()
    day: Counter[tuple[str, str]] = Counter()
    week: Counter[tuple[str, str]] = Counter()
    day_start = end - 24 * HOUR
    for row in counted:
        hour, attempts = int(row["hour"]), int(row["attempts"])
        totals[hour] += attempts
        if row["result"] != ACCEPTED:
            refusals[hour] += attempts
            week[(row["result"], row["reason"])] += attempts
            if hour >= day_start:
                day[(row["result"], row["reason"])] += attempts
    series = [HourCount(h, totals[h], refusals[h]) for h in range(start, end, HOUR)]

    def ranked(counter: Counter[tuple[str, str]]) -> list[tuple[str, str, int]]:
        ordered = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
        return [(result, reason, n) for (result, reason), n in ordered[:top]]

    return Traffic(series, ranked(day), ranked(week))
