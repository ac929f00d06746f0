"""Tokenizers that use their codebooks: the quantizer options (FSQ, low-dimensional cosine codes, dead-code
restarts that fire), their config keys, the rate under FSQ, and codebook usage in eval.json / experiment tables."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from pseudovideo.config import ConfigError, build_config
from pseudovideo.evaluation.evaluate import evaluate_run
from pseudovideo.factory.models import build_model
from pseudovideo.models.cvivit import CViViT
from pseudovideo.models.quantizer import CodeUsage, VectorQuantizer
from pseudovideo.models.vqvae import VQVAE
from pseudovideo.training.runs import train_run

from _tokenizer_helpers import smooth_video, train_steps


def _fingerprint(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[float], float, int, float]:
    """(losses of 5 training steps, sum |weights and buffers|, sum of eval indices, eval VQ loss)."""
    losses = train_steps(model, x, 5)
    weights = sum(float(v.double().abs().sum()) for v in model.state_dict().values() if v.is_floating_point())
    with torch.no_grad():
        out = model.eval()(x)
    return losses, weights, int(out.indices.sum()), float(out.aux_losses["vq"])


def test_default_quantizer_trains_as_before_the_new_options() -> None:
    # Measured on the code before quantizer / fsq_levels / lookup_dim existed (commit 077d9ce), 1 and 2 threads:
    # same seed and default quantizer -> same training losses, weights (EMA codebook included), codes and VQ loss.
    torch.manual_seed(0)
    losses, weights, indices, vq = _fingerprint(VQVAE(resolution=16, base_channels=16, codebook_size=32, codebook_dim=8),
                                                smooth_video(2, 2))
    assert losses == pytest.approx([0.3597866, 0.2446644, 0.1956944, 0.1558554, 0.1318754], rel=1e-5)
    assert weights == pytest.approx(3765.8394, rel=1e-5) and indices == 4276 and vq == pytest.approx(0.03822996, rel=1e-4)
    torch.manual_seed(0)
    cvivit = CViViT(resolution=16, dim=32, heads=2, dim_head=16, codebook_size=32, codebook_dim=8, temporal_patch_size=2)
    losses, weights, indices, vq = _fingerprint(cvivit, smooth_video(2, 5))
    assert losses == pytest.approx([0.4202683, 0.3860914, 0.3125582, 0.2955078, 0.2864112], rel=1e-5)
    assert weights == pytest.approx(8841.8512, rel=1e-5) and indices == 968 and vq == pytest.approx(0.005409558, rel=1e-4)


def test_default_config_builds_the_plain_quantizer() -> None:
    for family in ("vqvae", "cvivit"):
        model = build_model(build_config({"model": {"family": family}, "pseudo_video": {"num_frames": 3}}), 3)
        quantizer = model.quantizer
        assert quantizer.fsq_levels is None and quantizer.description == "VQ" and not hasattr(quantizer, "fsq")
    vqvae = build_model(build_config({"model": {"family": "vqvae"}}), 3)
    assert isinstance(vqvae.quantizer.project_in, torch.nn.Identity)  # no lookup projection unless asked


# -- FSQ -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("family", ["vqvae", "cvivit"])
def test_fsq_tokenizers_rate_codes_and_decoding(family: str, stages: int) -> None:
    torch.manual_seed(0)
    common = dict(resolution=16, codebook_size=240, quantizer="fsq", fsq_levels=[8, 6, 5], num_quantizers=stages)
    if family == "vqvae":
        model, frames, positions = VQVAE(base_channels=16, codebook_dim=8, **common), 1, 64  # 8x8 grid
    else:
        model, frames, positions = CViViT(dim=32, heads=2, dim_head=16, spatial_depth=1, temporal_depth=1, **common), 3, 3 * 16
    x = smooth_video(2, frames)
    losses = train_steps(model, x, 3)
    assert all(math.isfinite(v) for v in losses)
    rate = model.rate(frames)
    # K = 8 * 6 * 5 = 240 codes: log2(240) bits per code, Q codes per position
    assert rate.codebook_size == 240 and rate.codes_per_image == positions * stages
    assert rate.bits_per_image == pytest.approx(positions * stages * math.log2(240))
    assert "FSQ levels 8x6x5" in rate.description
    assert not any("codebook" in key for key in model.state_dict())  # no codebook: nothing to collapse or restart
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.aux_losses["vq"].item() == 0.0
        assert out.indices.dtype == torch.int64 and 0 <= out.indices.min() and out.indices.max() < 240
        assert out.indices.shape[-1] == stages if stages > 1 else out.indices.ndim == 4
        torch.testing.assert_close(model.decode_codes(out.indices), out.recon, rtol=0, atol=1e-6)


def test_fsq_code_index_is_the_grid_point() -> None:
    quantizer = VectorQuantizer(3, codebook_size=60, fsq_levels=[5, 4, 3]).eval()  # tokens already 3-d: no projection
    out = quantizer(torch.randn(2, 7, 3))
    levels = torch.tensor([5, 4, 3])
    # FSQ's code c_i is a grid value (digit_i - L_i // 2) / (L_i // 2), digit_i in [0, L_i); the index is the mixed-radix
    # number sum_i digit_i * prod_{j<i} L_j
    digits = torch.round(out.quantized * (levels // 2) + levels // 2)  # (2, 7, 3)
    assert ((digits >= 0) & (digits < levels)).all()
    assert torch.equal(out.indices, (digits * torch.tensor([1, 5, 20])).sum(-1).long())
    recovered = quantizer.indices_to_latents(out.indices)
    torch.testing.assert_close(recovered, out.quantized)
    codebook = quantizer.codebook  # (60, 3), the implicit grid
    assert codebook.shape == (60, 3) and len({tuple(row.tolist()) for row in codebook}) == 60
    torch.testing.assert_close(codebook[out.indices], out.quantized)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"quantizer": "fsq"}, r"model.vqvae.quantizer=fsq needs model.vqvae.fsq_levels"),
        ({"quantizer": "fsq", "fsq_levels": [8, 6, 5]}, r"model.vqvae.fsq_levels: levels \[8, 6, 5\] give 240 codes but "
                                                        r"codebook_size is 512"),
        ({"quantizer": "fsq", "fsq_levels": [2, 256], "codebook_size": 512}, r"integers >= 3"),
        ({"fsq_levels": [8, 8, 8]}, r"model.vqvae.fsq_levels=\[8, 8, 8\] is used only with model.vqvae.quantizer=fsq"),
        ({"quantizer": "fsq", "fsq_levels": [8, 8, 8], "kmeans_init": True}, r"model.vqvae.kmeans_init=True has no effect"),
        ({"quantizer": "fsq", "fsq_levels": [8, 8, 8], "dead_code_threshold": 1.0}, r"dead_code_threshold=1.0 has no effect"),
        ({"quantizer": "fsq", "fsq_levels": [8, 8, 8], "lookup_dim": 8}, r"model.vqvae.lookup_dim=8 has no effect"),
        ({"quantizer": "fsq", "fsq_levels": [8, 8, 8], "commitment_weight": 1.0}, r"commitment_weight=1.0 has no effect"),
        ({"lookup_dim": 0}, r"model.vqvae.lookup_dim: expected an integer >= 1"),
        ({"quantizer": "lfq"}, r"model.vqvae.quantizer"),
    ],
)
def test_quantizer_keys_are_validated(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({"model": {"vqvae": section}})


def test_cvivit_fsq_refuses_a_codebook_dim_it_would_ignore() -> None:
    with pytest.raises(ConfigError, match=r"model.cvivit.codebook_dim=16 has no effect with model.cvivit.quantizer=fsq"):
        build_config({"model": {"family": "cvivit", "cvivit": {"quantizer": "fsq", "fsq_levels": [8, 8, 8], "codebook_dim": 16}}})
    # the VQVAE's codebook_dim is its latent width, which FSQ projects from: allowed
    config = build_config({"model": {"vqvae": {"quantizer": "fsq", "fsq_levels": [8, 8, 8], "codebook_dim": 16}}})
    assert build_model(config, 3).quantizer.project_in.in_features == 16


# -- low-dimensional cosine codes, dead-code restarts --------------------------------------------------------------


def test_lookup_dim_gives_low_dimensional_unit_codes() -> None:
    config = build_config({"model": {"vqvae": {"codebook_dim": 32, "lookup_dim": 8, "cosine_codes": True}}})
    model = build_model(config, 3)
    quantizer = model.quantizer
    assert (quantizer.project_in.in_features, quantizer.project_in.out_features) == (32, 8)
    codebook = quantizer.codebook  # (K, 8)
    assert codebook.shape == (512, 8)
    torch.testing.assert_close(codebook.norm(dim=-1), torch.ones(512))
    out = model(torch.rand(2, 1, 3, 16, 16) * 2 - 1)
    assert out.recon.shape == (2, 1, 3, 16, 16)


def _one_cluster_tokens(n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.tensor([5.0, 5.0, 5.0, 5.0]) + 0.01 * torch.randn(1, n, 4, generator=g))  # (1, n, 4) near one point


def test_dead_code_restart_fires_at_the_first_unused_batch_with_threshold_one() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(4, codebook_size=8, dead_code_threshold=1.0).train()
    tokens = _one_cluster_tokens()
    before = quantizer.codebook.clone()
    out = quantizer(tokens)
    used = set(out.indices.unique().tolist())
    unused = [k for k in range(8) if k not in used]
    assert unused, "the test needs codes that the batch does not use"
    after = quantizer.codebook
    centre = torch.full((4,), 5.0)
    for k in unused:  # every unused code was restarted from the batch's tokens (all within 0.05 of the centre)
        assert (before[k] - centre).norm() > 3 and (after[k] - centre).norm() < 0.1
    # a threshold under the EMA count's first decay (1 x 0.99) does not restart them at the first batch
    torch.manual_seed(0)
    lazy = VectorQuantizer(4, codebook_size=8, dead_code_threshold=0.5).train()
    lazy(tokens)
    assert all((lazy.codebook[k] - centre).norm() > 3 for k in unused)


# -- usage ---------------------------------------------------------------------------------------------------------


def test_code_usage_over_batches_by_hand() -> None:
    usage = CodeUsage(codebook_size=4)
    usage.add(torch.tensor([[0, 0]]))
    usage.add(torch.tensor([1, 1]))
    stats = usage.stats()  # p = (1/2, 1/2, 0, 0): 2 of 4 codes, perplexity 2
    assert stats == {"codebook_usage": 0.5, "codebook_perplexity": pytest.approx(2.0)} and usage.codes_counted == 4
    residual = CodeUsage(codebook_size=4, num_quantizers=2)
    residual.add(torch.tensor([[[0, 0], [1, 0], [2, 0], [3, 0]]]))  # (1, 4, Q=2): stage 1 uses all 4, stage 2 one
    stats = residual.stats()
    assert stats["codebook_usage"] == pytest.approx((1.0 + 0.25) / 2)
    assert stats["codebook_perplexity"] == pytest.approx((4.0 + 1.0) / 2)


TINY_RUN = {
    "data": {"dataset": "digits", "resolution": 8, "max_images": 64},
    "train": {"steps": 2, "batch_size": 8, "checkpoint_every": 2, "warmup_steps": 1, "progress": False, "device": "cpu",
              "log_to": ["csv"]},
    "eval": {"num_images": 4, "batch_size": 4, "metrics": ["psnr"]},
    "pseudo_video": {"num_frames": 1},
    "model": {"family": "vqvae", "vqvae": {"base_channels": 8, "codebook_size": 512, "codebook_dim": 4}},
}


def test_eval_reports_codebook_usage_and_warns_when_low(tmp_path: Path) -> None:
    # 4 images x 4x4 codes = 64 codes can use at most 64 / 512 = 12.5 % of the codebook: under 25 %
    config = build_config({**TINY_RUN, "name": "low", "out_dir": str(tmp_path)})
    train_run(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_run(config.run_dir, device="cpu")
    codebook = result["codebook"]
    assert codebook["codes_counted"] == 64 and codebook["codebook_size"] == 512
    assert 0 < codebook["codebook_usage"] <= 64 / 512 and 1 <= codebook["codebook_perplexity"] <= 64
    assert json.loads((config.run_dir / "eval.json").read_text())["codebook"] == codebook
    low = [str(w.message) for w in caught if "codebook usage" in str(w.message)]
    assert len(low) == 1 and "< 25%" in low[0] and "\n" not in low[0]
    markdown = (config.run_dir / "eval.md").read_text()
    assert f"Codebook: usage {codebook['codebook_usage']:.1%} of K=512" in markdown and "Warning: codebook usage" in markdown


def test_experiment_tables_carry_codebook_columns(tmp_path: Path) -> None:
    import pseudovideo.experiments as E
    from test_experiments import _read_csv, fake_finished, pair_experiment

    data = pair_experiment()
    spec = E.parse_experiment(data)
    runs = E.expand_experiment(spec, "cpu-small", tmp_path / "out")
    for run in runs:
        fake_finished(run, {"psnr": 20.0, "ssim": 0.5, "swd_avg": 10.0})
        eval_path = run.config.run_dir / "eval.json"
        result = json.loads(eval_path.read_text())
        usage = 0.1 if run.variant == "vqvae" else 0.5
        result["codebook"] = {"codebook_usage": usage, "codebook_perplexity": 100 * usage}
        eval_path.write_text(json.dumps(result))
    result = E.write_results(spec, "cpu-small", runs, tmp_path / "tables")
    rows = _read_csv(result.csv_path)
    assert {(r["variant"], r["codebook_usage"], r["codebook_perplexity"]) for r in rows} == {
        ("vqvae", "0.1", "10.0"), ("cvivit", "0.5", "50.0")}
    assert "| codebook usage | perplexity |" in result.markdown
    assert "Warning: codebook usage under 25 % in 3 run(s): vqvae-s0, vqvae-s1, vqvae-s2." in result.markdown
