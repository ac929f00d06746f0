"""Tests for per-frame level schedules."""

from __future__ import annotations

import math

import pytest
import torch

from pseudovideo.pseudo_video.schedules import level_schedule


def test_linear_matches_hand_computed() -> None:
    levels = level_schedule("linear", 5, 2.0)
    assert levels.dtype == torch.float32
    assert levels.tolist() == [2.0, 1.5, 1.0, 0.5, 0.0]


def test_cosine_matches_hand_computed() -> None:
    levels = level_schedule("cosine", 3, 2.0)
    expected = torch.tensor([2.0, 2.0 * math.cos(math.pi / 4), 0.0])
    torch.testing.assert_close(levels, expected)
    assert levels[-1].item() == 0.0


def test_geometric_matches_hand_computed() -> None:
    levels = level_schedule("geometric", 5, 2.0, min_level=0.25)
    torch.testing.assert_close(levels, torch.tensor([2.0, 1.0, 0.5, 0.25, 0.0]))
    assert level_schedule("geometric", 2, 3.0, min_level=0.1).tolist() == [3.0, 0.0]


def test_explicit_accepts_both_lengths() -> None:
    short = level_schedule("explicit", 4, 3.0, levels=[3.0, 2.0, 0.5])
    full = level_schedule("explicit", 4, 3.0, levels=[3.0, 2.0, 0.5, 0.0])
    assert short.tolist() == full.tolist() == [3.0, 2.0, 0.5, 0.0]


@pytest.mark.parametrize("kind", ["linear", "cosine", "geometric"])
@pytest.mark.parametrize("num_frames", [1, 2, 3, 7, 16])
def test_endpoints_exact_and_non_increasing(kind: str, num_frames: int) -> None:
    min_level = 0.01 if kind == "geometric" else None
    levels = level_schedule(kind, num_frames, 1.7, min_level=min_level)
    assert levels.shape == (num_frames,)
    assert levels[-1].item() == 0.0
    if num_frames > 1:
        assert levels[0].item() == torch.tensor(1.7, dtype=torch.float32).item()
    assert bool((levels[1:] <= levels[:-1]).all())


def test_single_frame_is_zero_for_every_kind() -> None:
    assert level_schedule("linear", 1, 2.0).tolist() == [0.0]
    assert level_schedule("geometric", 1, 2.0, min_level=0.5).tolist() == [0.0]
    assert level_schedule("explicit", 1, 0.0, levels=[]).tolist() == [0.0]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("gaussian", 5, 1.0), {}, r"unknown schedule kind 'gaussian'.*linear.*cosine.*geometric.*explicit"),
        (("linear", 0, 1.0), {}, r"num_frames must be an integer >= 1, got 0"),
        (("linear", 5, -1.0), {}, r"max_level must be finite and >= 0, got -1.0"),
        (("geometric", 5, 1.0), {}, r"needs min_level > 0, got min_level=None"),
        (("geometric", 5, 1.0), {"min_level": 2.0}, r"min_level=2.0 > max_level=1.0"),
        (("linear", 5, 1.0), {"min_level": 0.5}, r"min_level is only used by the 'geometric'"),
        (("explicit", 4, 3.0), {}, r"needs levels"),
        (("explicit", 4, 3.0), {"levels": [3.0, 2.0]}, r"length num_frames - 1 = 3.*got 2 values"),
        (("explicit", 4, 3.0), {"levels": [3.0, 4.0, 1.0]}, r"non-increasing"),
        (("explicit", 4, 3.0), {"levels": [3.0, 1.0, -1.0]}, r"non-negative"),
        (("explicit", 4, 3.0), {"levels": [3.0, 2.0, 1.0, 0.5]}, r"must end with 0"),
        (("explicit", 4, 2.0), {"levels": [3.0, 2.0, 1.0]}, r"start at 3.0 but max_level=2.0"),
        (("cosine", 4, 2.0), {"levels": [2.0, 1.0, 0.5]}, r"levels is only used by the 'explicit'"),
    ],
)
def test_bad_inputs_raise_clear_errors(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        level_schedule(*args, **kwargs)
