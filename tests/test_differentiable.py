"""Corruption operators whose levels carry gradient: gradcheck in float64, and equal to the plain operators."""

from __future__ import annotations

import torch

from pseudovideo.pseudo_video.corruptions import Downsample, GaussianBlur, GaussianNoise, PatchMask
from pseudovideo.pseudo_video.learned.differentiable import apply_differentiable, blur, corrupt, gumbel_choice, noise, relaxed_mask


def test_blur_is_differentiable_in_sigma_and_the_image_gradcheck() -> None:
    x = torch.rand(2, 1, 5, 4, dtype=torch.float64)
    sigma = torch.tensor([0.3, 1.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: blur(x, s), (sigma,))
    assert torch.autograd.gradcheck(lambda im: blur(im, sigma.detach()), (x.clone().requires_grad_(True),))


def test_noise_is_reparameterised_gradcheck() -> None:
    x, eps = torch.rand(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    std = torch.tensor([0.1, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: noise(x, s, eps), (std,))
    (noise(x, std, eps).sum()).backward()
    assert torch.allclose(std.grad, eps.sum(dim=(1, 2, 3)))  # d/dstd = eps


def test_relaxed_mask_gradcheck_and_straight_through_value() -> None:
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    uniform = torch.rand(2, 1, 2, 2, dtype=torch.float64)
    p = torch.tensor([0.3, 0.6], dtype=torch.float64, requires_grad=True)

    def soft(q: torch.Tensor) -> torch.Tensor:
        return relaxed_mask(x, q, uniform, patch_size=2, fill_value=0.5, hard=False)

    assert torch.autograd.gradcheck(soft, (p,))
    hard = relaxed_mask(x, p, uniform, patch_size=2, fill_value=0.5, hard=True)
    masked = (uniform < p.detach()[:, None, None, None]).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.equal(hard.detach(), torch.where(masked, torch.full_like(x, 0.5), x))  # the exact Bernoulli mask
    hard.sum().backward()
    assert p.grad is not None and bool((p.grad != 0).all())  # and the relaxed gradient


def test_same_draws_and_values_as_the_plain_operators() -> None:
    x = torch.rand(4, 3, 8, 6) * 2 - 1
    level = torch.tensor([0.0, 0.2, 0.5, 0.9])
    for op in (GaussianNoise(), PatchMask(patch_size=2, fill_value=-1.0)):
        a = apply_differentiable(op, x, level, torch.Generator().manual_seed(3))
        b = op.apply(x, level, torch.Generator().manual_seed(3))
        assert torch.equal(a, b), op.name
    sigma = torch.tensor([0.0, 0.4, 1.0, 3.0])
    assert torch.allclose(apply_differentiable(GaussianBlur(), x, sigma, None), GaussianBlur().apply(x, sigma), atol=1e-5)


def test_downsample_keeps_discrete_octaves_without_gradient() -> None:
    x = torch.rand(2, 1, 8, 8)
    level = torch.tensor([1.0, 2.0], requires_grad=True)
    out = apply_differentiable(Downsample(), x, level, None)
    assert torch.equal(out, Downsample().apply(x, level.detach()))
    assert not out.requires_grad  # piecewise constant in the level: no gradient


def test_mixture_is_a_one_hot_choice_forward_and_soft_backward() -> None:
    probabilities = torch.tensor([[0.2, 0.8]] * 2000, requires_grad=True)
    weights = gumbel_choice(probabilities, torch.Generator().manual_seed(0))
    assert torch.equal(weights.detach().sum(1), torch.ones(2000)) and set(weights.detach().unique().tolist()) == {0.0, 1.0}
    assert abs(float(weights.detach()[:, 1].mean()) - 0.8) < 0.03  # drawn with the given probabilities
    x = torch.rand(2000, 1, 4, 4)
    frames = corrupt([GaussianBlur(), GaussianNoise()], x, torch.tensor([[1.0, 0.3]]).expand(2000, 2), None, weights)
    frames.square().sum().backward()
    assert probabilities.grad is not None and bool(probabilities.grad.abs().sum() > 0)
