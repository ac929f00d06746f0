"""PatchGAN discriminator (pix2pix N-layer design, as used by VQGAN) that also works on 16x16 and 32x32 images."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from pseudovideo.models.layers import group_norm

__all__ = ["PatchGANDiscriminator", "patchgan_output_size"]

NORMS = ("group", "spectral", "none")
MIN_OUTPUT_SIZE = 2  # smallest patch-logit map kept when strides are reduced for small images


def patchgan_output_size(size: int, num_strided: int) -> int:
    """Side of the logit map for an input side ``size`` when ``num_strided`` layers downsample by 2.

    Strided layers are 4x4 / stride 2 / pad 1 convs (s -> floor(s / 2)); layers whose stride was removed are
    size-preserving 3x3 convs; the two final 4x4 / stride 1 / pad 1 convs each remove 1.
    """
    for _ in range(num_strided):
        size = size // 2
    return size - 2


class PatchGANDiscriminator(nn.Module):
    """N-layer patch discriminator: (N, C, H, W) images -> (N, 1, h, w) real/fake logits, one per patch.

    Layers: conv(C -> base) + LeakyReLU, then ``num_layers - 1`` conv + norm + LeakyReLU blocks doubling the
    width (capped at 8 * base), a stride-1 4x4 block, and a stride-1 4x4 conv to 1 channel. In the standard
    design the first ``num_layers`` convs have stride 2, which leaves nothing of a 16x16 image; given
    ``image_size``, only as many layers keep stride 2 as leave an output of at least 2x2 (the others become
    size-preserving 3x3 convs), e.g. 16 -> 2 strided layers (2x2 logits), 32 -> 3 (2x2 logits).

    Args:
        in_channels: C.
        base_channels: width of the first layer.
        num_layers: number of downsampling-capable layers (pix2pix ``n_layers``), >= 1.
        image_size: training image side; None keeps all ``num_layers`` strided.
        norm: "group" (GroupNorm, batch-size independent; default), "spectral" (spectral norm on every conv,
            no norm layers) or "none".
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        num_layers: int = 3,
        image_size: int | None = None,
        norm: str = "group",
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if in_channels < 1 or base_channels < 1:
            raise ValueError(f"in_channels and base_channels must be >= 1, got {in_channels}, {base_channels}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.num_strided = num_layers if image_size is None else _strided_layers(image_size, num_layers)
        self.main = _patchgan_layers(in_channels, base_channels, num_layers, self.num_strided, norm)
        for module in self.main:
            if isinstance(module, nn.GroupNorm):
                nn.init.normal_(module.weight, 1.0, 0.02)  # pix2pix init of norm scales
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Patch logits: x (N, C, H, W) -> (N, 1, h, w) with h = H / 2^num_strided - 2."""
        if x.ndim != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
        h, w = (patchgan_output_size(s, self.num_strided) for s in x.shape[-2:])
        if h < 1 or w < 1:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is too small for {self.num_strided} stride-2 layers; build the "
                f"discriminator with image_size={min(x.shape[-2:])} to reduce the strides"
            )
        return self.main(x)


def _strided_layers(image_size: int, num_layers: int) -> int:
    """How many of the ``num_layers`` layers keep stride 2 and leave a logit map of at least MIN_OUTPUT_SIZE."""
    num_strided = next(
        (d for d in range(num_layers, -1, -1) if patchgan_output_size(image_size, d) >= MIN_OUTPUT_SIZE),
        -1,
    )
    if num_strided < 0:
        raise ValueError(
            f"image_size={image_size} is too small for a PatchGAN discriminator: it needs at least "
            f"{MIN_OUTPUT_SIZE + 2} pixels to produce a {MIN_OUTPUT_SIZE}x{MIN_OUTPUT_SIZE} logit map"
        )
    return num_strided


def _patchgan_layers(in_channels: int, base_channels: int, num_layers: int, num_strided: int, norm: str) -> nn.Sequential:
    """The discriminator's layers (see :class:`PatchGANDiscriminator`), convolutions initialised as pix2pix's."""
    use_bias = norm != "group"  # a norm layer right after the conv makes its bias redundant

    def finish(layer: nn.Conv2d) -> nn.Module:
        # pix2pix / VQGAN init N(0, 0.02), applied before spectral norm computes its power-iteration vectors
        nn.init.normal_(layer.weight, 0.0, 0.02)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        return spectral_norm(layer) if norm == "spectral" else layer

    def conv(c_in: int, c_out: int, strided: bool, bias: bool) -> nn.Module:
        if strided:
            return finish(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=bias))
        return finish(nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=bias))

    def norm_layer(channels: int) -> nn.Module:
        return group_norm(channels) if norm == "group" else nn.Identity()

    layers: list[nn.Module] = [conv(in_channels, base_channels, num_strided >= 1, True), nn.LeakyReLU(0.2)]
    width = base_channels
    for n in range(1, num_layers):
        out = base_channels * min(2**n, 8)
        layers += [conv(width, out, n < num_strided, use_bias), norm_layer(out), nn.LeakyReLU(0.2)]
        width = out
    out = base_channels * min(2**num_layers, 8)
    final_conv = finish(nn.Conv2d(width, out, 4, stride=1, padding=1, bias=use_bias))
    logits_conv = finish(nn.Conv2d(out, 1, 4, stride=1, padding=1))
    layers += [final_conv, norm_layer(out), nn.LeakyReLU(0.2), logits_conv]
    return nn.Sequential(*layers)
