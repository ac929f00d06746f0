"""Export the image denoiser of a diffusion run as a diffusers ``UNet2DModel`` folder (plus its scheduler).

``pseudovideo export RUN_DIR --format diffusers OUT`` writes ``OUT/config.json`` +
``OUT/diffusion_pytorch_model.safetensors`` (load with ``diffusers.UNet2DModel.from_pretrained(OUT)``) and
``OUT/scheduler/scheduler_config.json`` (the run's exact betas and prediction type, for
``DDPMScheduler.from_pretrained(OUT, subfolder="scheduler")`` or ``DDIMScheduler``).

What can be exported:
- an image UNet run (``model.family: unet``): our UNet maps weight for weight onto a ``UNet2DModel`` (same
  residual blocks, attention, up/down-sampling and sinusoidal timestep embedding) when every GroupNorm has the
  same number of groups (``gcd(32, C)`` for every width C, e.g. widths that are multiples of 32) and every
  attention layer has the same head size (C / num_heads at the levels with attention and in the middle). A
  level-conditioned UNet (trained on every frame as an image) is exported at level 0, the clean image it is
  sampled at: the level-0 embedding is added to the bias of the timestep embedding's last layer;
- a lifted run whose image network is a diffusers ``UNet2DModel`` (``model.lifted.base: diffusers:PATH``, or
  ``run:`` of such a run), saved as it is;
- the image model of a video run (``video_unet``, or a lifted run with temporal layers) only with
  ``drop_temporal=True``: the temporal layers are removed and the spatial path is exported. This is the trained
  model's function only when those layers are inactive (``temporal: none``, or untrained); after training on
  pseudo videos the spatial weights were learned *with* cross-frame mixing, so the exported image model is an
  approximation to evaluate before use (e.g. a warm start for an image model, or a comparison).
Tokenizers cannot be exported in this format.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from pseudovideo.config import RunConfig, model_kind
from pseudovideo.diffusion.betas import beta_schedule
from pseudovideo.models.lift import LiftedNet
from pseudovideo.models.unet import UNet, is_temporal_key
from pseudovideo.models.unet_blocks import Downsample, UNetBlock

__all__ = ["ExportError", "check_export_folder", "export_model", "unet_to_diffusers"]

SUPPORTED = (
    "diffusers export supports diffusion runs whose image model is our UNet (model.family unet; video_unet and "
    "lifted-from-unet runs with --drop-temporal) with one GroupNorm group count and one attention head size, "
    "or a diffusers UNet2DModel (model.lifted.base: diffusers:PATH)"
)


class ExportError(ValueError):
    """A run whose model cannot be written in the requested format; the message says what is supported."""


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise ExportError("exporting to diffusers needs the diffusers package: pip install '.[diffusers]'") from None
    return diffusers


def _check_mappable(unet: UNet) -> tuple[int, int]:
    """(norm groups, attention head size) shared by every layer of ``unet``; ExportError when they differ."""
    groups = {m.num_groups for m in unet.modules() if isinstance(m, nn.GroupNorm)}
    heads = set()
    for block in [*unet.down, *unet.middle, *unet.up]:
        if isinstance(block, UNetBlock) and block.attn is not None:
            heads.add(block.attn.qkv.in_features // block.attn.num_heads)
    if len(groups) != 1 or len(heads) != 1:
        raise ExportError(
            f"this UNet has GroupNorm group counts {sorted(groups)} and attention head sizes {sorted(heads)}; a diffusers "
            f"UNet2DModel has one of each (use widths that are multiples of 32 and num_heads that gives one head size). "
            f"{SUPPORTED}"
        )
    return groups.pop(), heads.pop()


def diffusers_config(unet: UNet) -> dict[str, Any]:
    """The ``UNet2DModel`` constructor arguments that reproduce our image ``unet``."""
    groups, head_dim = _check_mappable(unet)
    levels = len(unet.channel_mult)
    attention = [any(isinstance(b, UNetBlock) and b.attn is not None for b in _level_blocks(unet.down, lv))
                 for lv in range(levels)]
    res_blocks = sum(isinstance(b, UNetBlock) for b in _level_blocks(unet.down, 0))
    return dict(
        sample_size=unet.resolution, in_channels=unet.in_channels, out_channels=unet.in_channels,
        block_out_channels=tuple(unet.base_channels * m for m in unet.channel_mult), layers_per_block=res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        norm_num_groups=groups, norm_eps=unet.out[0].eps, attention_head_dim=head_dim, flip_sin_to_cos=True,
        freq_shift=0, act_fn="silu", dropout=unet.down[0].res.dropout.p, downsample_padding=1,
    )


def _level_blocks(blocks: nn.ModuleList, level: int) -> list[nn.Module]:
    """The blocks of one resolution level of the down path (split at the Downsample layers)."""
    groups: list[list[nn.Module]] = [[]]
    for block in blocks:
        groups[-1].append(block)
        if isinstance(block, Downsample):
            groups.append([])
    return groups[level]


def _block_weights(prefix: str, block: UNetBlock, index: int, out: dict[str, Tensor]) -> None:
    """Our UNetBlock's residual block and attention under diffusers' names (resnets.i / attentions.i)."""
    names = {"norm1": "norm1", "conv1": "conv1", "emb": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
             "skip": "conv_shortcut"}
    for name, tensor in block.res.state_dict().items():
        layer, param = name.split(".", 1)
        out[f"{prefix}.resnets.{index}.{names[layer]}.{param}"] = tensor
    if block.attn is not None:
        attn = block.attn.state_dict()
        base = f"{prefix}.attentions.{index}"
        out[f"{base}.group_norm.weight"], out[f"{base}.group_norm.bias"] = attn["norm.weight"], attn["norm.bias"]
        for part, name in zip(attn["qkv.weight"].chunk(3), ("to_q", "to_k", "to_v")):
            out[f"{base}.{name}.weight"] = part
        for part, name in zip(attn["qkv.bias"].chunk(3), ("to_q", "to_k", "to_v")):
            out[f"{base}.{name}.bias"] = part
        out[f"{base}.to_out.0.weight"], out[f"{base}.to_out.0.bias"] = attn["proj.weight"], attn["proj.bias"]


def _path_weights(blocks: nn.ModuleList, prefix: str, out: dict[str, Tensor]) -> None:
    """Down or up path: diffusers numbers the blocks of a level 0.. and a level's resampler ``*samplers.0``."""
    level, index = 0, 0
    for block in blocks:
        if isinstance(block, UNetBlock):
            _block_weights(f"{prefix}.{level}", block, index, out)
            index += 1
        else:
            sampler = "downsamplers" if isinstance(block, Downsample) else "upsamplers"
            for name, tensor in block.conv.state_dict().items():
                out[f"{prefix}.{level}.{sampler}.0.conv.{name}"] = tensor
            level, index = level + 1, 0


def unet_to_diffusers(unet: UNet) -> nn.Module:
    """A ``diffusers.UNet2DModel`` computing our image ``unet`` (temporal layers, if any, are left out); a
    level-conditioned ``unet`` is exported at level 0, the clean image it samples."""
    diffusers = _diffusers()
    model = diffusers.UNet2DModel(**diffusers_config(unet))
    out: dict[str, Tensor] = {}
    sd = {k: v for k, v in unet.state_dict().items() if not is_temporal_key(k)}
    out["conv_in.weight"], out["conv_in.bias"] = sd["input_conv.weight"], sd["input_conv.bias"]
    for ours, theirs in (("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
                         ("out.0", "conv_norm_out"), ("out.2", "conv_out")):
        out[f"{theirs}.weight"], out[f"{theirs}.bias"] = sd[f"{ours}.weight"], sd[f"{ours}.bias"]
    if unet.level_embed is not None:
        # a level-conditioned UNet adds level_embed(level) to the timestep embedding: at level 0 (the clean image,
        # what it is sampled at) that is a constant, folded into the bias of the embedding's last layer
        out["time_embedding.linear_2.bias"] = sd["time_embed.2.bias"] + sd["level_embed.weight"][0]
    _path_weights(unet.down, "down_blocks", out)
    _path_weights(unet.up, "up_blocks", out)
    for i, block in enumerate(unet.middle):
        _block_weights("mid_block", block, i, out)
    # our middle is [res + attn, res], diffusers' mid block resnets.0, attentions.0, resnets.1: same names
    model.load_state_dict(out, strict=True)
    return model.eval()


def _image_denoiser(model: nn.Module, config: RunConfig, drop_temporal: bool) -> nn.Module:
    """The exportable image network of a run's model (ExportError when there is none)."""
    family = config.model.family
    video = family == "video_unet" or (isinstance(model, LiftedNet) and model.lifted_blocks)
    if video and not drop_temporal:
        raise ExportError(f"this {family} run is a video model; pass --drop-temporal to export its image model without "
                          "the temporal layers (see pseudovideo.interop.export for when that is meaningful)")
    if video:
        warnings.warn("temporal layers dropped: the exported image model is the video model's spatial path only",
                      stacklevel=3)
    net = model.image if isinstance(model, LiftedNet) else model
    if isinstance(net, UNet):
        if net.temporal:
            image = UNet(in_channels=net.in_channels, base_channels=net.base_channels, channel_mult=net.channel_mult,
                         num_res_blocks=sum(isinstance(b, UNetBlock) for b in _level_blocks(net.down, 0)),
                         attention_resolutions=_attention_resolutions(net), resolution=net.resolution,
                         num_heads=next(b.attn.num_heads for b in net.middle if b.attn is not None),
                         dropout=net.down[0].res.dropout.p)
            image.load_spatial_state_dict(net.state_dict())
            net = image
        return unet_to_diffusers(net)
    if type(net).__name__ == "UNet2DModel":
        return net
    raise ExportError(f"the image model of this run is a {type(net).__name__}. {SUPPORTED}")


def _attention_resolutions(unet: UNet) -> tuple[int, ...]:
    """Feature-map sizes of the down levels that have spatial attention."""
    return tuple(unet.resolution // 2**lv for lv in range(len(unet.channel_mult))
                 if any(isinstance(b, UNetBlock) and b.attn is not None for b in _level_blocks(unet.down, lv)))


def scheduler_config(config: RunConfig) -> dict[str, Any]:
    """A diffusers scheduler config with the run's exact betas and prediction type."""
    d = config.diffusion
    betas = beta_schedule(d.beta_schedule, d.num_timesteps).tolist()
    return {"_class_name": "DDPMScheduler", "num_train_timesteps": d.num_timesteps, "trained_betas": betas,
            "prediction_type": "epsilon" if d.prediction == "eps" else "v_prediction", "clip_sample": True,
            "clip_sample_range": 1.0, "variance_type": "fixed_small"}


def check_export_folder(out: Path, overwrite: bool) -> None:
    """ExportError when ``out`` is a file, or a folder holding anything and ``overwrite`` is False."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"export folder {out} is a file; give a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise ExportError(f"export folder {out} is not empty (it holds {shown}); give an empty or new folder, or pass "
                          "--overwrite (overwrite=True) to replace the files the export writes (other files are kept)")


def _write_export(net: nn.Module, config: RunConfig, out: Path) -> None:
    """Writes ``net`` and the scheduler into a hidden folder inside ``out``, then moves only those files into
    ``out``: diffusers' ``save_pretrained`` deletes other ``*.safetensors`` weights of the folder it writes into,
    and a user's files there must survive."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".pseudovideo-export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        net.save_pretrained(str(staging), safe_serialization=True)
        (staging / "scheduler").mkdir(parents=True, exist_ok=True)
        (staging / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config(config), indent=2))
        for written in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = out / written.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(written, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):  # a failed export into a new folder leaves nothing behind
            out.rmdir()


def export_model(model: nn.Module, config: RunConfig, out: str | Path, *, drop_temporal: bool = False,
                 source: str = "the run") -> Path:
    """Writes the image denoiser of a trained diffusion ``model`` (built from ``config``) as a diffusers folder ``out``
    (checked first with :func:`check_export_folder`); ExportError naming ``source`` for a tokenizer.
    :func:`pseudovideo.factory.models.export_run` does it for a run folder."""
    if model_kind(config.model) == "tokenizer":
        raise ExportError(f"{source} is a tokenizer run ({config.model.family}). {SUPPORTED}")
    out = Path(out)
    _write_export(_image_denoiser(model, config, drop_temporal), config, out)
    return out
