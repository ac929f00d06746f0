"""Same config and seed give the same weights on CPU; another seed gives other weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pseudovideo.cli import main
from pseudovideo.factory.models import load_run
from pseudovideo.training.randomness import seeded

from test_train_cli import TINY, TOKENIZERS, UNET

FAMILIES = {
    "vqvae": TOKENIZERS["vqvae"],
    "cvivit": TOKENIZERS["cvivit"],
    "video_unet": ["model.family=video_unet", "pseudo_video.num_frames=2", *UNET],
}


def _trained_weights(tmp_path: Path, family: str, name: str, seed: int) -> dict[str, torch.Tensor]:
    overrides = [*TINY, *FAMILIES[family], "eval.metrics=[psnr]" if family != "video_unet" else "eval.metrics=[swd]",
                 "eval.num_images=8", f"train.seed={seed}", f"name={name}", f"out_dir={tmp_path}"]
    torch.manual_seed(1234 + len(name))  # whatever the process drew before must not matter
    assert main(["train", *overrides]) == 0
    _, model, _ = load_run(tmp_path / name, use_ema=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_fresh_runs_with_one_seed_give_identical_weights(tmp_path: Path, family: str) -> None:
    first = _trained_weights(tmp_path, family, "a", seed=3)
    second = _trained_weights(tmp_path, family, "bb", seed=3)
    other = _trained_weights(tmp_path, family, "ccc", seed=4)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{key} differs between two runs with seed 3"
    floating = [k for k in first if first[k].is_floating_point() and first[k].numel() > 1]
    assert any(not torch.equal(first[k], other[k]) for k in floating), "seed 4 gave the weights of seed 3"


def test_seeded_restores_the_callers_random_state() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with seeded(7):
        inside = torch.rand(3)
    after = torch.rand(3)
    with seeded(7):
        assert torch.equal(torch.rand(3), inside)
    assert torch.equal(after, expected)
