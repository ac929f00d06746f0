"""Student-t intervals of a mean and of paired differences, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from pseudovideo.evaluation.stats import Interval, format_interval, mean_interval, paired_difference

# Quantiles t_{0.975, df} from a printed table.
T975 = {1: 12.7062, 2: 4.30265, 4: 2.77645}


def test_mean_interval_of_one_two_three() -> None:
    interval = mean_interval([1.0, 2.0, 3.0])
    assert interval.mean == pytest.approx(2.0) and interval.n == 3
    assert interval.std == pytest.approx(1.0)
    assert interval.half_width == pytest.approx(T975[2] * 1 / math.sqrt(3), rel=1e-5)
    assert interval.half_width == pytest.approx(2.484, abs=1e-3)
    assert interval.low == pytest.approx(2 - 2.48414, abs=1e-4) and interval.high == pytest.approx(2 + 2.48414, abs=1e-4)


def test_mean_interval_of_two_values_and_of_five() -> None:
    # [0, 2]: s = sqrt(2), so the half-width is t_{0.975,1} itself
    assert mean_interval([0.0, 2.0]).half_width == pytest.approx(T975[1], rel=1e-5)
    # [2, 4, 4, 4, 6]: mean 4, s = sqrt(8 / 4) = sqrt(2)
    interval = mean_interval([2, 4, 4, 4, 6])
    assert interval.mean == 4 and interval.half_width == pytest.approx(T975[4] * math.sqrt(2) / math.sqrt(5), rel=1e-5)
    # a 90 % interval is narrower: t_{0.95,2} = 2.91999
    assert mean_interval([1, 2, 3], confidence=0.9).half_width == pytest.approx(2.91999 / math.sqrt(3), rel=1e-5)


def test_one_value_has_no_interval_and_bad_inputs_raise() -> None:
    interval = mean_interval([19.2])
    assert interval == Interval(mean=19.2, half_width=None, n=1, std=None)
    assert interval.low is None and interval.high is None
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=95)


def test_paired_difference_uses_the_per_seed_differences() -> None:
    # differences 1, 1, 1.5: mean 7/6, s = sqrt(1/12)
    interval = paired_difference([10.0, 12.0, 14.5], [9.0, 11.0, 13.0])
    assert interval.mean == pytest.approx(7 / 6) and interval.n == 3
    assert interval.half_width == pytest.approx(T975[2] * math.sqrt(1 / 12) / math.sqrt(3), rel=1e-5)
    # far narrower than the unpaired spread of either side: the seed's shared variation cancels
    assert interval.half_width < mean_interval([10.0, 12.0, 14.5]).half_width / 4
    with pytest.raises(ValueError, match="as many values"):
        paired_difference([1.0, 2.0], [1.0])


def test_format_interval() -> None:
    assert format_interval(Interval(mean=19.2134, half_width=0.1234, n=3, std=0.05)) == "19.21 ± 0.12 (n=3)"
    assert format_interval(mean_interval([1, 2, 3])) == "2.0 ± 2.5 (n=3)"
    assert format_interval(Interval(mean=1234.5, half_width=56.0, n=2, std=6.0), show_n=False) == "1234 ± 56"
    assert format_interval(mean_interval([19.21345])) == "19.21 (n=1)"
    assert format_interval(mean_interval([0.5, 0.5]), show_n=False) == "0.5 ± 0"
    assert format_interval(None) == "-"
