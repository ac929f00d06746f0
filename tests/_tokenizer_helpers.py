"""Shared fixtures-as-functions of the tokenizer tests: smooth test videos and a tiny training loop."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from pseudovideo.models.tokenizer import VideoTokenizer


def smooth_video(batch: int, frames: int, resolution: int = 16, seed: int = 0) -> torch.Tensor:
    """(B, T, 3, R, R) smooth images in (-1, 1): bilinear upsampling of 4x4 noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(batch * frames, 3, 4, 4, generator=g)
    x = F.interpolate(low, size=resolution, mode="bilinear", align_corners=False).tanh()
    return x.view(batch, frames, 3, resolution, resolution)


def train_steps(model: VideoTokenizer, x: torch.Tensor, steps: int, lr: float = 3e-3) -> list[float]:
    """Adam on MSE + VQ loss; returns the reconstruction losses of every step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        out = model(x)
        rec = F.mse_loss(out.recon, x)
        loss = rec + sum(out.aux_losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(rec.item())
    return losses


def assert_restored_tokenizer_matches(model: VideoTokenizer, restored: VideoTokenizer, x: torch.Tensor) -> None:
    """``restored`` (loaded from ``model``'s state dict) reconstructs x identically, and a further training-mode
    forward with the same seed updates both models' EMA codebook buffers identically."""
    model.eval(), restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(x).recon, model(x).recon, rtol=0, atol=0)
    model.train(), restored.train()
    torch.manual_seed(7)
    out_a = model(x)
    torch.manual_seed(7)
    out_b = restored(x)
    torch.testing.assert_close(out_a.recon, out_b.recon, rtol=0, atol=0)
    restored_state = restored.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, restored_state[key]), key


def assert_checkpointing_gives_same_gradients(model: VideoTokenizer, x: torch.Tensor) -> None:
    """Gradient checkpointing on a copy of ``model`` gives the same gradients on x, and the EMA codebook is
    updated once per forward (not again by the recomputation in backward)."""
    checkpointed = copy.deepcopy(model)
    checkpointed.set_gradient_checkpointing(True)
    for m in (model, checkpointed):
        out = m(x)
        (F.mse_loss(out.recon, x) + out.aux_losses["vq"]).backward()
    for (name, p), q in zip(model.named_parameters(), checkpointed.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(checkpointed.quantizer.codebook, model.quantizer.codebook, rtol=0, atol=0)
