"""The ``probe`` metric: linear-probe accuracy of frozen features of the clean frame, beside random weights."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from pseudovideo.config import build_config
from pseudovideo.evaluation.evaluate import evaluate_run
from pseudovideo.evaluation.probe import PROBE_TRAIN_IMAGES, frozen_features, linear_probe, random_weights_model
from pseudovideo.factory.datasets import ProbeSkipped, unlabelled_reason
from pseudovideo.factory.models import load_run
from pseudovideo.training.randomness import seeded
from pseudovideo.training.runs import check_run_inputs, train_run
from pseudovideo.training.tasks import build_task

# -- the classifier ------------------------------------------------------------------------------------------------


def _labels(n: int, seed: int) -> torch.Tensor:
    """(n,) labels of 4 classes, unbalanced (class 2 most frequent)."""
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.tensor([0.2, 0.2, 0.4, 0.2]), n, replacement=True, generator=g)


def test_constant_features_score_the_majority_class_rate() -> None:
    train_y, test_y = _labels(400, 0), _labels(300, 1)
    result = linear_probe(torch.ones(400, 5), train_y, torch.ones(300, 5), test_y)
    majority = int(torch.bincount(train_y).argmax())
    assert majority == 2
    assert result["accuracy"] == result["chance"] == pytest.approx(float((test_y == majority).float().mean()))
    assert abs(result["accuracy"] - 0.4) < 0.1  # about the majority class's share, far from a learned classifier


def test_informative_features_score_near_one() -> None:
    train_y, test_y = _labels(400, 0), _labels(300, 1)
    g = torch.Generator().manual_seed(2)
    features = lambda y: torch.nn.functional.one_hot(y, 4).float() + 0.2 * torch.randn(len(y), 4, generator=g)  # noqa: E731
    result = linear_probe(features(train_y), train_y, features(test_y), test_y)
    assert result["accuracy"] > 0.98 and result["converged"]


def test_the_recipe_is_deterministic() -> None:
    train_y, test_y = _labels(300, 0), _labels(200, 1)
    g = torch.Generator().manual_seed(3)
    train_x, test_x = torch.randn(300, 16, generator=g), torch.randn(200, 16, generator=g)
    train_x[:, 0] += train_y  # a weak signal
    test_x[:, 0] += test_y
    first = linear_probe(train_x, train_y, test_x, test_y)
    assert first == linear_probe(train_x.clone(), train_y.clone(), test_x.clone(), test_y.clone())
    assert first["chance"] < first["accuracy"] < 1


def test_non_finite_features_give_nan_and_one_class_is_refused() -> None:
    y = _labels(50, 0)
    bad = torch.ones(50, 3)
    bad[0, 0] = float("nan")
    assert torch.isnan(torch.tensor(linear_probe(bad, y, torch.ones(50, 3), y)["accuracy"]))
    with pytest.raises(ProbeSkipped, match="1 class"):
        linear_probe(torch.randn(10, 3), torch.zeros(10, dtype=torch.long), torch.randn(10, 3), y[:10])


# -- runs ----------------------------------------------------------------------------------------------------------

TINY = {
    "data": {"dataset": "digits", "resolution": 8, "max_images": 64},
    "train": {"steps": 3, "batch_size": 8, "checkpoint_every": 3, "warmup_steps": 1, "progress": False, "device": "cpu",
              "log_to": ["csv"]},
    "eval": {"num_images": 40, "batch_size": 20, "metrics": ["probe"]},
}
VQVAE = {"family": "vqvae", "vqvae": {"base_channels": 8, "codebook_size": 16, "codebook_dim": 4}}
CVIVIT = {"family": "cvivit", "cvivit": {"dim": 16, "heads": 2, "dim_head": 8, "spatial_depth": 1, "temporal_depth": 1,
                                         "codebook_size": 16, "codebook_dim": 4}}
UNET = {"family": "unet", "unet": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                                   "attention_resolutions": [4], "num_heads": 2}}


def _config(tmp_path: Path, name: str, model: dict, frames: int, **extra: dict) -> object:
    data = {**TINY, "name": name, "out_dir": str(tmp_path), "model": model, "pseudo_video": {"num_frames": frames},
            "diffusion": {"num_timesteps": 20, "sample_steps": 2}, **extra}
    return build_config(data)


def test_tokenizer_probe_in_eval_json_with_protocol_and_same_twice(tmp_path: Path) -> None:
    config = _config(tmp_path, "cv", CVIVIT, 3)
    train_run(config)
    first = evaluate_run(config.run_dir, device="cpu")
    second = evaluate_run(config.run_dir, device="cpu")
    metrics = first["metrics"]
    assert set(metrics) == {"probe", "probe_random"} and metrics == second["metrics"]
    assert all(0 <= v <= 1 for v in metrics.values())
    protocol = first["protocol"]["probe"]
    assert protocol["train_images"].startswith("1500 images")  # digits' training split holds 1500 < PROBE_TRAIN_IMAGES
    assert protocol["test_images"].startswith("40 held-out evaluation images")
    assert "before quantization (the quantizer's 16-d input tokens) at the clean frame's time step" in protocol["features"]
    assert "LogisticRegression(C=1.0, solver=lbfgs, max_iter=1000)" in protocol["classifier"]
    assert 0 < protocol["chance"] < 0.5 and "random weights" in protocol["probe_random"]
    markdown = (config.run_dir / "eval.md").read_text()
    assert "| probe_random |" in markdown and "- probe: recipe: linear-probe-v1; features: encoder output" in markdown


def test_image_tokenizer_features_are_the_clean_frames_encoding(tmp_path: Path) -> None:
    # A VQVAE codes frames independently: its clean-frame features from a 3-frame pseudo video equal those of the
    # clean image alone; the C-ViViT's last step reads every frame, so its features are not those of the image alone.
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    for model_section, same in ((VQVAE, True), (CVIVIT, False)):
        video_config = _config(tmp_path, "v", model_section, 3)
        image_config = dataclasses.replace(video_config, pseudo_video=dataclasses.replace(video_config.pseudo_video, num_frames=1))
        with seeded(0):
            model = build_task(video_config, 1).model.eval()
        kwargs = dict(batch_size=3, seed=0, device=torch.device("cpu"))
        from_video = frozen_features(model, video_config, images, **kwargs)
        from_image = frozen_features(model, image_config, images, **kwargs)
        assert from_video.shape == (6, model.quantizer.dim)
        assert torch.allclose(from_video, from_image, atol=1e-5) == same


def test_random_weights_model_is_the_untrained_initialisation(tmp_path: Path) -> None:
    config = _config(tmp_path, "v", VQVAE, 1)
    with seeded(config.train.seed):  # what train_run builds before the first step
        initial = build_task(config, 1).model
    random = random_weights_model(config, 1, torch.device("cpu"))
    state = random.state_dict()
    assert state.keys() == initial.state_dict().keys()
    assert all(torch.equal(value, state[key]) for key, value in initial.state_dict().items())


@pytest.mark.parametrize(("family", "frames"), [("unet", 1), ("video_unet", 2)])
def test_diffusion_probe_reads_the_bottleneck(tmp_path: Path, family: str, frames: int) -> None:
    config = _config(tmp_path, family, {**UNET, "family": family}, frames)
    train_run(config)
    result = evaluate_run(config.run_dir, eval_config=dataclasses.replace(config.eval, metrics=["probe"]), device="cpu")
    assert 0 <= result["metrics"]["probe"] <= 1 and 0 <= result["metrics"]["probe_random"] <= 1
    # bottleneck of channel_mult [1, 2] at base 8: 16 channels, at step round(0.1 x 20) = 2
    assert "16 channels) of the clean frame at diffusion step t=2 of 20" in result["protocol"]["probe"]["features"]
    _, model, _ = load_run(config.run_dir)
    features = frozen_features(model, config, torch.rand(5, 1, 8, 8) * 2 - 1, batch_size=5, seed=0,
                               device=torch.device("cpu"))
    assert features.shape == (5, 16) and torch.isfinite(features).all()


def test_lifted_run_probe_random_rebuilds_its_base_fresh(tmp_path: Path) -> None:
    base = _config(tmp_path, "base", VQVAE, 1)
    train_run(base)
    lifted = _config(tmp_path, "lifted", {**VQVAE, "family": "lifted", "lifted": {"base": f"run:{base.run_dir}",
                                                                                   "kind": "tokenizer"}}, 2)
    random = random_weights_model(lifted, 1, torch.device("cpu"))
    _, trained_base, _ = load_run(base.run_dir)
    with seeded(lifted.train.seed):  # the base's architecture, fresh
        fresh_base = build_task(dataclasses.replace(base, train=lifted.train), 1).model
    assert all(torch.equal(v, random.image.state_dict()[k]) for k, v in fresh_base.state_dict().items())
    assert not torch.equal(random.image.enc_in.weight, trained_base.enc_in.weight)
    train_run(lifted)
    metrics = evaluate_run(lifted.run_dir, device="cpu")["metrics"]
    assert set(metrics) == {"probe", "probe_random"}


def _unlabelled_folder(root: Path, count: int = 30) -> Path:
    g = torch.Generator().manual_seed(0)
    root.mkdir()
    for i in range(count):
        pixels = (torch.rand(8, 8, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"img{i:03d}.png")  # no class sub-folders: no labels
    return root


def test_unlabelled_dataset_is_told_before_training_and_skipped_with_the_reason(tmp_path: Path) -> None:
    folder = _unlabelled_folder(tmp_path / "pics")
    config = _config(tmp_path, "u", VQVAE, 1, data={"dataset": f"folder:{folder}", "resolution": 8,
                                                    "held_out_fraction": 0.3})
    reason = unlabelled_reason(config)
    assert reason and "has no class labels" in reason
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_run_inputs(config)
    assert [str(w.message) for w in caught] == [f"probe: evaluation will skip it: {reason}"]
    assert unlabelled_reason(_config(tmp_path, "d", VQVAE, 1)) is None  # digits have labels
    with pytest.warns(UserWarning, match="probe: evaluation will skip it"):  # training warns before its first step
        train_run(config)
    result = evaluate_run(config.run_dir, device="cpu")
    assert result["skipped"] == {"probe": reason} and "probe" not in result["metrics"]


def test_the_training_count_is_fixed() -> None:
    assert PROBE_TRAIN_IMAGES == 2000  # changing the recipe needs a new PROBE_VERSION (figures stop comparing)
