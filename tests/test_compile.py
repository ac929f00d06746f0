"""train.compile: when the engine compiles (auto = CUDA only), with which mode, and that every family's
compiled training step is one graph (no breaks) computing the eager loss and gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from pseudovideo.config import ConfigError, build_config
from pseudovideo.training import engine as training
from pseudovideo.training.precision import resolve_compile
from pseudovideo.training.tasks import build_task

from _train_script import FlipDataset, TinyTask, tiny_settings

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
COMMON = ["data.resolution=8", "pseudo_video.num_frames=3"]
UNET = ["model.unet.base_channels=8", "model.unet.channel_mult=[1,2]", "model.unet.num_res_blocks=1",
        "model.unet.attention_resolutions=[4]", "model.unet.num_heads=2"]
FAMILIES = {
    "vqvae": ["model.family=vqvae", "model.vqvae.base_channels=8", "model.vqvae.codebook_size=16",
              "model.vqvae.codebook_dim=4"],
    "cvivit": ["model.family=cvivit", "model.cvivit.dim=16", "model.cvivit.heads=2", "model.cvivit.dim_head=8",
               "model.cvivit.spatial_depth=1", "model.cvivit.temporal_depth=1", "model.cvivit.codebook_size=16",
               "model.cvivit.codebook_dim=4"],
    # finite scalar quantization (no codebook; the library's FSQ, residual FSQ for the C-ViViT)
    "vqvae_fsq": ["model.family=vqvae", "model.vqvae.base_channels=8", "model.vqvae.codebook_size=16",
                  "model.vqvae.codebook_dim=4", "model.vqvae.quantizer=fsq", "model.vqvae.fsq_levels=[4,4]"],
    "cvivit_rfsq": ["model.family=cvivit", "model.cvivit.dim=16", "model.cvivit.heads=2", "model.cvivit.dim_head=8",
                    "model.cvivit.spatial_depth=1", "model.cvivit.temporal_depth=1", "model.cvivit.codebook_size=16",
                    "model.cvivit.quantizer=fsq", "model.cvivit.fsq_levels=[4,4]", "model.cvivit.num_quantizers=2"],
    "unet": ["model.family=unet", *UNET],
    # both temporal mixers (hybrid: conv at full resolution, attention below), relative bias, causal mask
    "video_unet": ["model.family=video_unet", *UNET, "model.unet.frame_position=relative", "model.unet.causal_temporal=true",
                   "model.unet.temporal_mixer=hybrid", "model.unet.temporal_layers=per_level"],
}


def test_resolve_compile_auto_is_cuda_only_with_cuda_graphs_where_the_step_allows() -> None:
    assert resolve_compile("auto", "auto", CPU) is None
    assert resolve_compile(False, "auto", CUDA, cuda_graphs_ok=True) is None
    assert resolve_compile(True, "auto", CPU) == "default"
    assert resolve_compile("auto", "auto", CUDA, cuda_graphs_ok=True) == "reduce-overhead"
    assert resolve_compile("auto", "auto", CUDA, cuda_graphs_ok=False) == "default"  # e.g. the EMA codebooks
    assert resolve_compile("auto", "auto", CUDA, cuda_graphs_ok=True, world_size=2) == "default"
    assert resolve_compile("auto", "auto", CUDA, cuda_graphs_ok=True, gradient_checkpointing=True) == "default"
    assert resolve_compile(True, "max-autotune", CPU) == "max-autotune"
    with pytest.raises(ValueError, match="train.compile"):
        resolve_compile("sometimes", "auto", CPU)


def test_compile_config_values() -> None:
    assert build_config().train.compile == "auto" and build_config().train.compile_mode == "auto"
    assert build_config(overrides=["train.compile=true"]).train.compile is True
    assert build_config(overrides=["train.compile=false"]).train.compile is False
    with pytest.raises(ConfigError, match="train.compile: expected auto, true or false"):
        build_config(overrides=["train.compile=maybe"])
    with pytest.raises(ConfigError, match="train.compile_mode"):
        build_config(overrides=["train.compile_mode=fast"])
    assert build_task(build_config(overrides=COMMON + FAMILIES["unet"]), 3).cuda_graphs_ok
    assert not getattr(build_task(build_config(overrides=COMMON + FAMILIES["vqvae"]), 3), "cuda_graphs_ok", False)


@pytest.mark.parametrize("setting, expected", [("auto", None), (True, "default"), (False, None)])
def test_engine_compiles_as_resolved(setting: object, expected: str | None, tmp_path, monkeypatch) -> None:
    calls = []

    def fake_compile(model, **kwargs):
        calls.append(kwargs)
        return model

    monkeypatch.setattr(training.torch, "compile", fake_compile)
    training.train(TinyTask(), FlipDataset(), tiny_settings(steps=1, compile=setting), tmp_path / "run")
    assert calls == ([] if expected is None else [{"mode": expected, "dynamic": False}])


class GraphCounter:
    """A torch.compile backend that counts the graphs dynamo hands over (1 + graph breaks + recompiles) and
    runs each through AOT autograd without code generation (``aot_eager``: forward and backward graphs)."""

    def __init__(self) -> None:
        from torch._dynamo.backends.debugging import aot_eager

        self.graphs = 0
        self._aot_eager = aot_eager

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1
        return self._aot_eager(gm, example_inputs)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_compiled_training_step_is_one_graph_and_matches_eager(family: str) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    task = build_task(build_config(overrides=COMMON + FAMILIES[family]), 3)
    eager = task.model.train()
    twin = copy.deepcopy(eager)  # same weights and buffers (EMA codebooks update in the forward)
    counter = GraphCounter()
    compiled = torch.compile(twin, backend=counter, dynamic=False)
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    results = []
    for net, params in ((eager, eager), (compiled, twin)):
        losses = []
        for step in range(2):  # the second step sees the EMA-updated codebook and the trained output layer
            params.zero_grad()
            loss, _ = task.training_loss(net, images, step, torch.Generator().manual_seed(step))
            loss.backward()
            with torch.no_grad():
                for p in params.parameters():
                    if p.grad is not None:
                        p -= 0.1 * p.grad
            losses.append(loss.detach())
        results.append((torch.stack(losses), [p.grad for p in params.parameters()], params.state_dict()))
    assert counter.graphs == 1  # no graph break, and no recompile on the second step
    (loss_e, grads_e, state_e), (loss_c, grads_c, state_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-6)
    for g_e, g_c in zip(grads_e, grads_c):
        assert (g_e is None) == (g_c is None)
        if g_e is not None:
            torch.testing.assert_close(g_c, g_e, rtol=1e-3, atol=1e-5)
    for key in state_e:
        torch.testing.assert_close(state_c[key], state_e[key], rtol=1e-4, atol=1e-5, msg=key)
