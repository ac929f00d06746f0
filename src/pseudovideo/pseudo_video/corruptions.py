"""Corruption operators used to build pseudo videos, for images and 1-D signals.

Every operator corrupts a batch x of shape (N, C, H, W) with one level per sample, level of shape
(N,), so frames of different levels are corrupted in one batched call. A batch of signals (N, C, L) is
corrupted as the one-row images (N, C, 1, L) (:func:`as_image_rows`): every operator acts per axis and
leaves an axis of size 1 exactly as it is (the blur matrix of a 1-pixel side is [1], downsampling keeps
one row, a mask patch becomes a span of ``patch_size`` samples), so the same exact kernels, increments
and compositions hold in 1-D. Level 0 returns the sample
bit-identical. ``increment(level_from, level_to)`` gives the level to apply to a frame that is
already at ``level_from`` so the result is at ``level_to``; it is what the first-order (recursive)
pseudo video construction uses. Randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor


def as_image_rows(x: Tensor) -> Tensor:
    """Signals (N, C, L) as one-row images (N, C, 1, L), a view; images (N, C, H, W) and anything else unchanged."""
    return x[:, :, None] if isinstance(x, Tensor) and x.dim() == 3 else x


def _check_batch(x: Tensor, level: Tensor, name: str, max_level: float) -> Tensor:
    """Validate x (N, C, H, W) and level (N,); return level as a float32 CPU tensor.

    Levels live on the host so validation, kernel radii and grouping by level cost no GPU syncs
    when the caller (e.g. the pseudo video builder) already passes CPU levels.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: x must be a 4-D tensor (N, C, H, W) of images or a 3-D tensor (N, C, L) of signals, got shape {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: x must be a floating-point tensor, got dtype {x.dtype}")
    level = torch.as_tensor(level).detach().to(device="cpu", dtype=torch.float32)
    if level.dim() == 0:
        level = level.expand(x.shape[0])
    if level.shape != (x.shape[0],):
        raise ValueError(f"{name}: level must have shape (N,) = ({x.shape[0]},), got {tuple(level.shape)}")
    if not bool(((level >= 0) & (level <= max_level)).all()):  # also rejects NaN
        raise ValueError(f"{name}: levels must lie in [0, {max_level}], got {level.tolist()}")
    return level


_CACHE: dict[tuple, Tensor] = {}
_MAX_CACHED = 256


def _cached(key: tuple, make: Callable[[], Tensor]) -> Tensor:
    """``make()`` computed once per ``key`` (a bounded memo of small constant tensors).

    Pseudo-video levels, and so the blur kernels and their device copies, are the same every training
    step; rebuilding them would cost host time, and copying them afresh from pageable host memory would
    synchronise the GPU stream at every operator call.
    """
    value = _CACHE.get(key)
    if value is None:
        if len(_CACHE) >= _MAX_CACHED:
            _CACHE.clear()
        value = _CACHE[key] = make()
    return value


def _on_device(host: Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """A copy of a small host tensor on ``device`` (cached for accelerators)."""
    if device.type == "cpu":
        return host.to(dtype)
    key = ("copy", host.numpy().tobytes(), tuple(host.shape), str(device), dtype)
    return _cached(key, lambda: host.to(device=device, dtype=dtype))


def _randn(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise of ``shape`` with like's dtype/device, drawn on the generator's device."""
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=like.dtype).to(like.device)


def _rand(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) samples of ``shape`` in float32 on like's device, drawn on the generator's device."""
    device = generator.device if generator is not None else like.device
    return torch.rand(tuple(shape), generator=generator, device=device, dtype=torch.float32).to(like.device)


class Corruption(ABC):
    """Abstract corruption operator: ``apply(x (N, C, H, W), level (N,)) -> (N, C, H, W)``.

    Subclasses implement ``_apply`` (levels already validated) and ``increment``. ``apply`` keeps
    level-0 samples bit-identical to the input whatever the backend does (e.g. TF32 convolutions).
    """

    name: str = "corruption"
    #: largest valid level (e.g. 1 for a masking probability)
    max_level: float = math.inf

    def apply(self, x: Tensor, level: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Corrupt each sample x[n] (N, C, H, W) at level[n] (N,); returns (N, C, H, W), same dtype/device.

        Signals (N, C, L) are corrupted as one-row images (module docstring) and returned as (N, C, L).
        """
        if isinstance(x, Tensor) and x.dim() == 3:
            return self.apply(as_image_rows(x), level, generator)[:, :, 0]
        level_host = _check_batch(x, level, self.name, self.max_level)
        level = _on_device(level_host, x.device)
        out = self._apply(x, level, generator, level_host=level_host)
        if bool((level_host == 0).any()):  # a host check: no device sync, and no full-size select when unneeded
            out = torch.where(rearrange(level, "n -> n 1 1 1") > 0, out, x)
        return out

    @abstractmethod
    def _apply(self, x: Tensor, level: Tensor, generator: torch.Generator | None, *, level_host: Tensor) -> Tensor:
        """Corrupt x (N, C, H, W) with validated float32 levels (N,) on x's device (and a CPU copy)."""

    @abstractmethod
    def increment(self, level_from: Tensor, level_to: Tensor) -> Tensor:
        """Level that takes a frame at level_from to level_to (level_to >= level_from); same shape as inputs."""

    def __call__(self, x: Tensor, level: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Alias of ``apply``."""
        return self.apply(x, level, generator)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def _quadrature_increment(level_from: Tensor, level_to: Tensor) -> Tensor:
    """sqrt(to^2 - from^2), clamped at 0: the increment of Gaussian-variance semigroups."""
    level_from = torch.as_tensor(level_from, dtype=torch.float32)
    level_to = torch.as_tensor(level_to, dtype=torch.float32, device=level_from.device)
    return torch.sqrt(torch.clamp(level_to.square() - level_from.square(), min=0.0))


def _dct_matrix(size: int) -> Tensor:
    """Orthonormal DCT-II matrix (size, size) in float64: row k is the k-th cosine basis vector."""
    k = torch.arange(size, dtype=torch.float64)[:, None]
    i = torch.arange(size, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * k * (2 * i + 1) / (2 * size))  # (K, I)
    basis[0] /= math.sqrt(2.0)
    return basis * math.sqrt(2.0 / size)


def heat_blur_matrix(size: int, sigma: float) -> Tensor:
    """Discrete-Gaussian blur of one axis as a (size, size) float64 matrix: ``out = M @ x`` along that axis.

    M = D^T diag(exp(-2 sigma^2 sin^2(pi k / (2 size)))) D with D the orthonormal DCT-II (k = 0..size-1):
    the heat semigroup exp(sigma^2 / 2 * Laplacian) of the second-difference Laplacian with
    half-sample symmetric (Neumann) borders. Away from the borders its kernel is the discrete
    Gaussian e^{-s} I_n(s), s = sigma^2 (Lindeberg 1990), whose variance is exactly sigma^2;
    M(a) M(b) = M(sqrt(a^2 + b^2)), M is symmetric with rows summing to 1, and sigma 0 gives I exactly.
    """
    if sigma == 0:
        return torch.eye(size, dtype=torch.float64)
    dct = _dct_matrix(size)
    frequencies = math.pi * torch.arange(size, dtype=torch.float64) / (2 * size)
    gains = torch.exp(-2.0 * sigma**2 * torch.sin(frequencies) ** 2)  # (K,)
    return dct.T @ (gains[:, None] * dct)


class GaussianBlur(Corruption):
    """Gaussian blur, level = sigma in pixels: the discrete Gaussian applied as one matrix per axis.

    Why this kernel: the first-order construction blurs a frame at sigma_from by the increment
    sqrt(sigma_to^2 - sigma_from^2) and needs blur(a) then blur(b) to equal blur(sqrt(a^2 + b^2)). A
    sampled, truncated Gaussian breaks this at small sigma (sigma 0.35 has variance ~0.03, not 0.12).
    The discrete Gaussian e^{-s} I_n(s) with s = sigma^2 is the lattice heat kernel: variance exactly
    sigma^2 for every sigma, positive (no ringing, unlike a Gaussian cut in the Fourier domain), and an
    exact semigroup. With half-sample symmetric borders it is diagonal in the DCT-II basis, so each axis
    is a dense (size, size) matrix (:func:`heat_blur_matrix`, built in float64 once per size and sigma,
    cached) and a batch is two batched matmuls on the device: out[n] = M_H(sigma_n) x[n] M_W(sigma_n)^T.
    increment = sqrt(to^2 - from^2), exact up to float rounding.
    """

    name = "blur"

    def _apply(self, x: Tensor, level: Tensor, generator: torch.Generator | None, *, level_host: Tensor) -> Tensor:
        n, _, h, w = x.shape
        if n == 0:
            return x.clone()
        rows = self._matrices(level_host, h, x)  # (N, H, H)
        cols = self._matrices(level_host, w, x)  # (N, W, W)
        return rows[:, None] @ x @ cols.transpose(1, 2)[:, None]  # (N, C, H, W)

    @staticmethod
    def _matrices(sigma_host: Tensor, size: int, like: Tensor) -> Tensor:
        """Per-sample blur matrices (N, size, size), or (1, size, size) when all sigmas agree, on like's device.

        Only the distinct sigmas' matrices are built and cached (a pseudo video has T - 1 of them), then
        gathered per sample on the device (a first-order step shares one matrix: no gather). In like's
        dtype, so products round as the backend's matmul does (e.g. to ~1e-3 if the caller enables TF32).
        """
        values, inverse = torch.unique(sigma_host, return_inverse=True)
        key = ("blur", values.numpy().tobytes(), size, str(like.device), like.dtype)

        def make() -> Tensor:
            stack = torch.stack([heat_blur_matrix(size, float(v)) for v in values.tolist()])  # (U, size, size)
            return stack.to(device=like.device, dtype=like.dtype)

        stack = _cached(key, make)
        if values.numel() <= 1:
            return stack  # (1, size, size): broadcast over the batch
        return stack[_on_device(inverse, like.device, torch.long)]  # (N, size, size)

    def increment(self, level_from: Tensor, level_to: Tensor) -> Tensor:
        """sqrt(to^2 - from^2): blurring sigma_a then sigma_b equals blurring sqrt(a^2 + b^2)."""
        return _quadrature_increment(level_from, level_to)


class GaussianNoise(Corruption):
    """Additive Gaussian noise, level = standard deviation; increment = sqrt(to^2 - from^2) (exact)."""

    name = "noise"

    def _apply(self, x: Tensor, level: Tensor, generator: torch.Generator | None, *, level_host: Tensor) -> Tensor:
        noise = _randn(x.shape, x, generator)
        return x + rearrange(level.to(x.dtype), "n -> n 1 1 1") * noise

    def increment(self, level_from: Tensor, level_to: Tensor) -> Tensor:
        """sqrt(to^2 - from^2): independent Gaussian variances add."""
        return _quadrature_increment(level_from, level_to)


class Downsample(Corruption):
    """Pixelation: area-downsample by 2**level (size round(H / 2**level), >= 1), nearest-exact upsample back.

    Levels may be fractional for direct (higher-order) frames; nearest-exact upsampling keeps the
    pixel grid centred. increment(from, to) = to: for integer levels on sizes divisible by 2**to the
    block averages nest (averaging 2**to blocks of an image already averaged over aligned 2**from
    blocks gives the 2**to average of the clean image), so the first-order chain reproduces the
    higher-order frames exactly. Elsewhere the blocks do not nest and the chain drifts, so
    :meth:`first_order_problem` names the levels and sizes the first-order construction must refuse.
    Samples are grouped by unique level (a loop over distinct levels, not over samples).
    """

    name = "downsample"

    @staticmethod
    def _size(size: int, level: float) -> int:
        """Downsampled size round_half_up(size / 2**level), at least 1."""
        return max(1, int(math.floor(size / 2.0**level + 0.5)))

    @classmethod
    def first_order_problem(cls, levels: Sequence[float], sizes: Sequence[int] = ()) -> str | None:
        """Why a first-order chain through ``levels`` (frame levels) is not exact on images of ``sizes``; None if it is.

        Exact needs whole-octave (integer) levels and, per image side, downsampled sizes that each
        divide the next finer one (e.g. a side divisible by 2**max_level).
        """
        values = sorted({0.0, *(float(v) for v in levels)})
        fractional = [v for v in values if v != int(v)]
        if fractional:
            return (
                f"downsample levels {[round(v, 4) for v in fractional]} are not whole octaves; the first-order "
                "construction composes downsampling exactly only at integer levels (0, 1, 2, ...: block averages "
                "nest), so use integer levels (schedule 'explicit'), or construction higher_order"
            )
        for size in sizes:
            grid = [cls._size(size, v) for v in values]  # finest (level 0, the image) to coarsest
            if any(finer % coarser for finer, coarser in zip(grid, grid[1:])):
                return (
                    f"downsample levels {[int(v) for v in values]} give grids {grid} on an image side of {size} px "
                    "that do not nest (each must divide the finer one), so the first-order chain would drift; "
                    f"expected a side divisible by 2**{int(values[-1])} = {2 ** int(values[-1])} or smaller levels"
                )
        return None

    def _apply(self, x: Tensor, level: Tensor, generator: torch.Generator | None, *, level_host: Tensor) -> Tensor:
        _, _, h, w = x.shape
        out = x.clone()
        for value in torch.unique(level_host).tolist():
            if value == 0:
                continue
            idx = _on_device(torch.nonzero(level_host == value).squeeze(1), x.device, torch.long)
            small = F.adaptive_avg_pool2d(x[idx], (self._size(h, value), self._size(w, value)))
            out[idx] = F.interpolate(small, size=(h, w), mode="nearest-exact")
        return out

    def increment(self, level_from: Tensor, level_to: Tensor) -> Tensor:
        """level_to: dyadic block averages nest, so the target factor is applied directly."""
        level_from = torch.as_tensor(level_from, dtype=torch.float32)
        return torch.as_tensor(level_to, dtype=torch.float32, device=level_from.device).clone()


class PatchMask(Corruption):
    """Random patch masking: each patch_size x patch_size patch is replaced by fill_value with prob. level.

    On signals (one-row images) a patch is a span of patch_size samples.

    Masks are Bernoulli per patch (shared across channels), so masking composes: masking a frame at
    level p_from again with (p_to - p_from) / (1 - p_from) leaves each patch visible with
    probability 1 - p_to, the exact marginal of level p_to.
    """

    name = "mask"
    max_level = 1.0

    def __init__(self, patch_size: int = 4, fill_value: float = 0.0) -> None:
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"mask: patch_size must be an integer >= 1, got {patch_size!r}")
        if not math.isfinite(fill_value):
            raise ValueError(f"mask: fill_value must be finite, got {fill_value!r}")
        self.patch_size = patch_size
        self.fill_value = float(fill_value)

    def patch_mask(
        self, shape: Sequence[int], level: Tensor, like: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """Boolean mask (N, 1, H, W), True where masked, from Bernoulli(level[n]) per patch."""
        n, _, h, w = shape
        ps = self.patch_size
        grid_h, grid_w = -(-h // ps), -(-w // ps)
        masked = _rand((n, 1, grid_h, grid_w), like, generator) < rearrange(level, "n -> n 1 1 1")
        masked = repeat(masked, "n 1 gh gw -> n 1 (gh ph) (gw pw)", ph=ps, pw=ps)  # (N, 1, gh*ps, gw*ps)
        return masked[:, :, :h, :w]

    def _apply(self, x: Tensor, level: Tensor, generator: torch.Generator | None, *, level_host: Tensor) -> Tensor:
        masked = self.patch_mask(x.shape, level, x, generator)
        return torch.where(masked, torch.full((), self.fill_value, dtype=x.dtype, device=x.device), x)

    def increment(self, level_from: Tensor, level_to: Tensor) -> Tensor:
        """(to - from) / (1 - from): the fraction of still-visible patches to mask; 1 when from == 1."""
        level_from = torch.as_tensor(level_from, dtype=torch.float32)
        level_to = torch.as_tensor(level_to, dtype=torch.float32, device=level_from.device)
        denom = torch.clamp(1.0 - level_from, min=1e-12)
        inc = torch.clamp((level_to - level_from) / denom, 0.0, 1.0)
        return torch.where(level_from >= 1.0, torch.ones_like(inc), inc)


class Compose:
    """Apply K operators in order, one level per operator: ``apply(x (N, C, H, W), levels (N, K))``.

    Not a ``Corruption`` itself because its level has one column per operator. With no operators
    (K = 0) it is the identity.
    """

    def __init__(self, operators: Sequence[Corruption]) -> None:
        operators = tuple(operators)
        for op in operators:
            if not isinstance(op, Corruption):
                raise ValueError(f"Compose operators must be Corruption instances, got {type(op).__name__}")
        self.operators = operators

    @property
    def num_operators(self) -> int:
        """Number K of composed operators."""
        return len(self.operators)

    def apply(self, x: Tensor, levels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Corrupt x (N, C, H, W) with operator k at levels[:, k] (N, K), in order; returns (N, C, H, W).

        Signals (N, C, L) are corrupted as one-row images and returned as (N, C, L).
        """
        if isinstance(x, Tensor) and x.dim() == 3:
            return self.apply(as_image_rows(x), levels, generator)[:, :, 0]
        levels = torch.as_tensor(levels)
        if levels.dim() != 2 or levels.shape[1] != self.num_operators:
            raise ValueError(
                f"Compose: levels must have shape (N, K={self.num_operators}), got {tuple(levels.shape)}"
            )
        for k, op in enumerate(self.operators):
            x = op.apply(x, levels[:, k], generator)
        return x

    __call__ = apply

    def increment(self, levels_from: Tensor, levels_to: Tensor) -> Tensor:
        """Per-operator increments, shapes (..., K) -> (..., K)."""
        levels_from = torch.as_tensor(levels_from, dtype=torch.float32)
        levels_to = torch.as_tensor(levels_to, dtype=torch.float32, device=levels_from.device)
        if not self.operators:
            return torch.zeros_like(levels_from)
        return torch.stack(
            [op.increment(levels_from[..., k], levels_to[..., k]) for k, op in enumerate(self.operators)], dim=-1
        )


CORRUPTIONS: dict[str, type[Corruption]] = {
    "blur": GaussianBlur,
    "noise": GaussianNoise,
    "downsample": Downsample,
    "mask": PatchMask,
}


def corruption_params(name: str) -> tuple[str, ...]:
    """Names of the constructor parameters accepted by operator ``name``."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {sorted(CORRUPTIONS)}")
    cls = CORRUPTIONS[name]
    if cls.__init__ is object.__init__:
        return ()
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def build_corruption(name: str, **params: object) -> Corruption:
    """Build a corruption operator by registry name ("blur", "noise", "downsample", "mask")."""
    valid = corruption_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"corruption {name!r} got unknown parameter(s) {unknown}; valid parameters: {list(valid)}")
    return CORRUPTIONS[name](**params)
