"""The learned baseline: how often a license of each product usually checks in per hour.

Robust statistics over hourly per-license counts: the median and the MAD (median absolute
deviation), so a few flooding licenses do not move what "usual" means, as a mean and standard
deviation would. The samples are the closed clock hours of the engine's own per-license
counters (one dict increment per attempt on the hot path; the hour is handed over whole when it
closes and the statistics are recomputed off the hot path, in the alert task). At start-up the
rebuild replays the newest attempts, so the hours it covers are learnt again.

Where else per-license hourly counts live: `attempt_rollups` has them, but only for attempts
past retention (90 days by default), too old to say what is usual now; `attempt_hours` (the
dashboard's) has no license column. Adding a per-license hourly table would add a write to
every batch; the in-memory counters cost nothing on the database.

A check-in rate learned from the stream could be poisoned by a slow, product-wide ramp; the
absolute rules (settings) stay in force beside it, so the baseline only ever raises the bar
for "far more than usual", never lowers it below the absolute rule.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# Samples kept per product and hour (a random-free thinning: every n-th license when more).
MAX_SAMPLES_PER_HOUR = 5_000


@dataclass(frozen=True, slots=True)
class Usual:
    median: float
    mad: float
    low: float  # 25th percentile
    high: float  # 75th percentile
    samples: int

    def limit(self, mads: float) -> float:
        """median + mads × MAD, with the MAD at least 1 (a product whose licenses all check
        exactly twice an hour has a MAD of 0; 3 checks are not "far more")."""
        return self.median + mads * max(self.mad, 1.0)

    def words(self, template: str) -> str:
        """'licenses of this product usually check 2–4 times an hour' for the template
        'check {} times an hour' (the interquartile range, in whole numbers)."""
        low, high = round(self.low), round(self.high)
        spread = f"{low}" if low == high else f"{low}–{high}"
        return "licenses of this product usually " + template.format(spread)


def quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * q
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def usual(samples: list[float]) -> Usual:
    ordered = sorted(samples)
    median = quantile(ordered, 0.5)
    mad = quantile(sorted(abs(x - median) for x in ordered), 0.5)
    return Usual(median, mad, quantile(ordered, 0.25), quantile(ordered, 0.75), len(ordered))


class Baseline:
    """Per product, the hourly check counts of its licenses over the last `hours` closed hours."""

    def __init__(self, hours: int, min_samples: int) -> None:
        self._hours: deque[dict[str, list[int]]] = deque(maxlen=hours)
        self._min_samples = min_samples
        self.by_product: dict[str, Usual] = {}

    def add_hour(self, counts_by_product: dict[str, list[int]]) -> None:
        """One closed hour: for each product, the counts of the licenses that checked in."""
        thinned = {}
        for product, counts in counts_by_product.items():
            step = max(1, len(counts) // MAX_SAMPLES_PER_HOUR)
            thinned[product] = counts[::step]
        self._hours.append(thinned)
        self.refresh()

    def refresh(self) -> None:
        pooled: dict[str, list[float]] = {}
        for hour in self._hours:
            for product, counts in hour.items():
                pooled.setdefault(product, []).extend(counts)
        self.by_product = {
            product: usual(samples)
            for product, samples in pooled.items()
            if len(samples) >= self._min_samples
        }

    def get(self, product: str) -> Usual | None:
        return self.by_product.get(product)
