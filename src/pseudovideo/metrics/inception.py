"""Distribution metrics on network features of images (N, C, H, W) in [-1, 1]: FID, KID and CFD, the reference
statistics cache and the protocol every evaluation records (PSNR, SSIM and SWD are :mod:`pseudovideo.metrics.image`).

* CFD ("classifier Fréchet distance", ``feature_frechet_distance``) is the Fréchet distance of Gaussian fits
  to features of a small classifier trained on the dataset itself (:mod:`pseudovideo.metrics.feature_net`); it needs no
  downloaded weights and sees such shifts. It is not FID and not comparable with FID values. CKD
  (``feature_kernel_distance``) is KID's unbiased estimator in the same features: the Fréchet distance is
  biased at the few hundred samples CPU experiments use, the kernel distance is not.
* FID / KID use torch-fidelity's InceptionV3 (TF 2015-12-05 weights converted to PyTorch, 2048-d pool
  features), the same network torchmetrics' FrechetInceptionDistance / KernelInceptionDistance use. Its
  weights file is read from the torch hub cache or an explicit path; offline without it, the caller skips
  FID/KID (see ``inception_weights_available`` / ``resolve_inception_weights``).
"""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import repeat
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from pseudovideo.metrics.image import _to_unit
from pseudovideo.weights import find_weights, hub_cache_path, load_state_dict_file

__all__ = [
    "INCEPTION_FEATURE_DIM",
    "INCEPTION_WEIGHTS_FILE",
    "InceptionFeatureStats",
    "ReferenceStatsKey",
    "build_inception",
    "cached_reference_stats",
    "evaluation_protocol",
    "feature_frechet_distance",
    "fid_kid",
    "feature_kernel_distance",
    "format_protocol",
    "frechet_distance",
    "images_to_uint8",
    "inception_features",
    "inception_weights_available",
    "inception_weights_cache_path",
    "kernel_inception_distance",
    "load_reference_stats",
    "polynomial_kernel",
    "reference_stats_path",
    "resolve_inception_weights",
    "save_reference_stats",
]


# --------------------------------------------------------------------------------------------------------------
# Inception network (torch-fidelity) and its weights
# --------------------------------------------------------------------------------------------------------------

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FEATURE_DIM = 2048


def inception_weights_cache_path() -> Path:
    """``<torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth`` (``TORCH_HOME`` moves it)."""
    return hub_cache_path(INCEPTION_WEIGHTS_FILE)


def inception_weights_available(path: str | None = None) -> Path | None:
    """Locate the torch-fidelity Inception weights without downloading: ``path`` if given, else the hub cache.

    Returns the file's path, or None when the cache file is absent (the caller then skips FID/KID).
    Raises FileNotFoundError when an explicit ``path`` does not exist (a user mistake, not a skip).
    """
    return find_weights(INCEPTION_WEIGHTS_FILE, "", path, allow_download=False)[0]


def resolve_inception_weights(path: str | None = None, allow_download: bool = True) -> Path | None:
    """Like ``inception_weights_available`` but downloads into the hub cache when missing and allowed.

    On failure returns None after one UserWarning saying FID/KID are skipped and where to put the file.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    found, reason = find_weights(INCEPTION_WEIGHTS_FILE, URL_INCEPTION_V3, path, allow_download)
    if found is None:
        warnings.warn(f"FID/KID are SKIPPED: Inception weights: {reason} (eval.inception_weights=<path>; source "
                      f"{URL_INCEPTION_V3}).", UserWarning, stacklevel=2)
    return found


def build_inception(weights_path: str | Path) -> nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 (2048-d pool features) with weights from a local file.

    The file is first parsed with ``torch.load(weights_only=True)``, which refuses any pickled object other than
    tensors and plain containers, and only those validated bytes are handed to torch-fidelity, so loading never
    executes pickled code. Returns a frozen eval-mode module on CPU: uint8 (N, 3, H, W) -> tuple of (N, 2048).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file {str(path)!r} does not exist")
    raw = path.read_bytes()
    load_state_dict_file(io.BytesIO(raw), f"Inception weights file {path}")
    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=io.BytesIO(raw))


def images_to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float images (N, C, H, W), C in {1, 3} -> uint8 RGB (N, 3, H, W), rounded in memory.

    Rounding matches what 8-bit PNG encoding would store, without writing files.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, C, H, W) with C in (1, 3), got {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = repeat(images, "n 1 h w -> n c h w", c=3)
    return (_to_unit(images.float()) * 255.0).round().to(torch.uint8)


@torch.no_grad()
def inception_features(images: Tensor | Iterable[Tensor], extractor: nn.Module, batch_size: int = 64) -> Tensor:
    """2048-d Inception pool features of images in [-1, 1].

    images: one (N, C, H, W) tensor (split into ``batch_size`` chunks) or an iterable of such batches (e.g. a
    generator that samples on the fly). Batches are moved to the extractor's device; torch-fidelity resizes
    them bilinearly to 299x299. Returns (N, 2048) float32 on CPU.
    """
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    device = next(extractor.parameters()).device
    feats = [extractor(images_to_uint8(batch.to(device)))[0].float().cpu() for batch in batches]
    if not feats:
        raise ValueError("no images were given to inception_features")
    return torch.cat(feats)  # (N, 2048)


# --------------------------------------------------------------------------------------------------------------
# FID / KID
# --------------------------------------------------------------------------------------------------------------


@dataclass
class InceptionFeatureStats:
    """Gaussian statistics of a feature set: mu (D,) and sigma (D, D) in float64, optional features (N, D) for KID."""

    mu: Tensor
    sigma: Tensor
    num_images: int
    features: Tensor | None = None

    @classmethod
    def from_features(cls, features: Tensor, keep_features: bool = True) -> "InceptionFeatureStats":
        """Mean and unbiased covariance (divisor N - 1, as torch-fidelity / pytorch-fid) of features (N, D)."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"features must be (N, D) with N >= 2, got {tuple(features.shape)}")
        f64 = features.double()
        mu = f64.mean(dim=0)  # (D,)
        centred = f64 - mu
        sigma = centred.T @ centred / (f64.shape[0] - 1)  # (D, D)
        kept = features.float() if keep_features else None
        return cls(mu=mu, sigma=sigma, num_images=features.shape[0], features=kept)

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Write mu, sigma (and features) to a safetensors file with string ``metadata``."""
        tensors = {"mu": self.mu.double().contiguous().cpu(), "sigma": self.sigma.double().contiguous().cpu()}
        if self.features is not None:
            tensors["features"] = self.features.float().contiguous().cpu()
        meta = {"num_images": str(self.num_images), **(metadata or {})}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> tuple["InceptionFeatureStats", dict[str, str]]:
        """Read stats written by ``save`` (safetensors: no code execution). Returns (stats, metadata)."""
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            keys = set(f.keys())
            if not {"mu", "sigma"} <= keys or "num_images" not in meta:
                raise ValueError(f"{path} is not an InceptionFeatureStats file (keys {sorted(keys)})")
            stats = cls(
                mu=f.get_tensor("mu"),
                sigma=f.get_tensor("sigma"),
                num_images=int(meta["num_images"]),
                features=f.get_tensor("features") if "features" in keys else None,
            )
        return stats, meta


def _numerical_sqrt(evals: Tensor) -> Tensor:
    """sqrt of PSD eigenvalues with those below the numerical-rank tolerance (D * eps * max) set to 0.

    Without the cut, round-off eigenvalues of a rank-deficient covariance (fewer images than feature dims)
    each add sqrt(eps)-sized terms to the trace.
    """
    tol = evals.abs().max() * evals.shape[0] * torch.finfo(evals.dtype).eps
    return torch.where(evals > tol, evals, torch.zeros_like(evals)).sqrt()


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).

    Tr((S1 S2)^{1/2}) is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    S1^{1/2} S2 S1^{1/2} (same spectrum as S1 S2), in float64; eigenvalues below the numerical-rank tolerance
    count as 0.
    mu: (D,), sigma: (D, D) -> float.
    """
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(t).double() for t in (mu1, mu2, sigma1, sigma2))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"expected mu (D,) and sigma (D, D) for both sets, got {tuple(mu1.shape)}, {tuple(sigma1.shape)}, "
            f"{tuple(mu2.shape)}, {tuple(sigma2.shape)}"
        )
    sigma2 = sigma2.to(sigma1.device)
    evals, evecs = torch.linalg.eigh((sigma1 + sigma1.T) / 2)
    sqrt_s1 = evecs @ torch.diag(_numerical_sqrt(evals)) @ evecs.T  # S1^{1/2}
    middle = sqrt_s1 @ sigma2 @ sqrt_s1
    tr_covmean = _numerical_sqrt(torch.linalg.eigvalsh((middle + middle.T) / 2)).sum()
    mean_term = (mu1 - mu2.to(mu1.device)).square().sum()
    return float(mean_term + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr_covmean)


def feature_frechet_distance(real_features: Tensor, fake_features: Tensor) -> float:
    """Fréchet distance between Gaussian fits (mean, unbiased covariance) of two feature sets (N1, D), (N2, D).

    Used by the ``cfd`` metric on the penultimate features of the dataset-trained classifier
    (``pseudovideo.metrics.feature_net``); the same math as FID, on another network.
    """
    real = InceptionFeatureStats.from_features(real_features, keep_features=False)
    fake = InceptionFeatureStats.from_features(fake_features, keep_features=False)
    return frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)


def feature_kernel_distance(
    real_features: Tensor, fake_features: Tensor, *, subsets: int = 100, max_subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float, int]:
    """Unbiased kernel distance (KID's estimator) between two feature sets (N1, D), (N2, D).

    Used by the ``ckd`` metric on the dataset-trained classifier's features (``pseudovideo.metrics.feature_net``):
    MMD^2_u with ``polynomial_kernel`` averaged over ``subsets`` random subsets of
    min(``max_subset_size``, N1, N2) features per set (one value when that is both whole sets).
    Returns (mean, population std over subsets, subset size).
    """
    size = min(max_subset_size, real_features.shape[0], fake_features.shape[0])
    mean, std = kernel_inception_distance(real_features, fake_features, subsets, size, generator)
    return mean, std, size


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """KID kernel k(x, y) = (x . y / D + 1)^3: x (M, D), y (K, D) -> (M, K)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_inception_distance(
    feats_real: Tensor,
    feats_fake: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with ``polynomial_kernel``, averaged over random subsets.

    Each of ``subsets`` rounds draws ``subset_size`` features without replacement from each set and computes
    MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1)) - 2 sum_{i,j} k(x_i, y_j) / m^2.
    feats: (N_real, D), (N_fake, D) -> (mean, population std) over subsets, as floats.
    """
    if feats_real.ndim != 2 or feats_fake.ndim != 2 or feats_real.shape[1] != feats_fake.shape[1]:
        raise ValueError(
            f"expected (N, D) feature matrices, got {tuple(feats_real.shape)} and {tuple(feats_fake.shape)}"
        )
    m = subset_size
    n_min = min(feats_real.shape[0], feats_fake.shape[0])
    if m < 2 or m > n_min:
        raise ValueError(f"subset_size must be in [2, min(N_real, N_fake) = {n_min}], got {m}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if m == feats_real.shape[0] == feats_fake.shape[0]:
        subsets = 1  # every "subset" would be both whole sets, the same value each round: compute it once (std 0)
    x_all, y_all = feats_real.double(), feats_fake.double().to(feats_real.device)
    values = []
    for _ in range(subsets):
        x = x_all[torch.randperm(x_all.shape[0], generator=generator)[:m].to(x_all.device)]
        y = y_all[torch.randperm(y_all.shape[0], generator=generator)[:m].to(y_all.device)]
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        off_xx = k_xx.sum() - k_xx.diagonal().sum()
        off_yy = k_yy.sum() - k_yy.diagonal().sum()
        values.append((off_xx + off_yy) / (m * (m - 1)) - 2 * k_xy.sum() / m**2)
    stacked = torch.stack(values)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


def fid_kid(
    real: InceptionFeatureStats,
    fake: InceptionFeatureStats,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """{"fid", "kid_mean", "kid_std"} between two stats; KID is left out when either side kept no features.

    ``kid_subset_size`` is capped at the smaller set size (recorded in the protocol by the caller).
    """
    out = {"fid": frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)}
    if real.features is not None and fake.features is not None:
        size = min(kid_subset_size, real.features.shape[0], fake.features.shape[0])
        out["kid_mean"], out["kid_std"] = kernel_inception_distance(
            real.features, fake.features, kid_subsets, size, generator
        )
    return out


# --------------------------------------------------------------------------------------------------------------
# Reference statistics cache
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceStatsKey:
    """Identity of cached real-image statistics: caller-given dataset name, split, image side, number of images
    and image channels (a grey-converted copy of a dataset must not share the RGB statistics)."""

    dataset: str
    split: str
    resolution: int
    num_images: int
    channels: int = 3

    @property
    def filename(self) -> str:
        """File name, e.g. ``cifar10-test-32px-n10000.safetensors`` or, for 1 channel, ``mnist-test-32px-c1-n10000``
        (unsafe characters replaced by '_')."""
        safe = [re.sub(r"[^A-Za-z0-9_.]+", "_", s) for s in (self.dataset, self.split)]
        channels = "" if self.channels == 3 else f"-c{self.channels}"
        return f"{safe[0]}-{safe[1]}-{self.resolution}px{channels}-n{self.num_images}.safetensors"

    def metadata(self) -> dict[str, str]:
        """String metadata stored beside the tensors (checked when loading)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "resolution": str(self.resolution),
            "num_images": str(self.num_images),
            "channels": str(self.channels),
            "inception": INCEPTION_WEIGHTS_FILE,
            "features": str(INCEPTION_FEATURE_DIM),
        }


def reference_stats_path(cache_dir: str | Path, key: ReferenceStatsKey) -> Path:
    """``<cache_dir>/<key.filename>``."""
    return Path(cache_dir) / key.filename


def save_reference_stats(cache_dir: str | Path, key: ReferenceStatsKey, stats: InceptionFeatureStats) -> Path:
    """Store ``stats`` under the cache dir; their image count must match ``key.num_images``. Returns the path."""
    if stats.num_images != key.num_images:
        raise ValueError(f"stats hold {stats.num_images} images but the key says {key.num_images}")
    path = reference_stats_path(cache_dir, key)
    stats.save(path, key.metadata())
    return path


def load_reference_stats(cache_dir: str | Path, key: ReferenceStatsKey) -> InceptionFeatureStats | None:
    """Cached stats for ``key`` or None when absent; raises ValueError when the file's metadata disagrees."""
    path = reference_stats_path(cache_dir, key)
    if not path.is_file():
        return None
    stats, meta = InceptionFeatureStats.load(path)
    expected = key.metadata()
    wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        raise ValueError(f"cached stats {path} do not match the key (stored, expected): {wrong}; delete the file")
    return stats


def cached_reference_stats(
    cache_dir: str | Path,
    key: ReferenceStatsKey,
    images: Callable[[], Tensor | Iterable[Tensor]],
    extractor: nn.Module,
    batch_size: int = 64,
) -> InceptionFeatureStats:
    """Load the reference stats for ``key``, or compute them from ``images()`` (called only on a miss) and cache.

    ``images`` returns (N, C, H, W) images in [-1, 1] (or an iterable of batches) with N == key.num_images.
    """
    cached = load_reference_stats(cache_dir, key)
    if cached is not None:
        return cached
    stats = InceptionFeatureStats.from_features(inception_features(images(), extractor, batch_size))
    save_reference_stats(cache_dir, key, stats)
    return stats


# --------------------------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------------------------


def evaluation_protocol(
    *,
    num_real: int,
    num_generated: int,
    reference_split: str,
    resolution: int,
    weights: str,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    sampler: str = "",
) -> dict[str, str | int]:
    """Everything needed to interpret a FID/KID number (most papers leave these implicit).

    Args:
        num_real: reference images in the statistics.
        num_generated: generated images.
        reference_split: dataset split of the reference images, e.g. "train" or "test".
        resolution: image side the model generates.
        weights: "ema" or "raw" model weights used for sampling.
        kid_subsets, kid_subset_size: KID subset settings (subset size capped at the smaller set).
        sampler: free text about sampling (steps, guidance, ...).

    Returns:
        Flat dict of strings / ints, ready for JSON or ``format_protocol``.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    return {
        "inception": f"torch-fidelity InceptionV3, TF 2015-12-05 weights ({INCEPTION_WEIGHTS_FILE}), pt_inception",
        "features": f"{INCEPTION_FEATURE_DIM}-d pool3",
        "num_real": int(num_real),
        "num_generated": int(num_generated),
        "reference_split": reference_split,
        "resolution": int(resolution),
        "resize": "bilinear to 299x299 inside torch-fidelity (TF1-compatible interpolation)",
        "input_format": "float tensors in [-1, 1] -> uint8 by rounding in memory (not re-encoded as PNG/JPEG); "
        "grey repeated to RGB",
        "covariance": "unbiased (N - 1)",
        "kid": f"cubic polynomial kernel, unbiased MMD^2, {kid_subsets} subsets of "
        f"{min(kid_subset_size, num_real, num_generated)}",
        "weights": weights,
        "sampler": sampler,
    }


def format_protocol(protocol: dict[str, str | int]) -> str:
    """One-line, sorted-key JSON rendering of a protocol dict (for logs and result tables)."""
    return json.dumps(protocol, sort_keys=True)
