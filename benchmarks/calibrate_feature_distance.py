"""How much do CFD and CKD move for a known corruption, against the real-vs-real baseline?

On CIFAR-10 (an ImageFolder tree with train/ and test/): the feature net is the one every evaluation uses (found in
or trained into eval.cache_dir from the train split); the image sets come from the test split. For each set size n
and each of ``--pairs`` pairs of disjoint random test sets (A, B), it reports

- the baseline: CFD and CKD of A against B (two real samples: only sampling noise);
- Gaussian blur and additive Gaussian noise applied to B, each at a strength whose mean PSNR against the clean B is
  26 dB and 30 dB (the blur sigma and noise std are found by bisection on 1,000 test images), scored A vs corrupted B;

as mean ± std over the pairs, with the ratio to the baseline's mean. ``--sides 32 16`` also runs the sets at 16 px
(as the 16x16 experiments: images resized to 16, corrupted and PSNR-matched at 16 px, resized to the net's 32 px).

    PYTHONPATH=src python benchmarks/calibrate_feature_distance.py --data .data/cifar10-jpeg \\
        --out results/feature_distance_calibration.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from pseudovideo import metrics as M
from pseudovideo.config import build_config
from pseudovideo.corruptions import build_corruption
from pseudovideo.data import build_dataset, resize_center_crop, spread_images
from pseudovideo.feature_net import FeatureNet, dead_features
from pseudovideo.feature_net_cache import prepare_feature_net

CALIBRATION_IMAGES = 1000


def corrupt(images: Tensor, kind: str, strength: float, seed: int = 0) -> Tensor:
    """Blur (sigma in px) or additive Gaussian noise (std in [-1, 1] units) of images (N, C, H, W), clamped to [-1, 1]."""
    level = torch.full((images.shape[0],), strength)
    out = build_corruption(kind)(images, level, torch.Generator().manual_seed(seed))
    return out.clamp(-1, 1)


def strength_for_psnr(images: Tensor, kind: str, target_db: float) -> tuple[float, float]:
    """(strength, achieved mean PSNR): bisection on the blur sigma or noise std so that the mean PSNR of the
    corrupted images against the clean ones is ``target_db`` (PSNR falls as the strength grows)."""
    low, high = 1e-4, 8.0 if kind == "blur" else 2.0
    for _ in range(40):
        mid = (low + high) / 2
        achieved = float(M.psnr(corrupt(images, kind, mid), images).mean())
        low, high = (mid, high) if achieved > target_db else (low, mid)
    mid = (low + high) / 2
    return mid, float(M.psnr(corrupt(images, kind, mid), images).mean())


def distances(net: FeatureNet, real: Tensor, other: Tensor, seed: int) -> tuple[float, float]:
    """(CFD, CKD) of two image sets, as the evaluation computes them."""
    fr, fo = net.features(real), net.features(other)
    ckd, _, _ = M.feature_kernel_distance(fr, fo, generator=torch.Generator().manual_seed(seed))
    return M.feature_frechet_distance(fr, fo), ckd


def calibrate(net: FeatureNet, test: Tensor, sizes: list[int], pairs: int, psnrs: list[float], side: int,
              seed: int) -> tuple[list[list[str]], list[str]]:
    """Table rows and notes (strengths used) for one image side."""
    images = test if side == test.shape[-1] else resize_center_crop(test, side)
    calibration = images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed + 99))[:CALIBRATION_IMAGES]]
    conditions = [("real vs real (baseline)", None, 0.0, 0.0)]
    notes = []
    for kind in ("blur", "noise"):
        for target in psnrs:
            strength, achieved = strength_for_psnr(calibration, kind, target)
            unit = "sigma" if kind == "blur" else "std"
            conditions.append((f"{kind} {target:g} dB", kind, strength, achieved))
            notes.append(f"{side} px {kind} {target:g} dB: {unit} {strength:.4f} (mean PSNR {achieved:.2f} dB on "
                         f"{CALIBRATION_IMAGES} test images)")
    rows = []
    for n in sizes:
        values: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in conditions}
        for p in range(pairs):
            order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed + p))
            a, b = images[order[:n]], images[order[n:2 * n]]
            for name, kind, strength, _ in conditions:
                other = b if kind is None else corrupt(b, kind, strength, seed=seed + p)
                values[name].append(distances(net, a, other, seed + p))
        base = torch.tensor(values[conditions[0][0]], dtype=torch.float64).mean(0)
        for name, *_ in conditions:
            v = torch.tensor(values[name], dtype=torch.float64)  # (pairs, 2)
            mean, std = v.mean(0), v.std(0) if pairs > 1 else torch.zeros(2)
            rows.append([f"{side}", f"{n:,}", name,
                         f"{mean[0]:.3f} ± {std[0]:.3f}", f"{mean[0] / base[0]:.1f}x",
                         f"{mean[1] * 1e3:.3f} ± {std[1] * 1e3:.3f}", f"{mean[1] / base[1]:.1f}x" if base[1] > 0 else "-"])
    return rows, notes


@torch.no_grad()
def test_accuracy(net: FeatureNet, dataset) -> float:
    """Accuracy of the net's classifier on a whole labelled split."""
    images = spread_images(dataset, len(dataset))
    logits = torch.cat([net.model.head(net.features(b)) for b in images.split(500)])
    return float((logits.argmax(1) == dataset.labels).float().mean())


def main(argv: list[str] | None = None) -> int:
    """Prints the calibration table and writes it (markdown, with the command) to --out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=".data/cifar10-jpeg", help="CIFAR-10 ImageFolder tree with train/ and test/")
    parser.add_argument("--cache-dir", default="~/.cache/pseudovideo", help="eval.cache_dir holding the feature net")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--psnr", type=float, nargs="+", default=[30.0, 26.0])
    parser.add_argument("--pairs", type=int, default=5, help="pairs of disjoint real sets per size")
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args(argv)
    if max(args.sizes) * 2 > 10_000:
        parser.error("two disjoint sets of the largest size must fit in the 10,000 test images")
    start = time.perf_counter()
    config = build_config(overrides=[f"data.dataset=folder:{args.data}", "data.resolution=32",
                                     f"eval.cache_dir={args.cache_dir}"])
    net = prepare_feature_net(config, channels=3)
    test_set = build_dataset(f"folder:{args.data}", resolution=32, split="test")
    test = spread_images(test_set, len(test_set))  # (10000, 3, 32, 32) in [-1, 1]
    accuracy = test_accuracy(net, test_set)
    dead_on_test = dead_features(net.features(test))
    rows, notes = [], []
    for side in args.sides:
        side_rows, side_notes = calibrate(net, test, args.sizes, args.pairs, args.psnr, side, args.seed)
        rows += side_rows
        notes += side_notes
    header = ["side (px)", "images per set", "B is", "CFD (A, B)", "CFD / baseline", "CKD x1e3 (A, B)", "CKD / baseline"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    meta = net.metadata
    lines = [
        "# CFD and CKD against corruptions at matched PSNR, and the real-vs-real baseline (CIFAR-10)", "",
        f"Command: `{' '.join(['python', 'benchmarks/calibrate_feature_distance.py', *map(shlex.quote, sys.argv[1:] if argv is None else argv)])}`",
        "",
        f"Feature net: `{net.path.name}` (file sha256 `{net.file_sha256}`, weights sha256 `{net.sha256}`), "
        f"{meta.get('steps')} steps ({float(meta.get('epochs', 'nan')):.1f} epochs) on the train split at {net.resolution} px; "
        f"held-out accuracy {net.accuracy:.4f} (every 10th training image, never trained on), accuracy on the "
        f"10,000 test images {accuracy:.4f}; dead features (std < 1e-6): {meta.get('dead_features')} of 256 on the "
        f"held-out images, {dead_on_test} of 256 on the test images.",
        "",
        f"A and B: {args.pairs} pairs of disjoint random sets of the test split per size (seeds {args.seed}..{args.seed + args.pairs - 1}); "
        "values are mean ± std over the pairs, the ratio is to the baseline's mean at the same size and side. "
        "CKD: unbiased MMD^2 with the kernel (x.y/256 + 1)^3 on subsets of min(1000, n) = n images, i.e. on the "
        "whole sets (as the evaluation does at these sizes), shown x1e3. Corruptions are applied to B and clamped to [-1, 1]; at 16 px the images are "
        "resized to 16 first (as the 16x16 experiments' data), corrupted there, and resized to 32 by the net.",
        "", *table, "", "Strengths:", *[f"- {n}" for n in notes], "",
        f"Run time: {time.perf_counter() - start:.0f} s.", "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
