"""Learnable pseudo-video corruptions: monotone per-frame levels with fixed endpoints, a per-frame operator
mixture, an optional per-image policy; saved with a run and reloaded exactly.

Levels are learned as *normalised* levels u_t in [0, 1] (level = u_t x the operator's configured max_level),
with the endpoints fixed: u_0 = 1 (frame 0 keeps the configured maximum, so the corruption budget cannot
collapse to zero) and u_{T-1} = 0 (the clean frame). Two parameterisations keep them non-increasing:

- ``free`` (the informativeness search, as the learned monotone schedule of Variational Diffusion Models):
  theta (T-1, K) -> increments softmax(theta) over the T-1 frame gaps, u_t = 1 - sum_{i<t} increment_i;
- ``budget`` (adversarial): u_t = cummin_{s<=t} clamp(u0_s + budget * tanh(theta_s), 0, 1) for the interior
  frames 1..T-2: every level stays within ``budget`` of the configured schedule u0 (the running minimum keeps
  that box, since u0 is non-increasing).

A *mixture* makes each corrupted frame apply ONE of the K configured operators instead of composing them all,
chosen per image and frame with probabilities pi_t (a relaxed, straight-through Gumbel-softmax choice while
learning; budget mode: pi_t = (1 - budget) / K + budget * softmax(logits_t), so every operator keeps at least
(1 - budget) / K). Downsample levels carry no gradient: a downsample column keeps its configured whole-octave
schedule, and a learned mixture refuses downsample.

:class:`LearnedPseudoVideos` builds the videos (B, T, C, H, W) like a
:class:`~pseudovideo.pseudo_video.builder.PseudoVideoBuilder` (the higher-order construction), differentiably in its
parameters. :func:`save_learned` / :func:`load_learned` write and read it as one safetensors file (tensors
bit-exact; metadata JSON: the operators, frames, mode and the objective that produced it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from einops import rearrange, repeat
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pseudovideo.pseudo_video.builder import PseudoVideoBuilder
from pseudovideo.pseudo_video.corruptions import Corruption, Downsample, build_corruption
from pseudovideo.pseudo_video.learned.differentiable import corrupt, gumbel_choice, is_differentiable
from pseudovideo.pseudo_video.learned.policy import CorruptionPolicy

__all__ = [
    "LearnedPseudoVideos",
    "budget_levels",
    "free_levels",
    "free_logits",
    "load_learned",
    "mixture_probabilities",
    "save_learned",
]

FORMAT = "pseudovideo-learned-corruption-v1"
MODES = ("free", "budget", "fixed")
_MIN_INCREMENT = 1e-4  # floor of a hand-set increment when it becomes a logit (a flat step of the schedule)


def free_levels(theta: Tensor) -> Tensor:
    """Normalised levels (..., T, K) from increment logits theta (..., T-1, K): 1 at frame 0, 0 at T-1, non-increasing."""
    increments = torch.softmax(theta, dim=-2)  # (..., T-1, K), positive, summing to 1 over the frame gaps
    inner = (1 - torch.cumsum(increments, dim=-2))[..., :-1, :].clamp_min(0)  # frames 1..T-2
    ones, zeros = torch.ones_like(theta[..., :1, :]), torch.zeros_like(theta[..., :1, :])
    return torch.cat([ones, inner, zeros], dim=-2)


def free_logits(normalised: Tensor) -> Tensor:
    """Logits (T-1, K) whose :func:`free_levels` are ``normalised`` (T, K) (flat steps floored at 1e-4)."""
    return torch.log((normalised[:-1] - normalised[1:]).clamp_min(_MIN_INCREMENT))


def budget_levels(theta: Tensor, base: Tensor, budget: float) -> Tensor:
    """Normalised levels (..., T, K) within ``budget`` of base (T, K) from theta (..., T-2, K); endpoints fixed."""
    inner = (base[1:-1] + budget * torch.tanh(theta)).clamp(0, 1)  # (..., T-2, K)
    ones = torch.ones_like(inner[..., :1, :])
    levels = torch.cat([ones, inner, torch.zeros_like(ones)], dim=-2)
    return torch.cummin(levels, dim=-2).values  # non-increasing, still inside the box


def mixture_probabilities(logits: Tensor, budget: float | None = None) -> Tensor:
    """Operator probabilities (..., T-1, K) from logits; with a budget, (1 - budget) of them stay uniform."""
    probabilities = torch.softmax(logits, dim=-1)
    if budget is None:
        return probabilities
    return (1 - budget) / logits.shape[-1] + budget * probabilities


def _shortest(value: Tensor) -> float:
    """The shortest decimal that reads back as this float32 value (so a YAML fragment reloads bit-exactly)."""
    import numpy as np

    return float(str(np.float32(float(value))))


def _operator_spec(op: Corruption) -> dict[str, Any]:
    """An operator as the dict :func:`pseudovideo.pseudo_video.corruptions.build_corruption` takes ({"name": ..., params})."""
    return {"name": op.name, **vars(op)}


class LearnedPseudoVideos(nn.Module):
    """Pseudo videos (B, T, C, H, W) with learnable levels (and operator mixture, and per-image policy).

    ``operators``: the K corruptions; ``base_levels`` (T, K): the configured schedule (frame 0 = max_level, last
    row 0), the starting point and, in ``budget`` mode, the centre of the box. ``mode``: free | budget | fixed
    (levels = base_levels, nothing learned about them). ``mixture``: False (compose the operators), True (learn a
    mixture) or a (T-1, K) tensor of fixed probabilities. ``policy_channels``: image channels of a per-image
    policy (None: one schedule for every image). ``objective`` and ``description`` record how it was produced.
    """

    def __init__(
        self, operators: Sequence[Corruption], base_levels: Tensor, *, mode: str = "free", budget: float | None = None,
        mixture: bool | Tensor = False, policy_channels: int | None = None, objective: str = "none", description: str = "",
    ) -> None:
        super().__init__()
        self.operators = tuple(operators)
        base = torch.as_tensor(base_levels, dtype=torch.float32)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if base.dim() != 2 or base.shape[0] < 2 or base.shape[1] != len(self.operators):
            raise ValueError(f"base_levels must be (T >= 2, K={len(self.operators)}), got {tuple(base.shape)}")
        if mode == "budget" and not (budget is not None and 0 < budget <= 1):
            raise ValueError(f"budget mode needs a budget in (0, 1], got {budget!r}")
        self.mode, self.budget, self.objective, self.description = mode, budget, objective, description
        self.register_buffer("base_levels", base.clone())  # (T, K)
        self.register_buffer("max_levels", base[0].clone())  # (K,)
        self.learnable = torch.tensor([is_differentiable(op) for op in self.operators])  # (K,) columns that learn
        t, k = base.shape
        self.theta = nn.Parameter(self._initial_theta()) if mode != "fixed" else None
        self.learned_mixture = mixture is True
        self.mixture_logits = nn.Parameter(torch.zeros(t - 1, k)) if self.learned_mixture else None
        if isinstance(mixture, Tensor):
            self.register_buffer("fixed_mixture", torch.as_tensor(mixture, dtype=torch.float32).clone())
        else:
            self.fixed_mixture = None
        self.policy = None
        if policy_channels is not None:
            if self.theta is None:
                raise ValueError("a per-image policy needs a learned schedule (mode free or budget)")
            self.policy = CorruptionPolicy(policy_channels, tuple(self.theta.shape),
                                           (t - 1, k) if self.learned_mixture else None)
            self.policy.start_at(self.theta.detach(), None if self.mixture_logits is None else self.mixture_logits.detach())

    def _initial_theta(self) -> Tensor:
        """Parameters that reproduce the configured schedule: (T-1, K) logits (free) or zeros (T-2, K) (budget)."""
        normalised = self.base_levels / self.max_levels.clamp_min(1e-12)
        if self.mode == "free":
            return free_logits(normalised)
        return torch.zeros(self.base_levels.shape[0] - 2, self.base_levels.shape[1])

    @property
    def num_frames(self) -> int:
        """Frames T of each pseudo video (the last one clean)."""
        return int(self.base_levels.shape[0])

    @property
    def construction(self) -> str:
        """Always ``higher_order``: every frame is made from the clean image."""
        return "higher_order"

    @property
    def has_mixture(self) -> bool:
        """Whether each frame applies one operator chosen from a mixture (else all compose)."""
        return self.learned_mixture or self.fixed_mixture is not None

    def _levels_from(self, theta: Tensor | None) -> Tensor:
        """Levels (..., T, K): the learnable columns from theta, downsample columns as configured."""
        if theta is None:
            return self.base_levels
        normalised = self.base_levels / self.max_levels.clamp_min(1e-12)
        if self.mode == "free":
            learned = free_levels(theta)
        else:
            learned = budget_levels(theta, normalised, self.budget)
        learned = torch.where(self.learnable.to(learned.device), learned, normalised)
        return learned * self.max_levels  # (..., T, K)

    def _mixture_from(self, logits: Tensor | None) -> Tensor | None:
        if self.fixed_mixture is not None:
            return self.fixed_mixture
        if logits is None:
            return None
        return mixture_probabilities(logits, self.budget if self.mode == "budget" else None)

    @property
    def levels(self) -> Tensor:
        """The schedule (T, K) (a per-image policy: the levels it starts from), detached."""
        return self._levels_from(self.theta).detach()

    @property
    def mixture(self) -> Tensor | None:
        """Operator probabilities (T-1, K) of the corrupted frames (None when the operators compose), detached."""
        found = self._mixture_from(self.mixture_logits)
        return None if found is None else found.detach()

    def frame_labels(self) -> list[str]:
        """One label per frame for pictures: the levels of the current schedule (a per-image policy: the levels it
        starts from; a mixture: one operator per frame, drawn), the last frame ``"clean"``."""
        from pseudovideo.pictures import frame_labels  # pictures pulls in PIL and torchvision: only when drawing

        names = [op.name for op in self.operators]
        labels = frame_labels(self.num_frames, self.levels, names)
        return [label + "\n(one, drawn)" if self.has_mixture and t < self.num_frames - 1 else label
                for t, label in enumerate(labels)]

    def image_levels(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Levels (B or 1, T, K) and mixture probabilities (B or 1, T-1, K) (or None) for images (B, C, H, W)."""
        if self.policy is None:
            mixture = self._mixture_from(self.mixture_logits)
            return self._levels_from(self.theta)[None], None if mixture is None else mixture[None]
        theta, logits = self.policy(images)
        return self._levels_from(theta), self._mixture_from(logits)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pseudo videos (B, T, C, H, W) of images (B, C, H, W); [:, -1] is the image exactly."""
        if not isinstance(images, Tensor) or images.dim() != 4:
            raise ValueError(f"images must be a 4-D batch (B, C, H, W), got {getattr(images, 'shape', type(images))}")
        b, t = images.shape[0], self.num_frames
        with torch.autocast(device_type=images.device.type, enabled=False):
            x = images.to(torch.promote_types(images.dtype, torch.float32))
            levels, mixture = self.image_levels(x)
            levels = rearrange(levels[:, :-1].expand(b, -1, -1), "b t k -> (t b) k")  # ((T-1)*B, K)
            choice = None
            if mixture is not None:
                choice = rearrange(gumbel_choice(mixture.expand(b, -1, -1), generator), "b t k -> (t b) k")
            clean = repeat(x, "b c h w -> (t b) c h w", t=t - 1)
            frames = corrupt(self.operators, clean, levels.to(x.device), generator, choice)
            frames = rearrange(frames, "(t b) c h w -> b t c h w", t=t - 1)
            video = torch.cat([frames, x[:, None]], dim=1)  # (B, T, C, H, W)
        return video.to(images.dtype)

    def as_builder(self) -> "PseudoVideoBuilder | LearnedPseudoVideos":
        """What a run trains on once learned: a plain PseudoVideoBuilder of the levels when nothing else is
        learned (the pseudo videos of an explicit schedule), else this module itself."""
        if self.policy is None and not self.has_mixture:
            return PseudoVideoBuilder(self.operators, self.levels.cpu(), "higher_order")
        return self

    def metadata(self) -> dict[str, str]:
        """The safetensors metadata that rebuilds this module (JSON text values)."""
        info = {
            "format": FORMAT, "operators": [_operator_spec(op) for op in self.operators], "mode": self.mode,
            "budget": self.budget, "mixture": "learned" if self.learned_mixture else ("fixed" if self.fixed_mixture is not None else "none"),
            "policy_channels": self.policy.channels if self.policy is not None else None,
            "objective": self.objective, "description": self.description,
        }
        return {key: json.dumps(value) for key, value in info.items()}

    def fragment(self) -> dict[str, Any]:
        """The ``pseudo_video`` config section that reproduces this corruption (explicit levels, mixture)."""
        if self.policy is not None:
            raise ValueError("a per-image policy is not a config fragment; use pseudo_video.learned.from_file")
        levels = self.levels
        corruptions = []
        for k, op in enumerate(self.operators):
            spec = _operator_spec(op)
            column = [_shortest(v) for v in levels[:-1, k]]
            corruptions.append({**spec, "schedule": "explicit", "max_level": column[0], "levels": column})
        mixture = self.mixture
        return {"corruptions": corruptions, "construction": "higher_order", "num_frames": self.num_frames,
                "mixture": None if mixture is None else [[_shortest(v) for v in row] for row in mixture]}


def save_learned(learned: LearnedPseudoVideos, path: str | Path) -> Path:
    """Writes ``learned`` as one safetensors file (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in learned.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=learned.metadata())
    tmp.replace(path)
    return path


def _read_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        info = {key: json.loads(value) for key, value in raw.items()}
    except Exception as err:  # safetensors raises its own error types on malformed files
        raise ValueError(f"learned corruption file {path} could not be read: {' '.join(str(err).split())[:200]}") from None
    if info.get("format") != FORMAT:
        raise ValueError(f"{path} is not a learned corruption file (format {info.get('format')!r}, expected {FORMAT!r})")
    return info


def load_learned(path: str | Path) -> LearnedPseudoVideos:
    """The :class:`LearnedPseudoVideos` saved by :func:`save_learned`, bit-identical, frozen (ValueError naming a bad file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"learned corruption file {path} does not exist")
    info = _read_metadata(path)
    tensors = load_file(str(path))
    operators = [build_corruption(**spec) for spec in info["operators"]]
    mixture: bool | Tensor = {"learned": True, "fixed": tensors.get("fixed_mixture"), "none": False}[info["mixture"]]
    learned = LearnedPseudoVideos(
        operators, tensors["base_levels"], mode=info["mode"], budget=info["budget"], mixture=mixture,
        policy_channels=info["policy_channels"], objective=info["objective"], description=info["description"],
    )
    try:
        learned.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(f"learned corruption file {path} does not fit its own metadata: {' '.join(str(err).split())[:200]}") from None
    return learned.requires_grad_(False)


def describe_schedule(learned: LearnedPseudoVideos) -> str:
    """The schedule as a markdown table: frame, each operator's level and, with a mixture, its probability."""
    names = [op.name for op in learned.operators]
    levels, mixture = learned.levels, learned.mixture
    header = ["frame", *[f"{name} level" for name in names], *([f"p({name})" for name in names] if mixture is not None else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for t in range(learned.num_frames):
        cells = [str(t), *[f"{float(v):.4g}" for v in levels[t]]]
        if mixture is not None:
            cells += [f"{float(v):.3f}" for v in mixture[t]] if t < learned.num_frames - 1 else ["-"] * len(names)
        lines.append("| " + " | ".join(cells) + " |")
    fixed = [op.name for op in learned.operators if isinstance(op, Downsample)]
    if fixed and learned.mode != "fixed":
        lines.append(f"\n{', '.join(fixed)}: discrete octaves, not differentiable: kept at the configured levels")
    return "\n".join(lines)


def fragment_yaml(learned: LearnedPseudoVideos, produced_by: str) -> str:
    """A YAML config fragment ({pseudo_video: ...}) of a learned corruption, recording what produced it."""
    import yaml

    section = learned.fragment()
    section["learned"] = {"objective": "none", "searched_by": produced_by}
    return yaml.safe_dump({"pseudo_video": section}, sort_keys=False)


def operators_and_levels(corruptions: Sequence[Mapping[str, Any]], num_frames: int) -> tuple[list[Corruption], Tensor]:
    """The operators and configured levels (T, K) of corruption dicts (as PseudoVideoBuilder takes them)."""
    from pseudovideo.pseudo_video.builder import build_pseudo_video_builder

    builder = build_pseudo_video_builder(corruptions, num_frames, "higher_order")
    return list(builder.operators), builder.levels
