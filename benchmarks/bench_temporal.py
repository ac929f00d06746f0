"""Training-step time and FLOPs of the video UNet for each temporal setting, against the image UNet.

Each setting is ``model.unet.temporal_layers`` x ``model.unet.temporal_mixer`` (see pseudovideo.models.unet). The
image UNet runs on the same pseudo videos (same B, T: its frames are denoised independently), so the difference
to it is the cost of the temporal layers. Rounds interleave the settings (every round times every setting once,
in the same order), and the ratios are computed within a round, then summarised as median [min, max] over rounds,
so a change of the machine's load between rounds cancels out.

Example (the README's table):
  python benchmarks/bench_temporal.py --threads 2 --repeats 3 --out benchmarks/results/temporal_cpu_32.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch

import bench_common as bc

bc.import_pseudovideo()

from pseudovideo.config import build_config  # noqa: E402
from pseudovideo.training.tasks import build_task  # noqa: E402

SETTINGS = (
    ("image UNet", None, None),
    ("every_block + attention (default)", "every_block", "attention"),
    ("every_block + hybrid", "every_block", "hybrid"),
    ("every_block + conv", "every_block", "conv"),
    ("per_level + attention", "per_level", "attention"),
    ("per_level + conv", "per_level", "conv"),
    ("low_res + attention", "low_res", "attention"),
    ("low_res + conv", "low_res", "conv"),
)


def overrides(layers: str | None, mixer: str | None, args: argparse.Namespace) -> list[str]:
    """Config overrides of one setting at the benchmark's sizes (the bench_models UNet widths)."""
    lowest = args.resolution // 4
    base = [
        f"model.family={'unet' if layers is None else 'video_unet'}", f"data.resolution={args.resolution}",
        f"pseudo_video.num_frames={args.frames}", "pseudo_video.construction=higher_order",
        f"model.unet.base_channels={args.base_channels}", "model.unet.channel_mult=[1,2,2]",
        "model.unet.num_res_blocks=2", f"model.unet.attention_resolutions=[{lowest}]", "model.unet.num_heads=4",
        "model.unet.frame_position=relative", "loss.last_frame_weight=1.0",
    ]
    if layers is not None:
        base += [f"model.unet.temporal_layers={layers}", f"model.unet.temporal_mixer={mixer}"]
    return base


def build_step(layers: str | None, mixer: str | None, args: argparse.Namespace) -> tuple[object, object, int, int]:
    """(step closure, model, parameters, temporal layers) of one setting."""
    torch.manual_seed(0)
    task = build_task(build_config(overrides=overrides(layers, mixer, args)), 3)
    model = task.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    images = torch.rand(args.batch, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        task.training_loss(model, images, 0, generator)[0].backward()
        optimizer.step()

    temporal = sum(1 for name, _ in model.named_modules() if name.endswith(".temporal"))
    return step, model, model.num_parameters(), temporal


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (>= 3 for a spread)")
    parser.add_argument("--iters", type=int, default=1, help="steps per setting per round")
    parser.add_argument("--only", default=None, help="comma-separated setting indices (0 = image UNet)")
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = [SETTINGS[int(i)] for i in args.only.split(",")] if args.only else list(SETTINGS)
    built = {name: build_step(layers, mixer, args) for name, layers, mixer in chosen}
    flops = {}
    for name, (step, *_rest) in built.items():
        step()  # warm-up
        flops[name] = bc.count_flops(step)
    times: dict[str, list[float]] = {name: [] for name in built}
    for round_index in range(args.repeats):
        for name, (step, *_rest) in built.items():
            t0 = time.perf_counter()
            for _ in range(args.iters):
                step()
            times[name].append((time.perf_counter() - t0) / args.iters)
        print(f"[round {round_index + 1}] " + ", ".join(f"{n}: {times[n][-1]:.2f}s" for n in built), file=sys.stderr)
    reference = chosen[0][0]
    default = "every_block + attention (default)"
    rows = []
    for name, (_, _, params, temporal) in built.items():
        row = {
            "setting": name, "temporal_layers": temporal, "params": params, "gflop_per_step": flops[name] / 1e9,
            "step_s": spread(times[name]),
            "ratio_to_first": spread([a / b for a, b in zip(times[name], times[reference])]),
        }
        if default in times:
            row["ratio_to_default"] = spread([a / b for a, b in zip(times[name], times[default])])
        rows.append(row)
    header = "| setting | temporal layers | params | GFLOP/step | step s, median [min, max] | vs " + reference + " | vs default |"
    print(header + "\n|" + "---|" * 7)
    for r in rows:
        fmt = lambda d: f"{d['median']:.2f} [{d['min']:.2f}, {d['max']:.2f}]"  # noqa: E731
        print(f"| {r['setting']} | {r['temporal_layers']} | {r['params'] / 1e6:.2f}M | {r['gflop_per_step']:.1f} | "
              f"{fmt(r['step_s'])} | {fmt(r['ratio_to_first'])} | {fmt(r['ratio_to_default']) if 'ratio_to_default' in r else 'n/a'} |")
    if args.out:
        meta = {"command": " ".join(["python", "benchmarks/bench_temporal.py", *(argv if argv is not None else sys.argv[1:])]),
                "environment": bc.environment(torch.device("cpu")), "args": vars(args)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
