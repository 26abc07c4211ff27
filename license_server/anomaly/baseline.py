"""The learned baseline: how often a license of each product usually checks in per hour.

Robust statistics over hourly per-license counts: the median and the MAD (median absolute
deviation), so a few flooding licenses do not move what "usual" means, as a mean and standard
deviation would. The samples are the closed clock hours of the engine's own per-license
counters (one dict increment per attempt on the hot path; the hour is handed over whole when it
closes and the statistics are recomputed off the hot path, in the alert task). At start-up the
rebuild replays the newest attempts, so the hours it covers are learnt again.

Incremental: the counts are small integers, so each product keeps a histogram (count -> how
many samples) of its pooled hours; a closed hour adds its histogram and the hour that leaves
the window subtracts its own, and the quantiles are read off the histogram's few distinct
values. A fold costs O(licenses of the hour) plus O(distinct counts log distinct counts), not
a sort of a day of samples: at 10,000 licenses the old recompute (sorting ~70,000 samples per
product, twice) held the event loop ~25 ms per closed hour, ~90 ms at 30,000 (bench/README.md
"anomaly_stall"). `usual(samples)` (the sort) stays as the reference the histogram is tested
against, and for churn's small per-product lists.

Where else per-license hourly counts live: `attempt_rollups` has them, but only for attempts
past retention (90 days by default), too old to say what is usual now; `attempt_hours` (the
dashboard's) has no license column. Adding a per-license hourly table would add a write to
every batch; the in-memory counters cost nothing on the database.

A check-in rate learned from the stream could be poisoned by a slow, product-wide ramp; the
absolute rules (settings) stay in force beside it, so the baseline only ever raises the bar
for "far more than usual", never lowers it below the absolute rule.
"""

from __future__ import annotations

from collections import Counter, deque
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


def usual_of_histogram(histogram: Counter[int]) -> Usual:
    """`usual(samples)` of the samples a histogram (value -> how many) describes, equal to it
    to the last bit, in O(distinct values log distinct values)."""
    ordered = sorted((value, n) for value, n in histogram.items() if n > 0)
    total = sum(n for _, n in ordered)
    median = _quantile_of(ordered, total, 0.5)
    deviations: Counter[float] = Counter()
    for value, n in ordered:
        deviations[abs(value - median)] += n
    mad = _quantile_of(sorted(deviations.items()), total, 0.5)
    return Usual(
        median,
        mad,
        _quantile_of(ordered, total, 0.25),
        _quantile_of(ordered, total, 0.75),
        total,
    )


def _quantile_of(ordered: list[tuple[float, int]], total: int, q: float) -> float:
    """`quantile` over the sorted (value, count) runs of `total` samples."""
    if not total:
        return 0.0
    position = (total - 1) * q
    below = int(position)
    above = min(below + 1, total - 1)
    low = high = None
    seen = 0
    for value, n in ordered:
        seen += n
        if low is None and below < seen:
            low = value
        if above < seen:
            high = value
            break
    assert low is not None and high is not None
    return low + (high - low) * (position - below)


class Baseline:
    """Per product, the hourly check counts of its licenses over the last `hours` closed hours,
    kept as histograms (one per hour and product, and their running sum per product)."""

    def __init__(self, hours: int, min_samples: int) -> None:
        self._max_hours = hours
        self._hours: deque[dict[str, Counter[int]]] = deque()
        self._pooled: dict[str, Counter[int]] = {}
        self._min_samples = min_samples
        self.by_product: dict[str, Usual] = {}

    def add_hour(self, counts_by_product: dict[str, list[int]]) -> None:
        """One closed hour: for each product, the counts of the licenses that checked in."""
        hour: dict[str, Counter[int]] = {}
        for product, counts in counts_by_product.items():
            step = max(1, len(counts) // MAX_SAMPLES_PER_HOUR)
            hour[product] = Counter(counts[::step])
        changed = set(hour)
        for product, histogram in hour.items():
            self._pooled.setdefault(product, Counter()).update(histogram)
        self._hours.append(hour)
        if len(self._hours) > self._max_hours:
            gone = self._hours.popleft()
            changed.update(gone)
            for product, histogram in gone.items():
                pooled = self._pooled[product]
                pooled.subtract(histogram)
                for value in [v for v, n in pooled.items() if n <= 0]:
                    del pooled[value]
                if not pooled:
                    del self._pooled[product]
        for product in changed:
            self._refresh(product)

    def _refresh(self, product: str) -> None:
        pooled = self._pooled.get(product)
        if pooled is None or pooled.total() < self._min_samples:
            self.by_product.pop(product, None)
        else:
            self.by_product[product] = usual_of_histogram(pooled)

    def samples(self, product: str) -> list[int]:
        """Every pooled sample of `product`, in order (what `usual` would be given)."""
        return sorted(self._pooled.get(product, Counter()).elements())

    def get(self, product: str) -> Usual | None:
        return self.by_product.get(product)
