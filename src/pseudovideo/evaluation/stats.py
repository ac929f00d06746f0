"""Intervals for results over a few seeds: Student-t interval of a mean, paired differences, formatting.

With the handful of seeds an experiment can afford (2-5), the normal approximation is far too
narrow; the Student-t interval ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` is the usual choice for the
mean of a few independent runs. A paired difference (run A minus run B trained with the same seed)
is the interval of the per-seed differences, which removes the variation shared through the seed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence


__all__ = ["Interval", "mean_interval", "paired_difference", "format_interval"]


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values with the half-width of its Student-t interval at ``confidence``.

    ``std`` is the sample standard deviation (n - 1 in the denominator); ``std`` and ``half_width``
    are None when ``n`` is 1 (no spread can be estimated from one value).
    """

    mean: float
    half_width: float | None
    n: int
    std: float | None
    confidence: float = 0.95

    @property
    def low(self) -> float | None:
        """Lower end of the interval (None for a single value)."""
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        """Upper end of the interval (None for a single value)."""
        return None if self.half_width is None else self.mean + self.half_width


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``values`` and the half-width ``t_{(1+confidence)/2, n-1} · s / sqrt(n)`` of its t interval.

    Raises ValueError for an empty sequence or a value that is not finite.
    """
    _check_confidence(confidence)
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_interval needs at least one value")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"mean_interval needs finite values, got {bad[0]}")
    n = len(values)
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean=mean, half_width=None, n=1, std=None, confidence=confidence)
    std = statistics.stdev(values)
    from scipy import stats as scipy_stats  # imported here: a second of start-up for every process otherwise

    t = float(scipy_stats.t.ppf((1 + confidence) / 2, df=n - 1))
    return Interval(mean=mean, half_width=t * std / math.sqrt(n), n=n, std=std, confidence=confidence)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """Interval of the mean of ``a[i] - b[i]`` (pairs of runs sharing everything but the compared factor).

    Raises ValueError when the sequences differ in length or are empty.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs as many values in a as in b, got {len(a)} and {len(b)}")
    return mean_interval([float(x) - float(y) for x, y in zip(a, b)], confidence)


def _decimals(half_width: float) -> int:
    """Decimals that show the half-width with two significant digits."""
    return max(0, 1 - math.floor(math.log10(half_width)))


def format_interval(interval: Interval | None, *, show_n: bool = True, digits: int = 4) -> str:
    """``"19.21 ± 0.12 (n=3)"``: the half-width with two significant digits and the mean to the same decimal.

    A single value (no interval) or a zero half-width shows the mean with ``digits`` significant digits;
    None gives "-".
    """
    if interval is None:
        return "-"
    suffix = f" (n={interval.n})" if show_n else ""
    if interval.half_width is None:
        return f"{interval.mean:.{digits}g}{suffix}"
    if interval.half_width == 0:
        return f"{interval.mean:.{digits}g} ± 0{suffix}"
    decimals = _decimals(interval.half_width)
    return f"{interval.mean:.{decimals}f} ± {interval.half_width:.{decimals}f}{suffix}"
