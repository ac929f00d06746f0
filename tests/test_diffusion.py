"""Tests of the Gaussian diffusion process, its loss and samplers against closed forms (tiny CPU-sized models)."""

from __future__ import annotations

import math

import pytest
import torch

from pseudovideo.diffusion.betas import beta_schedule, cosine_alpha_bar
from pseudovideo.diffusion.process import GaussianDiffusion
from pseudovideo.diffusion.samplers import ddim_timesteps
from pseudovideo.models.unet import image_unet, video_unet

from _unet_helpers import TINY_UNET, randomize

SHAPE = (2, 3, 3, 8, 8)  # (B, T, C, H, W)


class DeltaOracle(torch.nn.Module):
    """The exact denoiser of a data distribution that is a point mass at ``x_star``: returns eps or v."""

    def __init__(self, diffusion: GaussianDiffusion, x_star: torch.Tensor) -> None:
        super().__init__()
        self.diffusion = diffusion
        self.x_star = x_star

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = self.x_star.expand_as(x_t)
        abar = self.diffusion.alphas_cumprod[t].to(x_t.dtype).view(-1, 1, 1, 1, 1)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        return eps if self.diffusion.prediction == "eps" else abar.sqrt() * eps - (1 - abar).sqrt() * x0


# -- schedules ------------------------------------------------------------------------------------------------
def test_linear_schedule_endpoints() -> None:
    betas = beta_schedule("linear", 1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    short = beta_schedule("linear", 250)  # scaled by 1000 / 250 = 4
    assert short[0].item() == pytest.approx(4e-4) and short[-1].item() == pytest.approx(0.08)
    assert torch.all(short[1:] > short[:-1])


def test_cosine_schedule_closed_form() -> None:
    n, s = 100, 0.008
    betas = beta_schedule("cosine", n)
    assert betas.dtype == torch.float64 and betas.shape == (n,)
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    alpha_bar = torch.cumprod(1 - betas, 0)
    for t in (0, 10, 50, 90):  # alpha_bar_t = f((t + 1) / N) / f(0) away from the clipped end
        assert alpha_bar[t].item() == pytest.approx(f((t + 1) / n) / f(0), rel=1e-9)
    assert cosine_alpha_bar(torch.tensor([0.0], dtype=torch.float64)).item() == pytest.approx(1.0)
    assert betas.max().item() == pytest.approx(0.999)  # last beta is clipped
    assert (betas > 0).all()


def test_alphas_cumprod_is_cumprod_of_one_minus_beta() -> None:
    betas = beta_schedule("linear", 100)
    diffusion = GaussianDiffusion(betas)
    product, expected = 1.0, []
    for b in betas.tolist():
        product *= 1.0 - b
        expected.append(product)
    torch.testing.assert_close(diffusion.alphas_cumprod, torch.tensor(expected, dtype=torch.float64))
    assert diffusion.alphas_cumprod.dtype == torch.float64
    assert diffusion.alphas_cumprod_prev[0] == 1.0
    assert ddim_timesteps(5, 100) == [99, 74, 50, 25, 0]
    assert ddim_timesteps(1, 100) == [99]


# -- forward process ---------------------------------------------------------------------------------------------
def test_q_sample_statistics() -> None:
    diffusion = GaussianDiffusion(beta_schedule("cosine", 100))
    x0 = torch.tensor([-1.0, -0.3, 0.5, 1.0]).view(1, 1, 1, 2, 2).expand(20000, 2, 1, 2, 2)
    t = torch.full((20000,), 40, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
    abar = diffusion.alphas_cumprod[40].item()
    torch.testing.assert_close(x_t.mean(0), math.sqrt(abar) * x0[0], atol=0.03, rtol=0)
    torch.testing.assert_close(x_t.std(0), torch.full_like(x0[0], math.sqrt(1 - abar)), atol=0.02, rtol=0)


def test_posterior_mean_variance_closed_form() -> None:
    betas = beta_schedule("linear", 100)
    diffusion = GaussianDiffusion(betas)
    t_int = 37
    beta = betas[t_int].item()
    abar_t = math.prod(1 - b for b in betas[: t_int + 1].tolist())
    abar_prev = math.prod(1 - b for b in betas[:t_int].tolist())
    gen = torch.Generator().manual_seed(1)
    x0, x_t = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
    t = torch.full((SHAPE[0],), t_int, dtype=torch.long)
    mean, var = diffusion.posterior_mean_variance(x0, x_t, t)
    # Ho et al. eq. (7)
    expected_mean = (math.sqrt(abar_prev) * beta / (1 - abar_t)) * x0 + (
        math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t)
    ) * x_t
    torch.testing.assert_close(mean, expected_mean, atol=1e-6, rtol=1e-5)
    assert var.shape == (SHAPE[0], 1, 1, 1, 1)
    assert var.flatten()[0].item() == pytest.approx((1 - abar_prev) / (1 - abar_t) * beta, rel=1e-6)
    # at t = 0 the posterior is the point mass at x0
    mean0, var0 = diffusion.posterior_mean_variance(x0, x_t, torch.zeros_like(t))
    torch.testing.assert_close(mean0, x0)
    assert (var0 == 0).all()


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_prediction_round_trip(prediction: str) -> None:
    diffusion = GaussianDiffusion(beta_schedule("cosine", 100), prediction=prediction)
    gen = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
    t = torch.tensor([5, 80])
    x_t = diffusion.q_sample(x0, t, eps)
    target = diffusion.target(x0, eps, t)
    if prediction == "v":
        abar = diffusion.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
        torch.testing.assert_close(target, abar.sqrt() * eps - (1 - abar).sqrt() * x0)
    torch.testing.assert_close(diffusion.predict_x0(target, x_t, t), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(diffusion.predict_eps(target, x_t, t), eps, atol=1e-5, rtol=1e-5)


# -- training loss ------------------------------------------------------------------------------------------------
class Recorder(torch.nn.Module):
    """Returns zeros and remembers what it was called with."""

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.x_t, self.t = x_t, t
        return torch.zeros_like(x_t)


def test_training_loss_shares_t_and_weights_frames() -> None:
    diffusion = GaussianDiffusion(beta_schedule("cosine", 100))
    x0 = torch.rand(SHAPE) * 2 - 1
    model = Recorder()
    loss, stats = diffusion.training_loss(model, x0, frame_weights=torch.tensor([1.0, 0.0, 3.0]),
                                          generator=torch.Generator().manual_seed(3))
    assert model.t.shape == (SHAPE[0],) and model.t.dtype == torch.long
    # the same draws by hand: t first, then the noise; the zero model's eps loss is E[eps^2] per frame
    gen = torch.Generator().manual_seed(3)
    t = torch.randint(0, 100, (SHAPE[0],), generator=gen)
    noise = torch.randn(SHAPE, generator=gen)
    assert torch.equal(model.t, t)
    torch.testing.assert_close(model.x_t, diffusion.q_sample(x0, t, noise))
    per_frame = noise.square().mean(dim=(0, 2, 3, 4))
    torch.testing.assert_close(loss, 0.25 * per_frame[0] + 0.75 * per_frame[2])
    torch.testing.assert_close(stats["mse"], per_frame.mean())
    torch.testing.assert_close(stats["mse_last_frame"], per_frame[-1])
    # independent noise per frame: the frames' noise parts differ
    assert not torch.allclose(noise[:, 0], noise[:, 1])
    uniform, _ = diffusion.training_loss(model, x0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(uniform, per_frame.mean())


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_tiny_model_overfits_single_batch(prediction: str) -> None:
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(beta_schedule("cosine", 100), prediction=prediction)
    model = video_unet(**TINY_UNET)
    x0 = torch.rand(4, 2, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        # the same t and noise every step: a single fixed batch to overfit
        loss, _ = diffusion.training_loss(model, x0, generator=torch.Generator().manual_seed(5))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, losses[::10]


# -- sampling -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_samplers_recover_point_mass(prediction: str) -> None:
    """With the exact denoiser of a point mass, DDPM and DDIM (any eta) return that point."""
    diffusion = GaussianDiffusion(beta_schedule("cosine", 50), prediction=prediction)
    x_star = torch.rand(1, 3, 3, 8, 8, generator=torch.Generator().manual_seed(6)) * 1.8 - 0.9
    oracle = DeltaOracle(diffusion, x_star)
    gen = torch.Generator().manual_seed(7)
    expected = x_star.expand(*SHAPE)
    torch.testing.assert_close(diffusion.sample_ddpm(oracle, SHAPE, gen), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(diffusion.sample_ddim(oracle, SHAPE, 5, 0.0, gen), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(diffusion.sample_ddim(oracle, SHAPE, 5, 1.0, gen), expected, atol=1e-4, rtol=0)


def test_clip_modes() -> None:
    """Pseudo-video frames outside [-1, 1]: 'last' keeps them, 'all' clips them, False clips nothing."""
    diffusion = GaussianDiffusion(beta_schedule("cosine", 50))
    x_star = torch.full((1, 3, 3, 8, 8), 0.5)
    x_star[:, 0] = 1.7  # a noisy corrupted frame
    x_star[:, 1] = -1.4
    oracle = DeltaOracle(diffusion, x_star)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    for clip, expected in [("last", x_star), (False, x_star), (True, x_star.clamp(-1, 1))]:
        out = diffusion.sample_ddim(oracle, SHAPE, 4, x_T=x_T, clip_x0=clip)
        torch.testing.assert_close(out, expected.expand(*SHAPE), atol=1e-4, rtol=0)


def test_ddim_eta0_deterministic_and_ddpm_seeded() -> None:
    diffusion = GaussianDiffusion(beta_schedule("cosine", 20))
    model = randomize(video_unet(**TINY_UNET))
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    a = diffusion.sample_ddim(model, SHAPE, 4, eta=0.0, generator=torch.Generator().manual_seed(1), x_T=x_T)
    b = diffusion.sample_ddim(model, SHAPE, 4, eta=0.0, generator=torch.Generator().manual_seed(2), x_T=x_T)
    assert torch.equal(a, b)
    c = diffusion.sample_ddim(model, SHAPE, 4, eta=1.0, generator=torch.Generator().manual_seed(2), x_T=x_T)
    assert not torch.allclose(a, c)  # eta > 0 injects noise

    d1 = diffusion.sample_ddpm(model, SHAPE, torch.Generator().manual_seed(1))
    d2 = diffusion.sample_ddpm(model, SHAPE, torch.Generator().manual_seed(1))
    d3 = diffusion.sample_ddpm(model, SHAPE, torch.Generator().manual_seed(2))
    assert d1.shape == SHAPE
    assert torch.equal(d1, d2)
    assert (d1 - d3).abs().mean() > 1e-2


@pytest.mark.parametrize("guidance", ["replacement", "reconstruction"])
def test_conditional_keeps_known_frames_and_image_unet_ignores_them(guidance: str) -> None:
    diffusion = GaussianDiffusion(beta_schedule("cosine", 20))
    gen = torch.Generator().manual_seed(10)
    x_known = torch.rand(2, 1, 3, 8, 8, generator=gen) * 2 - 1
    x_T = torch.randn(SHAPE, generator=gen)

    image = randomize(image_unet(**TINY_UNET))  # frames are independent: conditioning cannot reach frames 1..
    out = diffusion.sample_conditional(image, x_known, 3, steps=4, guidance=guidance, guidance_weight=5.0,
                                       x_T=x_T, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :1], x_known)
    unconditional = diffusion.sample_ddim(image, SHAPE, 4, x_T=x_T)
    torch.testing.assert_close(out[:, 1:], unconditional[:, 1:], atol=1e-5, rtol=1e-5)

    video = randomize(video_unet(**TINY_UNET))  # temporal attention: the unknown frames depend on the known one
    kwargs = dict(steps=4, guidance=guidance, guidance_weight=5.0, x_T=x_T)
    out_a = diffusion.sample_conditional(video, x_known, 3, generator=torch.Generator().manual_seed(0), **kwargs)
    out_b = diffusion.sample_conditional(video, -x_known, 3, generator=torch.Generator().manual_seed(0), **kwargs)
    assert (out_a[:, 1:] - out_b[:, 1:]).abs().max() > 1e-4


def test_reconstruction_guidance_changes_samples() -> None:
    diffusion = GaussianDiffusion(beta_schedule("cosine", 20))
    video = randomize(video_unet(**TINY_UNET))
    gen = torch.Generator().manual_seed(11)
    x_known = torch.rand(2, 1, 3, 8, 8, generator=gen) * 2 - 1
    x_T = torch.randn(SHAPE, generator=gen)
    outs = [
        diffusion.sample_conditional(video, x_known, 3, steps=3, guidance="reconstruction", guidance_weight=w,
                                     x_T=x_T, generator=torch.Generator().manual_seed(0))
        for w in (0.0, 20.0)
    ]
    replacement = diffusion.sample_conditional(video, x_known, 3, steps=3, guidance="replacement", x_T=x_T,
                                               generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(outs[0], replacement)  # weight 0 is the replacement method
    assert (outs[1][:, 1:] - outs[0][:, 1:]).abs().max() > 1e-4


@pytest.mark.parametrize("guidance", ["replacement", "reconstruction"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_autoregressive_shapes_and_info(guidance: str, sampler: str) -> None:
    diffusion = GaussianDiffusion(beta_schedule("cosine", 6))
    model = randomize(video_unet(**TINY_UNET))
    video, info = diffusion.sample_autoregressive(model, SHAPE, first_frames=1, sampler=sampler, steps=3,
                                                  guidance=guidance, generator=torch.Generator().manual_seed(0))
    assert video.shape == SHAPE and torch.isfinite(video).all()
    assert info["mode"] == "autoregressive" and info["guidance"] == guidance and info["sampler"] == sampler
    assert info["stages"] == 3  # first frame, then frames 1 and 2 one at a time
    assert info["steps"] == (3 if sampler == "ddim" else 6)


def test_autoregressive_prefix_with_causal_model_and_joint_sample() -> None:
    diffusion = GaussianDiffusion(beta_schedule("cosine", 20), prediction="v")
    model = randomize(video_unet(causal_temporal=True, **TINY_UNET))
    video, info = diffusion.sample(model, SHAPE, mode="autoregressive", steps=3, first_frames=2,
                                   frames_per_step=2, generator=torch.Generator().manual_seed(0))
    assert video.shape == SHAPE and info["stages"] == 2
    video, info = diffusion.sample_autoregressive(model, SHAPE, first_frames=2, first_stage="prefix", steps=3)
    assert video.shape == SHAPE and info["first_stage"] == "prefix"
    joint, info = diffusion.sample(model, SHAPE, steps=3)
    assert joint.shape == SHAPE and info == {"mode": "joint", "sampler": "ddim", "steps": 3, "eta": 0.0}


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="beta schedule"):
        beta_schedule("quadratic", 100)
    with pytest.raises(ValueError, match="num_timesteps"):
        beta_schedule("cosine", 0)
    with pytest.raises(ValueError, match="> 20"):
        beta_schedule("linear", 10)
    with pytest.raises(ValueError, match="prediction"):
        GaussianDiffusion(beta_schedule("cosine", 10), prediction="x0")
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion(torch.tensor([0.1, 1.5]))
    diffusion = GaussianDiffusion(beta_schedule("cosine", 10))
    model = Recorder()
    with pytest.raises(ValueError, match="1..10"):
        diffusion.sample_ddim(model, SHAPE, 11)
    with pytest.raises(ValueError, match="clip_x0"):
        diffusion.sample_ddim(model, SHAPE, 2, clip_x0="first")
    with pytest.raises(ValueError, match="shape"):
        diffusion.sample_ddim(model, (2, 3, 8), 2)  # (B, T, C, L) is a video of signals; 3-D is no video
    with pytest.raises(ValueError, match="guidance"):
        diffusion.sample_autoregressive(model, SHAPE, first_frames=1, guidance="inpaint")
    with pytest.raises(ValueError, match="first_frames"):
        diffusion.sample_autoregressive(model, SHAPE, first_frames=4)
    with pytest.raises(ValueError, match="sampler"):
        diffusion.sample(model, SHAPE, sampler="euler")
    with pytest.raises(ValueError, match="K < num_frames"):
        diffusion.sample_conditional(model, torch.zeros(SHAPE), 3)
    with pytest.raises(ValueError, match="frame_weights"):
        diffusion.training_loss(model, torch.zeros(SHAPE), frame_weights=torch.ones(2))
    with pytest.raises(ValueError, match="x0"):
        diffusion.training_loss(model, torch.zeros(2, 3, 8))  # (B, T, C, L) signals are valid; 3-D is not
