"""The benchmarks' FLOP counter: convolution backward = forward FLOPs per gradient, for any ``groups``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_common  # noqa: E402


@pytest.mark.parametrize("groups", [1, 4, 16])
@pytest.mark.parametrize("input_grad", [True, False])
def test_conv3d_backward_counted_as_forward_per_gradient(groups: int, input_grad: bool) -> None:
    n, c, t, h, w, k = 2, 16, 4, 8, 8, 3
    conv = torch.nn.Conv3d(c, c, k, padding=1, groups=groups)
    x = torch.randn(n, c, t, h, w, requires_grad=input_grad)
    # by hand: every output element (n, c, t, h, w) sums (c / groups) k^3 products -> 2 FLOPs each
    forward = 2 * n * c * t * h * w * (c // groups) * k**3
    with bench_common.flop_counter(display=False) as counter:
        y = conv(x)
    assert counter.get_total_flops() == forward
    with bench_common.flop_counter(display=False) as counter:
        y.square().sum().backward()
    assert counter.get_total_flops() == forward * (2 if input_grad else 1)  # grad_input (if needed) + grad_weight


def test_count_flops_of_a_depthwise_training_step() -> None:
    conv = torch.nn.Conv3d(32, 32, (3, 1, 1), padding=(1, 0, 0), groups=32)
    x = torch.randn(4, 32, 4, 8, 8, requires_grad=True)
    forward = 2 * 4 * 32 * 4 * 8 * 8 * 1 * 3
    assert bench_common.count_flops(lambda: conv(x).sum().backward()) == 3 * forward
