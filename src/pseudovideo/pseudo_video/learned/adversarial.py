"""Adversarial corruption learning during training (as Adversarial AutoAugment): the corruption's parameters
ascend the model's loss on its pseudo videos, within a budget, while the model descends it.

The corruption is a :class:`~pseudovideo.pseudo_video.learned.corruption.LearnedPseudoVideos` in ``budget`` mode: every
interior frame's normalised level stays within ``pseudo_video.learned.budget`` of the configured schedule, the
endpoints are fixed and the levels non-increasing (and a learned mixture keeps (1 - budget) / K of each
operator), whatever the ascent does. Each training step builds the pseudo videos with gradient flowing into those
parameters, so the model's one backward pass gives both gradients: the model's optimiser descends, then
:meth:`AdversarialLearner.step` lets Adam (maximize=True, ``learned.lr``) ascend every ``learned.every`` steps.
The two updates alternate: step s's videos use the corruption the ascent of step s-1 left.

Cost per step: the model's own forward and backward, plus the backward into the pseudo videos (the input
gradient of the model's first layer and the corruption's own backward: a few per cent of a step) and one Adam
step over (T-2) x K (+ (T-1) x K) numbers, or over the per-image policy's weights.
"""

from __future__ import annotations

from typing import Any

import torch

from pseudovideo.pseudo_video.learned.corruption import LearnedPseudoVideos

__all__ = ["AdversarialLearner"]


class AdversarialLearner:
    """Ascends the training loss in ``learned``'s parameters (the gradients the model's backward left in them)."""

    def __init__(self, learned: LearnedPseudoVideos, lr: float, every: int = 1) -> None:
        if learned.mode != "budget":
            raise ValueError(f"adversarial learning keeps a budget: expected a budget-mode corruption, got {learned.mode!r}")
        self.learned = learned.requires_grad_(True)
        self.every = every
        self.optimizer = torch.optim.Adam([p for p in learned.parameters() if p.requires_grad], lr=lr, maximize=True)

    def to(self, device: torch.device) -> "AdversarialLearner":
        """Moves the corruption's parameters to ``device`` (before the first step)."""
        self.learned.to(device)
        return self

    def step(self, step: int) -> None:
        """After the model's update of ``step`` (0-based): ascend every ``every`` steps, and clear the gradients
        (the training engine averages them over ranks first)."""
        grads = [p.grad for p in self.learned.parameters() if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)  # an overflowed fp16 step is skipped, as the model's
        if (step + 1) % self.every == 0 and finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        """The corruption's tensors and its optimiser state (stored in every checkpoint's state.pt)."""
        return {"module": {k: v.detach().cpu().clone() for k, v in self.learned.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (exact resume)."""
        self.learned.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
