"""Tests for tokenizer losses (reconstruction, LPIPS, adversarial) and the PatchGAN discriminator."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lpips
import pytest
import torch
import torchvision

from pseudovideo.models.discriminator import PatchGANDiscriminator
from pseudovideo.training.losses import (
    LPIPS_BACKBONE_FILES,
    PerceptualLoss,
    adaptive_gan_weight,
    build_perceptual_loss,
    frame_weights,
    gan_factor,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)

# ---------------------------------------------------------------------------------------------- reconstruction


def test_frame_weights_values() -> None:
    w = frame_weights(4, 3.0)
    assert w.shape == (4,)
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1.0, 3.0]) / 6.0)
    torch.testing.assert_close(frame_weights(5, 1.0), torch.full((5,), 0.2))
    torch.testing.assert_close(frame_weights(1, 7.0), torch.ones(1))


@pytest.mark.parametrize("args", [(0, 1.0), (3, 0.0), (3, -1.0)])
def test_frame_weights_rejects_bad_values(args: tuple[int, float]) -> None:
    with pytest.raises(ValueError):
        frame_weights(*args)


def test_reconstruction_loss_hand_computed() -> None:
    target = torch.zeros(2, 3, 1, 4, 4)
    recon = target.clone()
    recon[:, 1] = 0.5  # only frame 1 is wrong, by 0.5 everywhere
    recon[0, 2, 0, 0, 0] = 2.0  # frame 2: one pixel of 2 * 1 * 16 = 32 is wrong by 2
    w = torch.tensor([0.2, 0.3, 0.5])
    e1_l1, e2_l1 = 0.5, 2.0 / 32
    e1_l2, e2_l2 = 0.25, 4.0 / 32
    torch.testing.assert_close(reconstruction_loss(recon, target, w, "l1"), torch.tensor(0.3 * e1_l1 + 0.5 * e2_l1))
    torch.testing.assert_close(reconstruction_loss(recon, target, w, "l2"), torch.tensor(0.3 * e1_l2 + 0.5 * e2_l2))
    torch.testing.assert_close(
        reconstruction_loss(recon, target, w, "l1+l2"),
        torch.tensor(0.3 * (e1_l1 + e1_l2) + 0.5 * (e2_l1 + e2_l2)),
    )


def test_reconstruction_loss_gradient_and_validation() -> None:
    target = torch.randn(1, 2, 1, 3, 3)
    recon = torch.zeros(1, 2, 1, 3, 3, requires_grad=True)
    loss = reconstruction_loss(recon, target, frame_weights(2, 3.0), "l2")
    loss.backward()
    # d/dx of w_t * mean((x - y)^2) = 2 w_t (x - y) / 9 per element
    expected = 2 * torch.tensor([0.25, 0.75]).view(1, 2, 1, 1, 1) * (0 - target) / 9
    torch.testing.assert_close(recon.grad, expected)
    with pytest.raises(ValueError, match="kind"):
        reconstruction_loss(recon, target, frame_weights(2, 1.0), "l3")
    with pytest.raises(ValueError, match="weights"):
        reconstruction_loss(recon, target, frame_weights(3, 1.0))
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss(recon[:, :1], target, frame_weights(2, 1.0))


# ---------------------------------------------------------------------------------------------- perceptual


def _random_backbone_file(tmp_path: Path, net: str, name: str | None = None) -> tuple[Path, dict[str, torch.Tensor]]:
    """Save a randomly initialised torchvision backbone in checkpoint format (``features.*`` keys)."""
    torch.manual_seed(0)
    if net == "vgg":
        # just the conv trunk of vgg16 (LPIPS uses nothing else), avoiding 120M classifier parameters
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    else:
        features = torchvision.models.alexnet().features
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.weight"] = torch.zeros(2, 2)  # real checkpoints carry classifier keys: must be ignored
    path = tmp_path / (name or f"{net}-random.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def vgg_lpips(tmp_path_factory: pytest.TempPathFactory) -> tuple[PerceptualLoss, dict[str, torch.Tensor]]:
    path, state = _random_backbone_file(tmp_path_factory.mktemp("vgg"), "vgg")
    loss = build_perceptual_loss("vgg", backbone_weights=str(path), allow_download=False)
    assert loss is not None
    return loss, state


def test_lpips_local_path_loads_backbone_and_heads(vgg_lpips: tuple[PerceptualLoss, dict]) -> None:
    loss, state = vgg_lpips
    torch.testing.assert_close(getattr(loss.model.net.slice1, "0").weight, state["features.0.weight"])
    torch.testing.assert_close(getattr(loss.model.net.slice5, "28").bias, state["features.28.bias"])
    heads = torch.load(Path(lpips.__file__).parent / "weights/v0.1/vgg.pth", map_location="cpu", weights_only=True)
    torch.testing.assert_close(loss.model.lin0.model[1].weight, heads["lin0.model.1.weight"])
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.model.training  # stays a fixed metric


def test_lpips_zero_on_identical_and_grows_with_noise(vgg_lpips: tuple[PerceptualLoss, dict]) -> None:
    loss, _ = vgg_lpips
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 16, 16, generator=gen) * 2 - 1
    noise = torch.randn(x.shape, generator=gen)
    d0 = loss(x, x)
    assert d0.shape == (3,)
    torch.testing.assert_close(d0, torch.zeros(3), atol=1e-7, rtol=0)
    d_small = loss(x, (x + 0.05 * noise).clamp(-1, 1))
    d_large = loss(x, (x + 0.5 * noise).clamp(-1, 1))
    assert (d_small > 0).all() and (d_large > d_small).all()


def test_lpips_grey_input_and_gradient(vgg_lpips: tuple[PerceptualLoss, dict]) -> None:
    loss, _ = vgg_lpips
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    d = loss(x, y)
    torch.testing.assert_close(d, loss(x.repeat(1, 3, 1, 1), y.detach().repeat(1, 3, 1, 1)))
    d.sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="C in"):
        loss(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16))


def test_lpips_from_hub_cache_and_alex_min_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, state = _random_backbone_file(tmp_path / "hub" / "checkpoints", "alex", LPIPS_BACKBONE_FILES["alex"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache path must build without any warning
        loss = build_perceptual_loss("alex", allow_download=False)
    assert loss is not None
    torch.testing.assert_close(getattr(loss.model.net.slice5, "10").weight, state["features.10.weight"])
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, -x).item() > 0
    with pytest.raises(ValueError, match="at least 31x31"):
        loss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


def test_lpips_missing_weights_returns_none_with_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build_perceptual_loss("vgg", allow_download=False) is None
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "OFF" in message and "vgg16-397923af.pth" in message and "loss.perceptual_weights=" in message


def test_lpips_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_perceptual_loss("vgg", backbone_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="resnet"):
        build_perceptual_loss("resnet", allow_download=False)


# ---------------------------------------------------------------------------------------------- adversarial


def test_hinge_losses_hand_computed() -> None:
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5], relu(1 + fake) = [0, 1]
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (0.25 + 0.5)))
    torch.testing.assert_close(hinge_g_loss(torch.tensor([[1.0, 3.0]])), torch.tensor(-2.0))


def test_adaptive_gan_weight_is_gradient_norm_ratio() -> None:
    w = torch.randn(4, 3, requires_grad=True)
    nll = 3.0 * w.sum()  # gradient 3 everywhere: norm 3 * sqrt(12)
    g = 0.5 * w.sum() + 0.0 * w.square().sum()  # gradient 0.5: norm 0.5 * sqrt(12)
    lam = adaptive_gan_weight(nll, g, w)
    expected = 3 * math.sqrt(12) / (0.5 * math.sqrt(12) + 1e-4)
    assert not lam.requires_grad
    assert lam.item() == pytest.approx(expected, rel=1e-6)
    assert adaptive_gan_weight(nll, g, w, max_weight=2.0).item() == pytest.approx(2.0)
    (nll + lam * g).backward()  # the graph survives for the real backward
    torch.testing.assert_close(w.grad, torch.full_like(w, 3 + 0.5 * lam.item()))
    with pytest.raises(ValueError, match="requires grad"):
        adaptive_gan_weight(torch.tensor(1.0), torch.tensor(1.0), w)


def test_gan_factor() -> None:
    assert gan_factor(0, 10) == 0.0
    assert gan_factor(9, 10) == 0.0
    assert gan_factor(10, 10) == 1.0
    assert gan_factor(50, 10, factor=0.1) == 0.1


@pytest.mark.parametrize(("size", "strided"), [(16, 2), (32, 3), (64, 3)])
@pytest.mark.parametrize("norm", ["group", "spectral", "none"])
def test_discriminator_shapes(size: int, strided: int, norm: str) -> None:
    disc = PatchGANDiscriminator(in_channels=1, base_channels=8, num_layers=3, image_size=size, norm=norm)
    assert disc.num_strided == strided
    out = disc(torch.randn(2, 1, size, size))
    side = size // 2**strided - 2
    assert out.shape == (2, 1, side, side)


def test_discriminator_validation_and_batch_independence() -> None:
    with pytest.raises(ValueError, match="image_size=3"):
        PatchGANDiscriminator(image_size=3)
    with pytest.raises(ValueError, match="norm"):
        PatchGANDiscriminator(norm="batch")
    standard = PatchGANDiscriminator(base_channels=8)  # all 3 layers strided
    with pytest.raises(ValueError, match="image_size=16"):
        standard(torch.randn(1, 3, 16, 16))
    torch.manual_seed(0)
    disc = PatchGANDiscriminator(base_channels=8, image_size=16)
    x = torch.randn(3, 3, 16, 16, requires_grad=True)
    out = disc(x)
    torch.testing.assert_close(disc(x[:1]), out[:1])  # GroupNorm: no statistics across the batch
    hinge_g_loss(out).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
