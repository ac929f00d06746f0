"""Learnable schedules (monotone, endpoints fixed, budget kept), mixture, per-image policy, exact save/reload,
learning off = today's pseudo videos, the shuffled / noise_frames controls and one-line config errors."""

from __future__ import annotations

import pytest
import torch
import yaml

from pseudovideo.config import ConfigError, build_config
from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder as builder_from_config
from pseudovideo.pseudo_video.builder import NOISE_FRAMES_STD, PseudoVideoBuilder, build_pseudo_video_builder
from pseudovideo.pseudo_video.learned.corruption import (
    LearnedPseudoVideos,
    budget_levels,
    describe_schedule,
    fragment_yaml,
    free_levels,
    load_learned,
    operators_and_levels,
    save_learned,
)

BLUR_NOISE = [{"name": "blur", "max_level": 2.0}, {"name": "noise", "max_level": 0.3}]


def _learned(mode: str = "free", **kwargs) -> LearnedPseudoVideos:
    operators, levels = operators_and_levels(BLUR_NOISE, 6)
    return LearnedPseudoVideos(operators, levels, mode=mode, **kwargs)


def _is_monotone_with_fixed_endpoints(levels: torch.Tensor, top: torch.Tensor) -> bool:
    return (torch.equal(levels[..., 0, :], top.expand_as(levels[..., 0, :]))
            and bool((levels[..., -1, :] == 0).all()) and bool((levels[..., 1:, :] <= levels[..., :-1, :]).all()))


def test_free_and_budget_levels_stay_monotone_with_fixed_endpoints_for_any_parameters() -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.tensor([[1.0], [0.75], [0.5], [0.25], [0.0]])
    for scale in (0.1, 3.0, 30.0):
        theta = torch.randn(64, 4, 1, generator=generator) * scale
        assert _is_monotone_with_fixed_endpoints(free_levels(theta), torch.ones(1))
        moved = budget_levels(torch.randn(64, 3, 1, generator=generator) * scale, base, 0.2)
        assert _is_monotone_with_fixed_endpoints(moved, torch.ones(1))
        assert bool(((moved - base).abs() <= 0.2 + 1e-6).all())  # the budget is kept


def test_a_learned_corruption_starts_at_the_configured_schedule_and_gradients_flow() -> None:
    configured = operators_and_levels(BLUR_NOISE, 6)[1]
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    for learned in (_learned(), _learned("budget", budget=0.3), _learned(mixture=True), _learned(policy_channels=3, mixture=True)):
        assert torch.allclose(learned.levels, configured, atol=1e-6)
        video = learned(images, generator=torch.Generator().manual_seed(1))
        assert video.shape == (3, 6, 3, 8, 8) and torch.equal(video[:, -1], images)
        video[:, :-1].square().mean().backward()
        grads = {name: p.grad for name, p in learned.named_parameters() if p.grad is not None}
        learning = "policy.schedule_head.bias" if learned.policy is not None else "theta"
        assert grads[learning].abs().sum() > 0, learned
        if learned.learned_mixture:
            mixture = "policy.mixture_head.bias" if learned.policy is not None else "mixture_logits"
            assert grads[mixture].abs().sum() > 0


def test_budget_mixture_keeps_every_operator_and_downsample_keeps_its_octaves() -> None:
    learned = _learned("budget", budget=0.4, mixture=True)
    with torch.no_grad():
        learned.mixture_logits.copy_(torch.tensor([[50.0, -50.0]]).expand_as(learned.mixture_logits))
    assert bool((learned.mixture >= 0.3 - 1e-6).all())  # (1 - budget) / K of each operator
    operators, levels = operators_and_levels([{"name": "downsample", "schedule": "explicit", "levels": [2, 1, 1, 0, 0]},
                                              {"name": "noise", "max_level": 0.3}], 6)
    mixed = LearnedPseudoVideos(operators, levels)
    with torch.no_grad():
        mixed.theta.normal_()
    assert torch.equal(mixed.levels[:, 0], levels[:, 0]) and not torch.equal(mixed.levels[:, 1], levels[:, 1])
    assert "downsample: discrete octaves" in describe_schedule(mixed)


def test_a_learned_corruption_is_saved_and_reloaded_exactly(tmp_path) -> None:
    torch.manual_seed(0)
    learned = _learned(mixture=True, policy_channels=3, objective="informativeness", description="a test")
    with torch.no_grad():
        for p in learned.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    reloaded = load_learned(save_learned(learned, tmp_path / "c.safetensors"))
    assert reloaded.objective == "informativeness" and reloaded.description == "a test"
    for (name, a), (_, b) in zip(learned.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    images = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(learned(images, torch.Generator().manual_seed(5)), reloaded(images, torch.Generator().manual_seed(5)))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_learned(tmp_path / "bad.safetensors")


def test_the_config_fragment_reloads_the_same_levels_bit_for_bit() -> None:
    learned = _learned()
    with torch.no_grad():
        learned.theta.add_(torch.randn_like(learned.theta))
    fragment = yaml.safe_load(fragment_yaml(learned, "by a test"))["pseudo_video"]
    config = build_config({"pseudo_video": fragment})
    builder = builder_from_config(config.pseudo_video)
    assert isinstance(builder, PseudoVideoBuilder) and torch.equal(builder.levels, learned.levels)
    assert config.pseudo_video.learned.searched_by == "by a test"


def test_learning_off_gives_todays_pseudo_videos() -> None:
    """Values of today's builder (main before learned corruptions) for noise + mask, which involve no matmul."""
    x = torch.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    expected = {"first_order": (-18.85884599367273, 440.4449920296991), "higher_order": (-33.834415417164564, 447.5729742005886),
                "copies": (0.0, 514.6736212059976)}
    for construction, (total, energy) in expected.items():
        config = build_config({"pseudo_video": {"num_frames": 4, "construction": construction, "corruptions": [
            {"name": "noise", "max_level": 0.3}, {"name": "mask", "max_level": 0.5, "patch_size": 2}]}})
        builder = builder_from_config(config.pseudo_video)
        assert type(builder) is PseudoVideoBuilder
        video = builder(x, generator=torch.Generator().manual_seed(7)).double()
        assert video.sum().item() == pytest.approx(total, abs=1e-9) and video.square().sum().item() == pytest.approx(energy, rel=1e-12)


def test_shuffled_permutes_the_higher_order_frames_and_keeps_the_clean_frame_last() -> None:
    x = torch.rand(5, 3, 8, 8) * 2 - 1
    higher = build_pseudo_video_builder(BLUR_NOISE, 6, "higher_order")(x, torch.Generator().manual_seed(2))
    shuffled = build_pseudo_video_builder(BLUR_NOISE, 6, "shuffled")(x, torch.Generator().manual_seed(2))
    assert torch.equal(shuffled[:, -1], x)
    orders = [[next(s for s in range(5) if torch.equal(shuffled[b, t], higher[b, s])) for t in range(5)] for b in range(5)]
    assert all(sorted(order) == list(range(5)) for order in orders)  # the same frames, in some order
    assert len({tuple(order) for order in orders}) > 1  # a new order per video


def test_noise_frames_carry_no_information_about_the_image() -> None:
    builder = build_pseudo_video_builder([], 5, "noise_frames")
    a = builder(torch.rand(64, 3, 16, 16), torch.Generator().manual_seed(0))
    b = builder(-torch.rand(64, 3, 16, 16), torch.Generator().manual_seed(0))
    assert torch.equal(a[:, :-1], b[:, :-1])  # the same noise whatever the image
    assert abs(float(a[:, :-1].std()) - NOISE_FRAMES_STD) < 0.01 and abs(float(a[:, :-1].mean())) < 0.01


@pytest.mark.parametrize("overrides, expected", [
    (["pseudo_video.learned.objective=informativeness", "pseudo_video.num_frames=1"], "num_frames >= 2, got 1"),
    (["pseudo_video.learned.objective=adversarial", "pseudo_video.learned.budget=0"], "pseudo_video.learned.budget"),
    (["pseudo_video.learned.objective=adversarial", "pseudo_video.learned.mixture=true",
      "pseudo_video.corruptions=[{name: blur}, {name: downsample, max_level: 1}]"], "downsample is not differentiable"),
    (["pseudo_video.learned.objective=informativeness", "pseudo_video.construction=first_order"], "higher-order"),
    (["pseudo_video.learned.objective=adversarial", "pseudo_video.construction=copies"], "nothing to learn"),
    (["pseudo_video.learned.objective=adversarial", "pseudo_video.corruptions=[{name: downsample, max_level: 1}]"],
     "nothing to learn"),
    (["pseudo_video.learned.objective=adversarial", "pseudo_video.num_frames=2"], "no level to learn"),
    (["pseudo_video.learned.mixture=true"], "objective none learns nothing"),
    (["pseudo_video.learned.from_file=/no/such/file.safetensors"], "does not exist"),
    (["pseudo_video.num_frames=3", "pseudo_video.mixture=[[0.5, 0.6], [1, 0]]"], "pseudo_video.mixture.0"),
    (["pseudo_video.learned.objective=random_search", "pseudo_video.learned.operator_sets=[[mask]]"], "operator_sets.0"),
    (["pseudo_video.learned.objective=informativeness", "pseudo_video.learned.search_steps=0"], "search_steps"),
])
def test_impossible_learned_settings_are_refused_in_one_line(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as err:
        build_config({}, overrides)
    assert "\n" not in str(err.value)


def test_every_builder_labels_its_frames_for_pictures() -> None:
    """Pictures label each column with what the frame is: levels, the controls' nature, a learned schedule's levels."""
    learned = _learned(mixture=True)
    labels = learned.frame_labels()
    assert len(labels) == learned.num_frames and labels[-1].endswith("clean")
    assert all("(one, drawn)" in label for label in labels[:-1])
    first = labels[0].splitlines()
    assert first[0] == "t=0" and first[1] == f"blur {float(learned.levels[0, 0]):.3g}"
    corruptions = [{"name": "blur", "max_level": 2.0}]
    noise = build_pseudo_video_builder(corruptions, num_frames=4, construction="noise_frames").frame_labels()
    shuffled = build_pseudo_video_builder(corruptions, num_frames=4, construction="shuffled").frame_labels()
    assert [label.splitlines()[1] for label in noise] == ["pure noise"] * 3 + ["clean"]
    assert [label.splitlines()[1] for label in shuffled] == ["shuffled order"] * 3 + ["clean"]
