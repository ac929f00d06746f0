"""Throughput of the pseudo-video builder alone: clean images/s and frames/s per corruption and construction.

The builder runs inside every training step (``task.training_loss`` turns clean images into pseudo videos), so
its cost adds to the step; ``bench_models.py`` reports its share of a real step, this script isolates it so a
slow operator can be spotted and fixed. Each case times ``builder(images, generator=...)`` on a fixed batch:
warm-up calls, then ``--repeats`` rounds of ``--iters`` calls with device synchronisation; the median is reported.

Examples:
  python benchmarks/bench_pseudo_video.py --threads 1
  python benchmarks/bench_pseudo_video.py --device cuda --batch 256 --resolution 32 --frames 8 --out $OUT/pv.json
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch

import bench_common as bc

bc.import_pseudovideo()

from pseudovideo.pseudo_video.builder import build_pseudo_video_builder  # noqa: E402

# name -> corruption specs (the levels of the shipped configs: blur sigma 2 px, noise std 0.2); downsample
# levels are made whole octaves per T by ``specs_for`` (first_order refuses levels whose blocks do not nest)
CORRUPTION_SETS: dict[str, list[dict[str, Any]]] = {
    "blur": [{"name": "blur", "schedule": "linear", "max_level": 2.0}],
    "noise": [{"name": "noise", "schedule": "linear", "max_level": 0.2}],
    "downsample": [{"name": "downsample", "schedule": "linear", "max_level": 2.0}],
    "mask": [{"name": "mask", "schedule": "linear", "max_level": 0.8, "patch_size": 4}],
    "blur+noise": [
        {"name": "blur", "schedule": "linear", "max_level": 2.0},
        {"name": "noise", "schedule": "linear", "max_level": 0.2},
    ],
}
CONSTRUCTIONS = ("higher_order", "first_order")


def specs_for(name: str, frames: int) -> list[dict[str, Any]]:
    """The corruption specs of set ``name`` for T = ``frames``: downsample at ceil(2 (1 - t / (T - 1))) octaves."""
    specs = CORRUPTION_SETS[name]
    if name != "downsample" or frames < 2:
        return specs
    levels = [float(math.ceil(2.0 * (1 - t / (frames - 1)))) for t in range(frames - 1)]  # frames 0..T-2
    return [{"name": "downsample", "schedule": "explicit", "levels": levels}]


def bench_case(
    specs: list[dict[str, Any]], construction: str, images: torch.Tensor, frames: int, warmup: int, iters: int,
    repeats: int,
) -> float:
    """Median seconds per builder call on ``images`` (B, C, H, W)."""
    builder = build_pseudo_video_builder(specs, num_frames=frames, construction=construction)
    generator = torch.Generator(device=images.device).manual_seed(0)

    def call() -> torch.Tensor:
        return builder(images, generator=generator)  # (B, T, C, H, W)

    for _ in range(warmup):
        call()
    return bc.median([bc.time_calls(call, images.device, iters) for _ in range(repeats)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="dtype of the image batch")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--frames", type=int, default=5, help="pseudo-video length T")
    parser.add_argument("--sets", default=",".join(CORRUPTION_SETS), help=f"subset of {','.join(CORRUPTION_SETS)}")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)

    device = bc.resolve_device(args.device)
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = [name for name in sets if name not in CORRUPTION_SETS]
    if unknown:
        raise SystemExit(f"--sets: unknown {unknown}; expected a subset of {list(CORRUPTION_SETS)}")
    for key in ("batch", "resolution", "channels", "frames", "iters", "repeats"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    images = (torch.rand(args.batch, args.channels, args.resolution, args.resolution,
                         generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device, dtype)  # (B, C, H, W)

    rows = []
    for name in sets:
        for construction in CONSTRUCTIONS:
            seconds = bench_case(specs_for(name, args.frames), construction, images, args.frames, args.warmup, args.iters,
                                 args.repeats)
            rows.append({
                "corruptions": name, "construction": construction, "batch": args.batch, "frames": args.frames,
                "ms_per_call": 1000 * seconds, "images_per_s": args.batch / seconds,
                "frames_per_s": args.batch * args.frames / seconds,
            })
            print(f"[pv] {name:>10} {construction:>12}: {1000 * seconds:8.3f} ms", file=sys.stderr)

    print(f"\nPseudo-video builder, B={args.batch}, T={args.frames}, {args.channels}x{args.resolution}x"
          f"{args.resolution}, {args.dtype}, {device}\n")
    print("| corruptions | construction | ms / call | clean images/s | frames/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['corruptions']} | {r['construction']} | {r['ms_per_call']:.3f} | {r['images_per_s']:,.0f} | "
              f"{r['frames_per_s']:,.0f} |")
    if args.out:
        import json
        from pathlib import Path

        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"command": " ".join(["python", "benchmarks/bench_pseudo_video.py", *(sys.argv[1:] if argv is None else argv)]),
                "environment": bc.environment(device), "dtype": args.dtype}
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
