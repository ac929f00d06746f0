"""Tokenizer losses: frame-weighted reconstruction, LPIPS perceptual loss and the VQGAN adversarial terms.

Videos are pseudo videos of shape (B, T, C, H, W) whose last frame (index T - 1) is the clean image.
Images given to the perceptual loss are (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from pseudovideo.weights import find_weights, hub_cache_path, load_state_dict_file

if TYPE_CHECKING:  # imported when used (an LPIPS loss is built)
    import lpips

__all__ = [
    "LPIPS_BACKBONE_FILES",
    "PerceptualLoss",
    "adaptive_gan_weight",
    "build_perceptual_loss",
    "frame_weights",
    "gan_factor",
    "hinge_d_loss",
    "hinge_g_loss",
    "lpips_backbone_cache_path",
    "reconstruction_loss",
]

RECONSTRUCTION_KINDS = ("l1", "l2", "l1+l2")

# torchvision ImageNet checkpoints used as LPIPS backbones: file name in the torch hub cache and download URL.
LPIPS_BACKBONE_FILES: dict[str, tuple[str, str]] = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"),
}
# Smallest square input each backbone accepts (found by running lpips 0.1.4 on growing inputs).
LPIPS_MIN_SIZE: dict[str, int] = {"alex": 31, "vgg": 16, "squeeze": 17}


# --------------------------------------------------------------------------------------------------------------
# Reconstruction
# --------------------------------------------------------------------------------------------------------------


def frame_weights(num_frames: int, last_frame_weight: float) -> Tensor:
    """Per-frame loss weights w_t that train every frame but emphasise the clean last frame.

    Every frame gets weight 1 except the last, which gets ``last_frame_weight``; the vector is then normalised to
    sum to 1, so ``sum_t w_t e_t`` is a weighted mean of per-frame errors e_t. ``last_frame_weight = 1`` is the
    plain mean over frames; ``last_frame_weight = num_frames - 1`` gives the clean frame half of the total weight.

    Args:
        num_frames: T >= 1.
        last_frame_weight: unnormalised weight of frame T - 1, > 0.

    Returns:
        (T,) float32 tensor summing to 1.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not last_frame_weight > 0:
        raise ValueError(f"last_frame_weight must be > 0, got {last_frame_weight}")
    w = torch.ones(num_frames, dtype=torch.float32)
    w[-1] = float(last_frame_weight)
    return w / w.sum()


def reconstruction_loss(recon: Tensor, target: Tensor, weights: Tensor, kind: str = "l1") -> Tensor:
    """Frame-weighted reconstruction error ``sum_t w_t e_t`` of a pseudo-video tokenizer.

    e_t is the mean over batch, channels and pixels of frame t's error: |x_hat - x| ("l1"), (x_hat - x)^2 ("l2")
    or the sum of both ("l1+l2"). ``weights`` are used as given (``frame_weights`` already sums to 1).

    Args:
        recon: (B, T, C, H, W) reconstruction x_hat.
        target: (B, T, C, H, W) pseudo video x.
        weights: (T,) per-frame weights w_t.
        kind: one of "l1", "l2", "l1+l2".

    Returns:
        Scalar tensor (differentiable w.r.t. ``recon``).
    """
    if kind not in RECONSTRUCTION_KINDS:
        raise ValueError(f"kind must be one of {RECONSTRUCTION_KINDS}, got {kind!r}")
    if recon.ndim not in (4, 5) or recon.shape != target.shape:
        raise ValueError(
            f"recon and target must both be (B, T, C, H, W) (or (B, T, C, L) signals) with equal shapes, got "
            f"{tuple(recon.shape)} and {tuple(target.shape)}"
        )
    if weights.shape != (recon.shape[1],):
        raise ValueError(f"weights must have shape (T,) = ({recon.shape[1]},), got {tuple(weights.shape)}")
    diff = recon - target  # (B, T, C, H, W)
    err = torch.zeros((), dtype=recon.dtype, device=recon.device)
    dims = (0, *range(2, diff.ndim))  # all but the frame axis
    if kind in ("l1", "l1+l2"):
        err = err + diff.abs().mean(dim=dims)  # (T,)
    if kind in ("l2", "l1+l2"):
        err = err + diff.square().mean(dim=dims)  # (T,)
    return (err * weights.to(device=recon.device)).sum()  # weights stay float32 (bf16 would round 1/9 by 0.2 %)


# --------------------------------------------------------------------------------------------------------------
# Perceptual (LPIPS)
# --------------------------------------------------------------------------------------------------------------


class PerceptualLoss(nn.Module):
    """Frozen LPIPS distance (Zhang et al. 2018) between two image batches; build it with ``build_perceptual_loss``.

    Always in eval mode (``train()`` does not switch on LPIPS' dropout) with no trainable parameters; gradients
    still flow to the inputs. forward(x, y): x, y (N, C, H, W) in [-1, 1] with C in {1, 3} (grey images are
    repeated to 3 channels) -> per-image distances (N,).
    """

    def __init__(self, model: lpips.LPIPS, net: str) -> None:
        super().__init__()
        self.net_name = net
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        """Keep the wrapped LPIPS network in eval mode whatever ``mode`` is (it is a fixed metric)."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS distance per image: x, y (N, C, H, W) in [-1, 1] -> (N,)."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"x and y must both be (N, C, H, W) with C in (1, 3) and equal shapes, got {tuple(x.shape)} "
                f"and {tuple(y.shape)}"
            )
        min_size = LPIPS_MIN_SIZE[self.net_name]
        if min(x.shape[-2:]) < min_size:
            raise ValueError(
                f"LPIPS with the {self.net_name!r} backbone needs images of at least {min_size}x{min_size}, "
                f"got {tuple(x.shape[-2:])}; upsample them or use net='vgg' (min 16)"
            )
        if x.shape[1] == 1:
            x = repeat(x, "n 1 h w -> n c h w", c=3)
            y = repeat(y, "n 1 h w -> n c h w", c=3)
        return self.model(x, y).flatten()  # (N, 1, 1, 1) -> (N,)


def lpips_backbone_cache_path(net: str) -> Path:
    """Where torchvision caches the ImageNet backbone of LPIPS ``net``: ``<torch hub dir>/checkpoints/<file>``."""
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"net must be one of {tuple(LPIPS_BACKBONE_FILES)}, got {net!r}")
    return hub_cache_path(LPIPS_BACKBONE_FILES[net][0])


def _load_backbone(model: lpips.LPIPS, state_dict: dict[str, Tensor]) -> None:
    """Copy torchvision ``features.<i>.*`` weights into lpips' ``net.slice<k>.<i>.*`` modules (strict)."""
    features = {k[len("features.") :]: v for k, v in state_dict.items() if k.startswith("features.")}
    mapped: dict[str, Tensor] = {}
    for slice_name, block in model.net.named_children():
        for idx, layer in block.named_children():
            for param_name in layer.state_dict():
                key = f"{idx}.{param_name}"
                if key not in features:
                    raise ValueError(f"backbone checkpoint has no 'features.{key}' (wrong network for this LPIPS?)")
                mapped[f"{slice_name}.{key}"] = features[key]
    model.net.load_state_dict(mapped, strict=True)


def _load_lpips_linear_layers(model: lpips.LPIPS, net: str) -> None:
    """Load the calibrated linear heads shipped inside the lpips package (weights/v0.1/<net>.pth)."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = set(state) - set(model.state_dict())
    if missing:
        raise KeyError(f"unexpected keys {sorted(missing)} in {path}")
    model.load_state_dict(state, strict=False)


def build_perceptual_loss(
    net: str = "vgg", backbone_weights: str | None = None, allow_download: bool = True
) -> PerceptualLoss | None:
    """Build a frozen LPIPS loss without any implicit download at construction.

    The backbone ImageNet weights are looked up in order: the explicit file ``backbone_weights``; the torch hub
    cache file (``lpips_backbone_cache_path(net)``, e.g. ``~/.cache/torch/hub/checkpoints/vgg16-397923af.pth``;
    ``TORCH_HOME`` moves it); a torchvision download into that cache when ``allow_download``. The linear heads
    come from the lpips package itself. All checkpoints are read with ``weights_only=True``.

    Args:
        net: LPIPS backbone, "vgg" (default, works from 16x16), "alex" (from 31x31) or "squeeze" (from 17x17).
        backbone_weights: optional path to the torchvision ImageNet state_dict of that backbone.
        allow_download: try the torchvision URL when no local file is found.

    Returns:
        The loss module on CPU, or None after one ``UserWarning`` saying perceptual loss is off and how to
        provide the weights.

    Raises:
        ValueError: unknown ``net``. FileNotFoundError: ``backbone_weights`` is given but does not exist.
    """
    lpips_backbone_cache_path(net)  # validates net
    file_name, url = LPIPS_BACKBONE_FILES[net]
    source, reason = find_weights(file_name, url, backbone_weights, allow_download)
    if source is None:
        warnings.warn(f"Perceptual (LPIPS-{net}) loss is OFF: ImageNet backbone weights: {reason} "
                      f"(a local file: loss.perceptual_weights=<path> in training, eval.lpips_weights=<path> in "
                      f"evaluation; source {url}).", UserWarning, stacklevel=2)
        return None

    import lpips  # imported here, when there are weights to use: it imports torchvision's models

    state = load_state_dict_file(source, f"LPIPS-{net} backbone weights file {source}")
    with warnings.catch_warnings():
        # lpips builds torchvision models with the deprecated `pretrained=` argument; silence that noise only.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.")
        model = lpips.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False)
    _load_backbone(model, state)
    _load_lpips_linear_layers(model, net)
    return PerceptualLoss(model, net)


# --------------------------------------------------------------------------------------------------------------
# Adversarial (VQGAN, Esser et al. 2021)
# --------------------------------------------------------------------------------------------------------------


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss ``0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))])``; logits of any shape -> scalar."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator adversarial loss ``-E[D(x_hat)]``; logits of any shape -> scalar."""
    return -logits_fake.mean()


def adaptive_gan_weight(nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """VQGAN adaptive weight ``lambda = ||grad_L L_rec|| / (||grad_L L_G|| + 1e-4)``, clamped to [0, max_weight].

    The gradients are taken w.r.t. the decoder's last layer weight L (graph kept for the later backward); the
    result is detached so lambda only rescales the generator loss.

    Args:
        nll_loss: scalar reconstruction (+ perceptual) loss, attached to ``last_layer``.
        g_loss: scalar generator adversarial loss, attached to ``last_layer``.
        last_layer: the weight tensor of the decoder's output layer.
        max_weight: upper clamp.

    Returns:
        Detached scalar tensor.
    """
    if not (nll_loss.requires_grad and g_loss.requires_grad and last_layer.requires_grad):
        raise ValueError(
            "adaptive_gan_weight needs nll_loss and g_loss attached to a last_layer that requires grad "
            "(call it in training mode, outside torch.no_grad())"
        )
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.linalg.vector_norm(nll_grads) / (torch.linalg.vector_norm(g_grads) + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


def gan_factor(step: int, start_step: int, factor: float = 1.0) -> float:
    """Adversarial warm-up gate: 0 before ``start_step``, ``factor`` from ``start_step`` on."""
    return 0.0 if step < start_step else float(factor)
