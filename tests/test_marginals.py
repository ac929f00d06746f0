"""First-order vs higher-order pseudo videos: per-frame marginals at T = 18 on natural images.

For every registered operator the two constructions must give frames with the same residual
variance E[(frame_t - x)^2] and the same centre of mass, within 3 %, at every level. Images: 32
CIFAR-10 test images (skipped when .data/cifar10-jpeg is absent) and seeded dead-leaves images
(occluding discs with power-law radii: edges at every scale, like natural images). blur+noise is
the one documented difference: the first-order chain also blurs the noise added at later frames,
so its frames carry less noise; its residual variance is checked against the exact prediction.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pseudovideo.corruptions import CORRUPTIONS, heat_blur_matrix
from pseudovideo.pseudo_video import build_pseudo_video_builder

T = 18
TOLERANCE = 0.03
CIFAR_TEST = Path(__file__).resolve().parents[1] / ".data" / "cifar10-jpeg" / "test"
OCTAVES = [float(math.ceil(3 * (1 - t / (T - 1)))) for t in range(T)]  # 3, 3, ..., 1, 0: whole octaves
SPECS = {
    "blur": [{"name": "blur", "max_level": 2.0}],
    "noise": [{"name": "noise", "max_level": 0.3}],
    "downsample": [{"name": "downsample", "schedule": "explicit", "levels": OCTAVES}],
    "mask": [{"name": "mask", "max_level": 0.8, "patch_size": 1}],
}
BLUR_NOISE = [{"name": "blur", "max_level": 2.0}, {"name": "noise", "max_level": 0.3}]
# mask levels near 0 mask few pixels: more draws keep the sampling error of the fraction well below 3 %
REPEATS = {"mask": 16}


def cifar_images(count: int = 32) -> torch.Tensor:
    """``count`` CIFAR-10 test images spread over the classes, (N, 3, 32, 32) in [-1, 1]."""
    if not CIFAR_TEST.is_dir():
        pytest.skip(f"CIFAR-10 JPEGs not found at {CIFAR_TEST} (see ../shared/data/README.md)")
    return _decode_cifar(count).clone()


@functools.lru_cache(maxsize=1)
def _decode_cifar(count: int) -> torch.Tensor:
    classes = sorted(p for p in CIFAR_TEST.iterdir() if p.is_dir())
    per_class = -(-count // len(classes))
    files = [f for folder in classes for f in sorted(folder.glob("*.jpg"))[:per_class]][:count]
    arrays = [np.array(Image.open(f).convert("RGB"), dtype=np.float32) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0  # (N, 3, H, W)


def dead_leaves_images(count: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Seeded dead-leaves images (N, 3, size, size) in [-1, 1]: 200 discs, radii ~ r^-3 on [1, size / 2]."""
    return _dead_leaves(count, size, seed).clone()


@functools.lru_cache(maxsize=1)
def _dead_leaves(count: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    images = torch.empty(count, 3, size, size)
    for n in range(count):
        image = torch.rand(3, 1, 1, generator=gen).expand(3, size, size).clone()
        for _ in range(200):
            u = torch.rand(1, generator=gen).item()
            radius = 1.0 / math.sqrt(1.0 - u * (1.0 - (2.0 / size) ** 2))  # inverse CDF of p(r) ~ r^-3
            cy, cx = (torch.rand(2, generator=gen) * size).tolist()
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            image[:, disc] = torch.rand(3, 1, generator=gen)
        images[n] = image * 2 - 1
    return images


IMAGES = {"cifar10": cifar_images, "dead_leaves": dead_leaves_images}


def residual_variance(video: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean squared residual per frame, (T,), of videos (B, T, C, H, W) against their clean images (B, C, H, W)."""
    return (video - clean[:, None]).square().mean(dim=(0, 2, 3, 4))


def centre_of_mass(video: torch.Tensor) -> torch.Tensor:
    """Intensity centre of mass (y, x) in pixels per image and frame, (B, T, 2); mass = (value + 1) / 2."""
    mass = (video.sum(dim=2) + video.shape[2]) / 2  # (B, T, H, W)
    coords = torch.arange(video.shape[-1], dtype=video.dtype) + 0.5
    total = mass.sum(dim=(2, 3))
    com_y = (mass.sum(dim=3) * coords).sum(dim=2) / total
    com_x = (mass.sum(dim=2) * coords).sum(dim=2) / total
    return torch.stack([com_y, com_x], dim=-1)


def both_constructions(spec: list[dict], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First- and higher-order pseudo videos (B, T, C, H, W) of the same images, seeded."""
    first = build_pseudo_video_builder(spec, T, "first_order")(images, torch.Generator().manual_seed(1))
    higher = build_pseudo_video_builder(spec, T, "higher_order")(images, torch.Generator().manual_seed(2))
    return first, higher


def assert_same_centre_of_mass(first: torch.Tensor, higher: torch.Tensor) -> None:
    """Per-image centre of mass of the two constructions within 3 % of the image side, at every frame."""
    shift = (centre_of_mass(first) - centre_of_mass(higher)).abs().mean(dim=0).max(dim=-1).values  # (T,)
    side = first.shape[-1]
    assert bool((shift <= TOLERANCE * side).all()), f"centre-of-mass gap / side per frame: {(shift / side).tolist()}"


def test_every_registered_operator_is_covered() -> None:
    assert set(SPECS) == set(CORRUPTIONS)


@pytest.mark.parametrize("source", sorted(IMAGES))
@pytest.mark.parametrize("operator", sorted(SPECS))
def test_first_and_higher_order_marginals_match(source: str, operator: str) -> None:
    images = IMAGES[source]().repeat(REPEATS.get(operator, 1), 1, 1, 1)  # (B, C, H, W)
    first, higher = both_constructions(SPECS[operator], images)
    var_first, var_higher = residual_variance(first, images), residual_variance(higher, images)
    ratio = var_first[:-1] / var_higher[:-1]  # frames 0..T-2 (frame T-1 is clean in both)
    assert bool(((ratio - 1).abs() <= TOLERANCE).all()), f"{operator}: first / higher residual variance {ratio.tolist()}"
    assert var_higher[:-1].min() > 1e-6  # every corrupted frame is really corrupted
    assert var_first[-1] == 0 and var_higher[-1] == 0
    assert_same_centre_of_mass(first, higher)


def blurred_noise_gain(size_h: int, size_w: int, sigma: float) -> float:
    """Mean variance of unit white noise after a blur of sigma: tr(M_H M_H^T) / H * tr(M_W M_W^T) / W.

    M is symmetric and M(s) M(s) = M(sqrt(2) s), so each factor is tr M(sqrt(2) sigma) / size.
    """
    gain_h = torch.trace(heat_blur_matrix(size_h, math.sqrt(2) * sigma)).item() / size_h
    gain_w = torch.trace(heat_blur_matrix(size_w, math.sqrt(2) * sigma)).item() / size_w
    return gain_h * gain_w


@pytest.mark.parametrize("source", sorted(IMAGES))
def test_blur_noise_first_order_blurs_later_noise_as_predicted(source: str) -> None:
    images = IMAGES[source]()
    first, higher = both_constructions(BLUR_NOISE, images)
    builder = build_pseudo_video_builder(BLUR_NOISE, T, "higher_order")
    sigma, noise = builder.levels[:, 0].double(), builder.levels[:, 1].double()  # (T,)
    blur_only = build_pseudo_video_builder(BLUR_NOISE[:1], T, "higher_order")(images)
    signal = residual_variance(blur_only, images).double()  # E[(B(sigma_t) x - x)^2]
    var_first = residual_variance(first, images).double()
    var_higher = residual_variance(higher, images).double()
    # higher order: the blurred image plus fresh noise of std noise_t
    torch.testing.assert_close(var_higher[:-1], signal[:-1] + noise[:-1] ** 2, rtol=TOLERANCE, atol=0)
    # first order: the noise added when making frame j (variance noise_j^2 - noise_{j+1}^2) is blurred
    # by the later increments, sqrt(sigma_t^2 - sigma_j^2) in all, before frame t
    h, w = images.shape[-2:]
    predicted = signal.clone()
    for t in range(T - 1):
        for j in range(t, T - 1):
            added = noise[j] ** 2 - noise[j + 1] ** 2
            spread = math.sqrt(max(sigma[t].item() ** 2 - sigma[j].item() ** 2, 0.0))
            predicted[t] += added * blurred_noise_gain(h, w, spread)
    torch.testing.assert_close(var_first[:-1], predicted[:-1], rtol=TOLERANCE, atol=0)
    # so: equal at frame T-2 (one step from the clean image), strictly less noise before it
    assert abs(var_first[T - 2] / var_higher[T - 2] - 1) <= TOLERANCE
    assert bool((var_first[: T - 3] < (1 - TOLERANCE) * var_higher[: T - 3]).all())
    assert_same_centre_of_mass(first, higher)
