# %% [markdown]
# # pseudovideo quickstart
#
# Notebook-style script (`# %%` cells: run it in VS Code / Jupyter with jupytext, or as a script):
# pseudo videos of the embedded digits dataset, then an image tokenizer (VQVAE, T = 1) and its video
# counterpart (C-ViViT on 5-frame pseudo videos) trained at equal steps and compared on the clean image.
#
#     python examples/quickstart.py          # about 3 minutes on 2 CPU cores
#     python examples/quickstart.py --tiny   # seconds (PSEUDOVIDEO_TINY=1 does the same): checks it runs
#
# Everything is written under runs/quickstart/ (--tiny: runs/quickstart-tiny/; or --out DIR). A second run reuses
# the models it trained; a folder holding models trained with other settings is refused, never reused.

# %%
import argparse
import json
import os
from pathlib import Path

import torch

from pseudovideo import build_config, build_dataset, evaluate_run, load_run, pseudo_video_builder_from_config, train_run
from pseudovideo.config import ConfigError
from pseudovideo.data import spread_images
from pseudovideo.pictures import save_side_by_side, save_video_grid
from pseudovideo.training.runs import plan_run

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--tiny", action="store_true", help="a few steps and tiny models (a smoke test)")
parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/quickstart, --tiny: runs/quickstart-tiny)")
args, _ = parser.parse_known_args()  # tolerate a notebook kernel's own arguments
TINY = args.tiny or os.environ.get("PSEUDOVIDEO_TINY") == "1"
OUT = args.out or Path("runs/quickstart-tiny" if TINY else "runs/quickstart")

# %% [markdown]
# ## Pseudo videos
# Each image becomes 5 frames of decreasing blur + noise; the last frame is the image itself.

# %%
digits = build_dataset("digits", resolution=16, split="train")  # 1,500 8x8 digits upsampled to 16x16, in [-1, 1]
images = spread_images(digits, 8)  # (8, 1, 16, 16), spread over the split (every digit, not only the first ones)
corruptions = [{"name": "blur", "max_level": 1.5}, {"name": "noise", "max_level": 0.2}]
common = {
    "out_dir": str(OUT),
    "data": {"dataset": "digits", "resolution": 16},
    "pseudo_video": {"construction": "higher_order", "corruptions": corruptions},
    "train": {"steps": 4 if TINY else 600, "batch_size": 8 if TINY else 32, "lr": 1e-3, "warmup_steps": 2 if TINY else 30,
              "checkpoint_every": 200, "image_every": 200, "ema_decay": 0.99, "progress": not TINY, "device": "auto"},
    "eval": {"num_images": 16 if TINY else 297, "metrics": ["psnr", "ssim", "swd"]},
}
video_config = build_config({**common, "name": "cvivit", "pseudo_video": {**common["pseudo_video"], "num_frames": 5},
                             "model": {"family": "cvivit", "cvivit": {"dim": 32 if TINY else 96, "heads": 4,
                                                                      "dim_head": 8 if TINY else 24,
                                                                      "codebook_size": 256, "codebook_dim": 32}}})
builder = pseudo_video_builder_from_config(video_config.pseudo_video)
videos = builder(images, generator=torch.Generator().manual_seed(0))  # (8, 5, 1, 16, 16)
print("pseudo videos:", save_video_grid(videos, OUT / "pseudo_videos.png", upscale=4, column_labels=builder.frame_labels()))

# %% [markdown]
# ## Train the image model and its video counterpart
# Same steps, batch and codebook; both code the clean image as (H/4) x (W/4) codes.

# %%
image_config = build_config({**common, "name": "vqvae", "pseudo_video": {**common["pseudo_video"], "num_frames": 1},
                             "model": {"family": "vqvae", "vqvae": {"base_channels": 8 if TINY else 40,
                                                                    "channel_mult": [1, 2, 2],
                                                                    "codebook_size": 256, "codebook_dim": 32}}})
results = {}
for config in (image_config, video_config):
    try:  # a second run of the script reuses the models; a folder trained with other settings is refused
        action, _ = plan_run(config)
    except ConfigError as err:
        raise SystemExit(f"quickstart: {err}") from None
    if action in ("train", "resume"):
        train_run(config, resume=action == "resume")
    if action == "skip":  # trained and evaluated with these very settings
        results[config.name] = json.loads((config.run_dir / "eval.json").read_text())["metrics"]
    else:
        results[config.name] = evaluate_run(config.run_dir, device="auto")["metrics"]

# %% [markdown]
# ## Compare on the clean image (held-out test split)

# %%
print(f"{'model':8} {'PSNR dB':>8} {'SSIM':>6} {'SWD':>7}")
for name, metrics in results.items():
    print(f"{name:8} {metrics['psnr']:8.2f} {metrics['ssim']:6.3f} {metrics['swd_avg']:7.2f}")

# %% [markdown]
# ## Look at reconstructions
# The video model reconstructs the whole pseudo video; its last frame is the reconstructed image.

# %%
test = build_dataset("digits", resolution=16, split="test")
originals = spread_images(test, 8)  # (8, 1, 16, 16)
rows, labels = [originals], ["original"]
for config in (image_config, video_config):
    run_config, model, _ = load_run(config.run_dir)
    with torch.no_grad():
        clip = pseudo_video_builder_from_config(run_config.pseudo_video)(originals, generator=torch.Generator().manual_seed(1))
        rows.append(model(clip).recon[:, -1].clamp(-1, 1))  # (8, 1, 16, 16)
    labels.append(config.name)
print("reconstructions:", save_side_by_side(rows, labels, OUT / "reconstructions.png", upscale=4))
