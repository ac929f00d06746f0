"""pseudovideo.lift: exact image model at init, causality, per-frame inputs, hooks confined, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pseudovideo
from pseudovideo.models.lift import LiftedNet, LiftedTokenizer, LiftError, find_blocks, lift
from pseudovideo.models.unet import image_unet
from pseudovideo.models.vqvae import VQVAE

from _unet_helpers import TINY_UNET, randomize

B, T = 2, 3


def _randomize_except_temporal(lifted: nn.Module, seed: int = 0) -> nn.Module:
    """Active image weights (zero-initialised convs of the UNet made non-zero), temporal layers left at init."""
    randomize(lifted.image, seed)
    return lifted.eval()


def tiny_vqvae() -> VQVAE:
    return VQVAE(in_channels=3, resolution=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                 codebook_size=16, codebook_dim=4)


def tiny_diffusers_unet():
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install '.[diffusers]')")
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=8,
    )


@pytest.mark.parametrize("temporal", ["attention", "conv", "both"])
def test_lifted_unet_is_the_image_unet_at_init(temporal):
    torch.manual_seed(0)
    unet = image_unet(in_channels=3, **TINY_UNET)
    lifted = _randomize_except_temporal(lift(unet, num_frames=T, temporal=temporal))
    assert isinstance(lifted, LiftedNet) and len(lifted.lifted_blocks) > 3
    x, t = torch.randn(B, T, 3, 8, 8), torch.tensor([5, 700])
    with torch.no_grad():
        assert (lifted(x, t) - unet(x, t)).abs().max() <= 1e-6
        t_frames = torch.tensor([[1, 50, 999], [7, 7, 300]])  # (B, T): a timestep per frame
        per_frame = unet(x.flatten(0, 1)[:, None], t_frames.flatten())[:, 0].unflatten(0, (B, T))
        assert (lifted(x, t_frames) - per_frame).abs().max() <= 1e-6


def test_lifted_vqvae_is_the_image_vqvae_at_init():
    torch.manual_seed(0)
    vqvae = tiny_vqvae().eval()
    lifted = lift(vqvae, num_frames=T, temporal="both").eval()
    assert isinstance(lifted, LiftedTokenizer)
    assert any(n.startswith("enc_blocks") for n in lifted.lifted_blocks)
    assert any(n.startswith("dec_blocks") for n in lifted.lifted_blocks)
    video = torch.randn(B, T, 3, 8, 8)
    with torch.no_grad():
        ours, theirs = lifted.encode(video), vqvae.encode(video)
        assert (ours[0] - theirs[0]).abs().max() <= 1e-6
        assert torch.equal(ours[1], theirs[1])
        assert (lifted.decode(ours[0]) - vqvae.decode(theirs[0])).abs().max() <= 1e-6


def test_lifted_diffusers_unet_is_the_image_model_at_init():
    net = randomize(tiny_diffusers_unet())
    lifted = lift(net, num_frames=T).eval()
    assert any("resnets" in n for n in lifted.lifted_blocks)
    x, t = torch.randn(B, T, 3, 8, 8), torch.tensor([3, 900])
    with torch.no_grad():
        expected = net(x.flatten(0, 1), t.repeat_interleave(T)).sample.unflatten(0, (B, T))
        assert (lifted(x, t) - expected).abs().max() <= 1e-6
        # per-frame timesteps (B, T) give every frame its own
        t_frames = torch.tensor([[1, 2, 3], [4, 5, 6]])
        per_frame = net(x.flatten(0, 1), t_frames.flatten()).sample.unflatten(0, (B, T))
        assert (lifted(x, t_frames) - per_frame).abs().max() <= 1e-6


def test_trained_temporal_layers_mix_frames_and_the_image_net_alone_is_untouched():
    torch.manual_seed(0)
    unet = image_unet(in_channels=3, **TINY_UNET)
    lifted = randomize(lift(unet, num_frames=T))
    x, t = torch.randn(B, T, 3, 8, 8), torch.tensor([5, 700])
    with torch.no_grad():
        y = lifted(x, t)
        x2 = x.clone()
        x2[:, 0] += 1.0
        assert (lifted(x2, t)[:, 2] - y[:, 2]).abs().max() > 1e-4  # frame 2 sees frame 0
        alone = unet(x, t)  # hooks are inactive outside the lifted model
        assert (alone - y).abs().max() > 1e-4
        assert torch.equal(unet(x2, t)[:, 2], alone[:, 2])
    assert lifted.unlift() is unet and not any(m._forward_hooks for m in unet.modules())


def _future_independence(forward, video: torch.Tensor) -> None:
    with torch.no_grad():
        y = forward(video)
        for t in range(T - 1):
            changed = video.clone()
            changed[:, t + 1:] = torch.randn_like(changed[:, t + 1:])
            y2 = forward(changed)
            assert torch.allclose(y2[:, : t + 1], y[:, : t + 1], atol=1e-6), f"frame <= {t} sees later frames"
            assert (y2[:, t + 1:] - y[:, t + 1:]).abs().max() > 1e-4


def test_causal_lifted_tokenizer_does_not_look_ahead():
    torch.manual_seed(0)
    lifted = randomize(lift(tiny_vqvae(), num_frames=T, causal=True, temporal="both"))
    _future_independence(lambda v: lifted(v).recon, torch.randn(B, T, 3, 8, 8))


def test_causal_lifted_unet_does_not_look_ahead():
    torch.manual_seed(0)
    lifted = randomize(lift(image_unet(in_channels=3, **TINY_UNET), num_frames=T, causal=True, temporal="both"))
    t = torch.tensor([5, 700])
    _future_independence(lambda v: lifted(v, t), torch.randn(B, T, 3, 8, 8))


def test_where_by_name_and_glob_and_outermost_only():
    unet = image_unet(in_channels=3, **TINY_UNET)
    names = find_blocks(unet)
    assert names and all(type(dict(unet.named_modules())[n]).__name__ == "UNetBlock" for n in names)
    assert find_blocks(unet, "middle.*") == ["middle.0", "middle.1"]
    mixed = find_blocks(unet, ["middle.0", "SpatialAttention"])
    assert "middle.0" in mixed and "middle.0.attn" not in mixed  # inside a chosen block: not lifted twice
    assert any(n.startswith(("down.", "up.")) and n.endswith(".attn") for n in mixed)


def test_rate_of_a_lifted_tokenizer():
    vqvae = tiny_vqvae()
    assert lift(vqvae, num_frames=T, where="dec_blocks.*").rate(T).codes_per_image == T * 16
    vqvae = tiny_vqvae()
    assert lift(vqvae, num_frames=T, where="enc_blocks.*").rate(T).codes_per_image == 16


def test_bad_where_lists_the_block_types():
    with pytest.raises(LiftError, match=r"no block of UNet matches where=\['Nope'\].*UNetBlock"):
        lift(image_unet(in_channels=3, **TINY_UNET), num_frames=T, where="Nope")


def test_non_4d_activations_are_refused():
    class TokenNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Flatten(1), nn.Linear(12, 12))

        def forward(self, x):
            return self.block(x[:, :, :2, :2])

    class Half(nn.Module):  # its last layer (a 1x1 conv to 8 channels) hides the block's real output width
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            return self.conv(x)[:, :4]

    class Squeeze(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Half()

        def forward(self, x):
            return self.block(x)

    with pytest.raises(LiftError, match=r"returns 4 channels .* built for 8.*channels=\{'block': 4\}"):
        lift(Squeeze(), num_frames=T, where="block")(torch.randn(B, T, 3, 4, 4))
    assert lift(Squeeze(), num_frames=T, where="block", channels={"block": 4})(torch.randn(B, T, 3, 4, 4)).shape == (B, T, 4, 4, 4)
    lifted = lift(TokenNet(), num_frames=T, where="block")
    with pytest.raises(LiftError, match="not 4-D"):
        lifted(torch.randn(B, T, 3, 4, 4))
    with pytest.raises(LiftError, match="only a torch.nn.Module"):
        lift(lambda x: x, num_frames=T)


def test_deepcopy_has_its_own_hooks_and_package_exports_lift():
    assert pseudovideo.lift is lift
    lifted = lift(image_unet(in_channels=3, **TINY_UNET), num_frames=T)
    twin = copy.deepcopy(lifted)
    randomize(twin.temporal)  # only the copy's temporal layers change
    randomize(lifted.image, seed=1)
    twin.image.load_state_dict(lifted.image.state_dict())
    x, t = torch.randn(B, T, 3, 8, 8), torch.tensor([5, 700])
    with torch.no_grad():
        assert (twin(x, t) - lifted(x, t)).abs().max() > 1e-4
        assert (lifted(x, t) - lifted.image(x, t)).abs().max() <= 1e-6


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    lifted = randomize(lift(image_unet(in_channels=3, **TINY_UNET), num_frames=T)).train()
    x, t = torch.randn(B, T, 3, 8, 8), torch.tensor([5, 700])
    grads = []
    for enabled in (False, True):
        lifted.zero_grad()
        lifted.set_gradient_checkpointing(enabled)
        lifted(x, t).square().sum().backward()
        grads.append([p.grad.clone() for p in lifted.temporal.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_the_readme_example_runs_and_trains(capsys):
    """The README's lift example (a diffusers UNet2DModel lifted and trained on the embedded digits) says what it
    did: the parameters it added and the loss of every step."""
    pytest.importorskip("diffusers", reason="diffusers is not installed (pip install '.[diffusers]')")
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- readme-example: lift -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert isinstance(namespace["video_unet"], LiftedNet) and namespace["video_unet"].lifted_blocks
    assert torch.isfinite(namespace["loss"]) and namespace["step"] == 2
    lines = capsys.readouterr().out.splitlines()
    image_count = sum(p.numel() for p in namespace["unet"].parameters())
    added = sum(p.numel() for p in namespace["video_unet"].temporal.parameters())
    assert lines[0] == f"lifted: {image_count:,} image parameters + {added:,} temporal ones" and added > 0
    assert [line.split(":")[0] for line in lines[1:]] == ["step 0", "step 1", "step 2"]
    assert lines[-1] == f"step 2: loss {namespace['loss'].item():.4f}"
    # training moved the temporal layers off their zero start
    assert any(p.abs().sum() > 0 for n, p in namespace["video_unet"].temporal.named_parameters() if "proj.weight" in n)
