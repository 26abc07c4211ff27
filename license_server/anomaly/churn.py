"""Activation churn: a license that binds, releases and binds again far more than its product's
other licenses do (one key passed around, one site at a time, each taking the seat in turn).

Fed from the change log (`license_changes`: BIND, RELEASE, REISSUE rows), read by seq in the
alert task whenever the ChangeFeed announces such a change (and every few seconds, for changes
made by other instances). The change log is shared by every instance and pruned to its newest
rows (db/changes.py KEEP), so the start-up rebuild is the same read from the window's start:
bounded by that pruning, and it sees every instance's binds, not only this one's.

A bind counts when it takes a site after a release or reissue of the license (a move), or is
the license's first in the window; the other binds do not (a development host beside the
site, the second and third seat of a multi-seat license, the seats re-taken after one
reissue): counting every bind made honest multi-seat licenses look like churn when replayed
through a real server (bench/simulate.py --url, precision 0.71). A license alerts when its
counted binds within `churn_window_days` reach `churn_binds` AND exceed its product's
median + `churn_mads` × MAD (over the licenses of the product that bound anything in the
window: most bind once).
"""

from __future__ import annotations

from collections import deque

from license_server.anomaly.baseline import Usual, usual
from license_server.anomaly.detectors import Context, Finding, in_the_last, window_words
from license_server.anomaly.windows import admit
from license_server.licensing.alerts import Severity

BIND = "bind"
FREEING = frozenset({"release", "reissue"})
KINDS = ("bind", "release", "reissue")


class Churn:
    name = "activation_churn"

    def __init__(self, ctx: Context) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.window_s = s.churn_window_days * 86400
        self.threshold = s.churn_binds
        self.mads = s.churn_mads
        self.binds: dict[int, deque[int]] = {}
        self.frees: dict[int, int] = {}
        self.armed: dict[int, bool] = {}  # freed since its last counted bind: the next one counts
        self.by_product: dict[str, Usual] = {}

    def observe(self, license_id: int, kind: str, at_s: int) -> None:
        if kind in FREEING:
            admit(self.frees, self.ctx.cap)
            self.frees[license_id] = self.frees.get(license_id, 0) + 1
            admit(self.armed, self.ctx.cap)
            self.armed[license_id] = True
            return
        if kind != BIND:
            return
        times = self.binds.get(license_id)
        if times is None:
            admit(self.binds, self.ctx.cap)
            times = self.binds[license_id] = deque()
        while times and times[0] < at_s - self.window_s:
            times.popleft()
        if times and not self.armed.pop(license_id, False):
            return  # another site beside the one it holds: not a move
        self.armed.pop(license_id, None)
        times.append(at_s)
        count = len(times)
        if count < self.threshold:
            return
        product = self.ctx.products.get(license_id, "")
        known = self.by_product.get(product)
        if known is not None and count <= known.limit(self.mads):
            return
        subject = f"license:{license_id}"
        if not self.ctx.may_fire(self.name, subject, at_s * 1000):
            return
        compared = (
            f"; {known.words('bind {} times in that time')} (median {known.median:g})"
            if known is not None
            else ""
        )
        self.ctx.emit(
            Finding(
                self.name,
                subject,
                at_s * 1000,
                Severity.MEDIUM,
                f"This license was activated on a website {count} times "
                f"{in_the_last(self.window_s * 1000)}, freed in between{compared}. The key "
                "is probably being passed from site to site.",
                {
                    "window": window_words(self.window_s * 1000),
                    "binds": count,
                    "releases_and_reissues": self.frees.get(license_id, 0),
                    "product_median": known.median if known else None,
                    "product_mad": known.mad if known else None,
                },
                license_id,
            )
        )

    def refresh(self, now_s: int) -> None:
        """Forget binds out of the window; recompute each product's usual number of binds."""
        cutoff = now_s - self.window_s
        pooled: dict[str, list[float]] = {}
        for license_id in list(self.binds):
            times = self.binds[license_id]
            while times and times[0] < cutoff:
                times.popleft()
            if not times:
                del self.binds[license_id]
                self.frees.pop(license_id, None)
                self.armed.pop(license_id, None)
                continue
            product = self.ctx.products.get(license_id, "")
            pooled.setdefault(product, []).append(float(len(times)))
        minimum = self.ctx.settings.baseline_min_licenses
        self.by_product = {p: usual(v) for p, v in pooled.items() if len(v) >= minimum}
