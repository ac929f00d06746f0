"""bench_models' UNet reference rows: one with matched parameters, one with the fastest attention width."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_models as bm  # noqa: E402


def test_reference_rows_match_parameters_and_pick_the_fastest(monkeypatch) -> None:
    def fake_builder(s, opts, heads=4, dim_head=8):
        width = heads * dim_head
        module = torch.nn.Linear(width, 100, bias=False)  # 100 * width parameters

        def step() -> None:
            pass

        step.seconds = 1.0 / width  # the widest attention is the fastest here, so "fastest" differs from "matched"

        return bm.Impl(model="unet", impl="fake", module=module, train_step=step, eager_train_step=step, sample=None,
                       sample_kind="", frames=1, loss="", optimizer=torch.optim.SGD(module.parameters(), lr=0.1))

    monkeypatch.setitem(bm.REFERENCES, "unet", fake_builder)
    # a fixed cost per setting instead of a wall-clock timing, which a loaded machine can reorder
    monkeypatch.setattr(bm.bc, "time_calls", lambda fn, device, calls: fn.seconds)
    opts = bm.Options(device=torch.device("cpu"), dtype="fp32", compile=False, channels_last=False, peak_flops=1.0)
    rows = bm.build_references("unet", bm.PRESETS["quick"], opts, our_params=100 * 32)  # width 32 matches
    matched, fastest = rows
    assert matched.impl.startswith("fake (matched: ") and matched.module.in_features == 32
    assert "params +0.0 % vs ours" in matched.notes[0]
    assert fastest.impl == "fake (fastest: 8 x 64)"
    rows = bm.build_references("unet", bm.PRESETS["quick"], opts, our_params=100 * 1000)
    assert "no choice within 5 %" in rows[0].notes[0]


def test_cpu32_preset_is_the_cpu_sizes_at_32x32() -> None:
    cpu, cpu32 = bm.PRESETS["cpu"], bm.PRESETS["cpu32"]
    assert (cpu32.resolution, cpu32.frames, cpu32.batch) == (32, 4, 8)
    assert cpu32.unet == cpu.unet and cpu32.cvivit == cpu.cvivit
