"""Turn a batch of images into pseudo videos whose last frame is the clean image.

A pseudo video of an image x (C, H, W) is a clip (T, C, H, W) whose frame T-1 is exactly x and
whose earlier frames are progressively more corrupted (frame 0 the most). Two constructions
(paper section 4.1):

- ``first_order``: a Markov chain like a diffusion forward process; frame t-1 is made from frame t
  by applying each operator with the increment that takes level(t) to level(t-1), with fresh
  randomness each step. Given frame t, earlier frames carry no more information about x.
- ``higher_order``: every corrupted frame is made directly from x with independent randomness,
  frame t = op(x, level(t)), so earlier frames add information about x.
- ``copies``: T identical clean copies of x (operators and levels are ignored). The control that
  gives a video model the same number of frames, so the same latent capacity, without any
  corruption: it separates "more frames" from "the corruption's self-supervision".
- ``shuffled``: the higher-order frames in a random order (a new permutation of frames 0..T-2 per video), the
  clean frame still last: the control for "does the ordered progression matter?".
- ``noise_frames``: every frame but the last is pure Gaussian noise, mean 0 and std ``NOISE_FRAMES_STD`` = 0.5,
  independent of the image (operators and levels are ignored): a video that carries no information about x,
  the "non-informative augmentation" control. 0.5 is the pixel std of natural images in [-1, 1] (CIFAR-10:
  0.50 at 32x32, 0.47 at 16x16, over 5,000 training images), so the noise frames have the scale of an image
  and the model's input statistics stay those of a pseudo video.

For a single blur, noise, mask or whole-octave downsample operator the first- and higher-order
constructions give every frame the same marginal distribution (blur is the discrete Gaussian, an
exact semigroup; fractional downsample levels do not nest, so first_order refuses them). For blur
composed with noise, a first-order step also blurs the noise already in the frame; its noise increments
are coloured to restore the higher-order frame's exact conditional law given the image (same mean, white
noise of the same variance: :mod:`pseudovideo.pseudo_video.exact_composition`). Other compositions (e.g. with mask or
downsample) are not known to be exact: :mod:`pseudovideo.pseudo_video.marginals` measures how far they are.

Pseudo videos are built in float32 (or the input's wider dtype) with autocast off, so mixed precision
cannot break the exact compositions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from einops import rearrange, repeat
from torch import Tensor

from pseudovideo.pseudo_video.corruptions import Compose, Corruption, Downsample, as_image_rows, build_corruption
from pseudovideo.pseudo_video.exact_composition import blur_noise_chain, first_order_exact
from pseudovideo.pseudo_video.schedules import level_schedule

CONSTRUCTIONS = ("first_order", "higher_order", "copies", "shuffled", "noise_frames")
#: constructions whose corrupted frames do not depend on the operators (which may then be absent)
IMAGE_FREE = ("copies", "noise_frames")
NOISE_FRAMES_STD = 0.5  # std of the noise frames of construction noise_frames (module docstring)
SCHEDULE_KEYS = ("name", "schedule", "max_level", "min_level", "levels")


class PseudoVideoBuilder:
    """Build pseudo videos (B, T, C, H, W) from images (B, C, H, W) with K operators and levels (T, K).

    levels[t, k] is the level of operator k at frame t; row T-1 must be all zeros (the clean frame)
    and levels must be non-negative and non-increasing in t. construction is "first_order",
    "higher_order", "copies", "shuffled" or "noise_frames" (see the module docstring). No
    clamping is done. first_order refuses downsample levels whose block averages do not nest.
    """

    def __init__(self, operators: Sequence[Corruption], levels: Tensor, construction: str) -> None:
        self.compose = Compose(operators)
        if construction not in CONSTRUCTIONS:
            raise ValueError(f"unknown construction {construction!r}; expected one of {list(CONSTRUCTIONS)}")
        levels = torch.as_tensor(levels, dtype=torch.float32).detach().cpu().clone()
        if levels.dim() == 1 and self.compose.num_operators == 1:
            levels = rearrange(levels, "t -> t 1")
        if levels.dim() != 2 or levels.shape[0] < 1 or levels.shape[1] != self.compose.num_operators:
            raise ValueError(
                f"levels must have shape (T, K={self.compose.num_operators}) with T >= 1, got {tuple(levels.shape)}"
            )
        if self.compose.num_operators == 0 and levels.shape[0] > 1 and construction not in IMAGE_FREE:
            raise ValueError(f"at least one operator is needed for more than one frame, got T={levels.shape[0]}")
        if not bool(torch.isfinite(levels).all()) or bool((levels < 0).any()):
            raise ValueError(f"levels must be finite and non-negative, got {levels.tolist()}")
        if bool((levels[-1] != 0).any()):
            raise ValueError(
                f"the last row of levels (frame T-1, the clean image) must be all zeros, got {levels[-1].tolist()}"
            )
        if bool((levels[1:] > levels[:-1]).any()):
            raise ValueError(f"levels must be non-increasing in t (frame 0 most corrupted), got {levels.tolist()}")
        for k, op in enumerate(self.compose.operators):
            if bool((levels[:, k] > op.max_level).any()):
                raise ValueError(
                    f"levels for operator {op.name!r} must be <= {op.max_level}, got {levels[:, k].tolist()}"
                )
        self.levels = levels  # (T, K)
        self.construction = construction
        if construction == "first_order":
            self._check_first_order_exact(())
        # increments[t] takes frame t+1 to frame t: (T-1, K)
        self.increments = self.compose.increment(levels[1:], levels[:-1])
        self._chain = blur_noise_chain(self.compose.operators) if construction == "first_order" else None

    @property
    def first_order_exact(self) -> bool:
        """Whether the first-order frames have the higher-order frames' marginals (see the module docstring)."""
        return first_order_exact(self.compose.operators)

    @property
    def operators(self) -> tuple[Corruption, ...]:
        """The K operators, applied in order."""
        return self.compose.operators

    @property
    def num_frames(self) -> int:
        """Number T of frames in each pseudo video (the last one is the clean image)."""
        return int(self.levels.shape[0])

    def frame_labels(self) -> list[str]:
        """One label per frame for pictures: ``"t=0"`` and each operator's level (``"blur 2"``), the last ``"clean"``."""
        from pseudovideo.pictures import frame_labels  # pictures pulls in PIL and torchvision: only when drawing

        names = [op.name for op in self.operators]
        note = {"noise_frames": "pure noise", "shuffled": "shuffled order"}.get(self.construction)
        return frame_labels(self.num_frames, self.levels, names, copies=self.construction == "copies", note=note)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Build pseudo videos from images x (B, C, H, W); returns (B, T, C, H, W) with [:, -1] == x exactly.

        Signals x (B, C, L) give pseudo sequences (B, T, C, L): they are built as one-row images (B, C, 1, L),
        on which every operator is exactly its 1-D version (see :mod:`pseudovideo.pseudo_video.corruptions`).
        """
        if isinstance(x, Tensor) and x.dim() == 3:
            return self(as_image_rows(x), generator)[:, :, :, 0]  # (B, T, C, L)
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a 4-D image batch (B, C, H, W) or a 3-D signal batch (B, C, L), got shape {shape}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if self.num_frames == 1 or self.construction == "copies":
            return repeat(x, "b c h w -> b t c h w", t=self.num_frames).clone()  # (B, T, C, H, W)
        # float32 with autocast off: bf16 matmuls would break the exact blur composition (errors ~2e-2)
        with torch.autocast(device_type=x.device.type, enabled=False):
            wide = x.to(torch.promote_types(x.dtype, torch.float32))
            if self.construction == "higher_order":
                video = self._higher_order(wide, generator)
            elif self.construction == "first_order":
                video = self._first_order(wide, generator)
            elif self.construction == "shuffled":
                video = shuffle_corrupted_frames(self._higher_order(wide, generator), generator)
            else:
                video = noise_frames(wide, self.num_frames, generator)
        return video.to(x.dtype)

    def _higher_order(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Frame t = ops(x, levels[t]) with independent randomness; all T-1 frames in one batched call."""
        b, t_corrupt = x.shape[0], self.num_frames - 1
        clean = repeat(x, "b c h w -> (t b) c h w", t=t_corrupt)  # (T-1)*B copies of x
        levels = repeat(self.levels[:-1], "t k -> (t b) k", b=b)  # ((T-1)*B, K), kept on the CPU (no syncs)
        corrupted = self.compose.apply(clean, levels, generator)
        corrupted = rearrange(corrupted, "(t b) c h w -> b t c h w", t=t_corrupt)  # (B, T-1, C, H, W)
        return torch.cat([corrupted, rearrange(x, "b c h w -> b 1 c h w")], dim=1)  # (B, T, C, H, W)

    def _check_first_order_exact(self, sizes: tuple[int, ...]) -> None:
        """Raise ValueError when a downsample column's first-order chain would not match its direct frames."""
        for k, op in enumerate(self.operators):
            problem = op.first_order_problem(self.levels[:, k].tolist(), sizes) if isinstance(op, Downsample) else None
            if problem:
                where = f" on {sizes[0]}x{sizes[1]} images" if sizes else ""
                raise ValueError(f"first_order construction{where}: {problem}")

    def _first_order(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Frame t-1 = ops(frame t, increments[t-1]) with fresh randomness each step (Markov chain)."""
        b = x.shape[0]
        self._check_first_order_exact(tuple(x.shape[-2:]))
        increments = self.increments  # (T-1, K), kept on the CPU (no syncs)
        frames = [x]
        for t in range(self.num_frames - 2, -1, -1):
            if self._chain is not None:  # blur and noise: coloured noise increments keep the marginals exact
                frames.append(self._chain.step(frames[-1], self.levels[t + 1], self.levels[t], generator))
            else:
                frames.append(self.compose.apply(frames[-1], increments[t].expand(b, -1), generator))
        return torch.stack(frames[::-1], dim=1)  # (B, T, C, H, W)

    def __repr__(self) -> str:
        return (
            f"PseudoVideoBuilder(operators={list(self.operators)}, num_frames={self.num_frames}, "
            f"construction={self.construction!r})"
        )


def shuffle_corrupted_frames(video: Tensor, generator: torch.Generator | None) -> Tensor:
    """video (B, T, C, H, W) with frames 0..T-2 of each video in a random order (one permutation per video);
    the last (clean) frame stays last."""
    b, t = video.shape[:2]
    device = generator.device if generator is not None else video.device
    order = torch.argsort(torch.rand(b, t - 1, generator=generator, device=device), dim=1).to(video.device)  # (B, T-1)
    shuffled = torch.gather(video[:, :-1], 1, order[:, :, None, None, None].expand_as(video[:, :-1]))
    return torch.cat([shuffled, video[:, -1:]], dim=1)


def noise_frames(x: Tensor, num_frames: int, generator: torch.Generator | None) -> Tensor:
    """(B, T, C, H, W): T-1 frames of N(0, NOISE_FRAMES_STD^2) noise independent of x (B, C, H, W), then x."""
    b, c, h, w = x.shape
    device = generator.device if generator is not None else x.device
    noise = torch.randn(b, num_frames - 1, c, h, w, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return torch.cat([NOISE_FRAMES_STD * noise, x[:, None]], dim=1)


def corruption_levels(spec: Mapping[str, object], num_frames: int) -> Tensor:
    """Per-frame levels (T,) of one corruption spec dict (keys schedule, max_level, min_level, levels)."""
    kind = spec.get("schedule", "linear")
    levels = spec.get("levels")
    max_level = spec.get("max_level")
    if kind == "explicit" and levels:
        max_level = float(list(levels)[0])  # explicit levels define the maximum; max_level is ignored
    if max_level is None:
        raise ValueError(f"corruption {spec.get('name')!r} needs max_level (schedule {kind!r}), got {dict(spec)}")
    return level_schedule(kind, num_frames, float(max_level), min_level=spec.get("min_level"), levels=levels)


def build_pseudo_video_builder(
    corruptions: Sequence[Mapping[str, object]], num_frames: int = 8, construction: str = "higher_order"
) -> PseudoVideoBuilder:
    """Build a PseudoVideoBuilder from plain config dicts, one per operator (applied in order).

    Each dict: {"name": "blur", "schedule": "linear", "max_level": 2.0, "min_level": None,
    "levels": None, **operator params}; schedule defaults to "linear"; for "explicit" the levels
    define the maximum and max_level is ignored. With num_frames == 1 or construction "copies" or
    "noise_frames" the list may be empty.
    """
    if construction not in CONSTRUCTIONS:
        raise ValueError(f"unknown construction {construction!r}; expected one of {list(CONSTRUCTIONS)}")
    if not corruptions and num_frames > 1 and construction not in IMAGE_FREE:
        raise ValueError(f"corruptions must list at least one operator when num_frames={num_frames} > 1, got none")
    operators, columns = [], []
    for spec in corruptions:
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(f"each corruption must be a dict with a 'name' key, got {spec!r}")
        params = {key: value for key, value in spec.items() if key not in SCHEDULE_KEYS}
        operators.append(build_corruption(str(spec["name"]), **params))
        columns.append(corruption_levels(spec, num_frames))
    levels = torch.stack(columns, dim=1) if columns else torch.zeros(num_frames, 0)  # (T, K)
    return PseudoVideoBuilder(operators, levels, construction)
