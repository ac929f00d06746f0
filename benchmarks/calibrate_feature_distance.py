"""How much do CFD and CKD move for a known corruption, against the real-vs-real baseline?

On CIFAR-10 (an ImageFolder tree with train/ and test/): the feature net is the one every evaluation uses (found in
or trained into eval.cache_dir from the train split); the image sets come from the test split. For each set size n
and each of ``--pairs`` pairs of disjoint random test sets (A, B), it reports

- the baseline: CFD and CKD of A against B (two real samples: only sampling noise);
- Gaussian blur and additive Gaussian noise applied to B, each at a strength whose mean PSNR against the clean B is
  26 dB and 30 dB (the blur sigma and noise std are found by bisection on 1,000 test images), scored A vs corrupted B;

as mean ± std over the pairs, with the ratio to the baseline's mean and the distance above it in baseline stds.
``--sides 32 16`` also runs the sets at 16 px (as the 16x16 experiments: images resized to 16, corrupted and
PSNR-matched at 16 px) with the net an evaluation at 16 px uses; ``--resized`` adds the 32 px net on those images
resized to 32 (FID's way), the design this replaced.

    PYTHONPATH=src python benchmarks/calibrate_feature_distance.py --data .data/cifar10-jpeg --resized \\
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
from pseudovideo.pseudo_video.corruptions import build_corruption
from pseudovideo.data.images import build_dataset
from pseudovideo.data.decoding import resize_center_crop
from pseudovideo.data.datasets import spread_images
from pseudovideo.metrics.feature_net import FEATURE_DIM, FeatureNet, dead_features, resize_to
from pseudovideo.factory.feature_net import prepare_feature_net

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


def distances(real_features: Tensor, net: FeatureNet, other: Tensor, seed: int) -> tuple[float, float]:
    """(CFD, CKD) of real features (N, 448) against an image set, as the evaluation computes them."""
    fo = net.features(other)
    ckd, _, _ = M.feature_kernel_distance(real_features, fo, generator=torch.Generator().manual_seed(seed))
    return M.feature_frechet_distance(real_features, fo), ckd


def strengths(images: Tensor, psnrs: list[float], seed: int) -> list[tuple[str, str | None, float, str]]:
    """The conditions (name, corruption, strength, note) at one side: the baseline, then blur and noise at each PSNR."""
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed + 99))
    calibration = images[order[:CALIBRATION_IMAGES]]
    conditions: list[tuple[str, str | None, float, str]] = [("real (baseline)", None, 0.0, "")]
    for kind in ("blur", "noise"):
        for target in psnrs:
            strength, achieved = strength_for_psnr(calibration, kind, target)
            unit = "sigma" if kind == "blur" else "std"
            conditions.append((f"{kind} {target:g} dB", kind, strength, f"{images.shape[-1]} px {kind} {target:g} dB: "
                               f"{unit} {strength:.4f} (mean PSNR {achieved:.2f} dB on {CALIBRATION_IMAGES} test images)"))
    return conditions


def calibrate(net: FeatureNet, images: Tensor, conditions: list, sizes: list[int], pairs: int,
              seed: int) -> list[list[str]]:
    """Table rows of one net on the test images (N, C, side, side): every size, every condition."""
    rows = []
    for n in sizes:
        values: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in conditions}
        for p in range(pairs):
            order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed + p))
            a_features, b = net.features(images[order[:n]]), images[order[n:2 * n]]
            for name, kind, strength, _ in conditions:
                other = b if kind is None else corrupt(b, kind, strength, seed=seed + p)
                values[name].append(distances(a_features, net, other, seed + p))
        base = torch.tensor(values[conditions[0][0]], dtype=torch.float64)  # (pairs, 2)
        base_mean, base_std = base.mean(0), base.std(0)
        for name, *_ in conditions:
            v = torch.tensor(values[name], dtype=torch.float64)  # (pairs, 2): CFD, CKD
            mean, std = v.mean(0), v.std(0)
            above = (mean - base_mean) / base_std
            baseline = name == conditions[0][0]
            rows.append([f"{images.shape[-1]}", f"{net.resolution}", f"{n:,}", name,
                         f"{mean[0]:.2f} ± {std[0]:.2f}", "" if baseline else f"{mean[0] / base_mean[0]:.1f}x",
                         "" if baseline else f"{above[0]:.0f}",
                         f"{mean[1] * 1e3:.2f} ± {std[1] * 1e3:.2f}", "" if baseline else f"{above[1]:.0f}"])
    return rows


@torch.no_grad()
def test_accuracy(net: FeatureNet, images: Tensor, labels: Tensor) -> float:
    """Accuracy of the net's classifier on images (N, C, H, W) of any side (resized to the net's) with labels (N,)."""
    logits = torch.cat([net.model(resize_to(b, net.resolution)) for b in images.split(500)])
    return float((logits.argmax(1) == labels).float().mean())


def describe(net: FeatureNet, images: Tensor, labels: Tensor) -> str:
    """One line about a net: file, hashes, training, accuracies, dead features."""
    meta = net.metadata
    return (f"`{net.path.name}`: file sha256 `{net.file_sha256}`, weights sha256 `{net.sha256}`; {meta.get('steps')} "
            f"steps ({float(meta.get('epochs', 'nan')):.1f} epochs) on the train split at {net.resolution} px; "
            f"held-out accuracy {net.accuracy:.4f} (every 10th training image, never trained on), accuracy "
            f"{test_accuracy(net, images, labels):.4f} on the 10,000 test images at {images.shape[-1]} px; dead "
            f"features (std < 1e-6) {meta.get('dead_features')} of {FEATURE_DIM} on the held-out images, "
            f"{dead_features(net.features(images))} on the test images")


def main(argv: list[str] | None = None) -> int:
    """Prints the calibration table and writes it (markdown, with the command) to --out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=".data/cifar10-jpeg", help="CIFAR-10 ImageFolder tree with train/ and test/")
    parser.add_argument("--cache-dir", default="~/.cache/pseudovideo", help="eval.cache_dir holding the feature nets")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--psnr", type=float, nargs="+", default=[30.0, 26.0])
    parser.add_argument("--pairs", type=int, default=5, help="pairs of disjoint real sets per size")
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--resized", action="store_true",
                        help="also score the smaller sides with the 32 px net on images resized to 32 (FID's way)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args(argv)
    if max(args.sizes) * 2 > 10_000:
        parser.error("two disjoint sets of the largest size must fit in the 10,000 test images")
    start = time.perf_counter()
    test_set = build_dataset(f"folder:{args.data}", resolution=32, split="test")
    test = spread_images(test_set, len(test_set))  # (10000, 3, 32, 32) in [-1, 1]

    def net_for(side: int, net_side: int | None = None) -> FeatureNet:  # the net an evaluation at `side` uses
        overrides = [f"data.dataset=folder:{args.data}", f"data.resolution={side}", f"eval.cache_dir={args.cache_dir}"]
        return prepare_feature_net(build_config(overrides=overrides + (
            [f"eval.feature_net_resolution={net_side}"] if net_side else [])), channels=3)

    rows, notes, nets = [], [], []
    for side in args.sides:
        images = test if side == test.shape[-1] else resize_center_crop(test, side)
        conditions = strengths(images, args.psnr, args.seed)
        notes += [note for *_, note in conditions[1:]]
        candidates = [net_for(side)] + ([net_for(side, 32)] if args.resized and side != 32 else [])
        for net in candidates:
            nets.append(f"- at {side} px, net at {net.resolution} px: {describe(net, images, test_set.labels)}")
            rows += calibrate(net, images, conditions, args.sizes, args.pairs, args.seed)
    header = ["images (px)", "net (px)", "images per set", "B", "CFD (A, B)", "CFD / baseline",
              "CFD above baseline (baseline stds)", "CKD x1e3 (A, B)", "CKD above baseline (baseline stds)"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    command = ["python", "benchmarks/calibrate_feature_distance.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
    lines = [
        "# CFD and CKD against corruptions at matched PSNR, and the real-vs-real baseline (CIFAR-10)", "",
        f"Command (PYTHONPATH=src, 1 torch thread): `{' '.join(command)}`", "",
        "Feature nets (in eval.cache_dir, trained on first use from the train split, as every evaluation does):", *nets, "",
        f"A and B: {args.pairs} pairs of disjoint random sets of the test split per size (seeds {args.seed}.."
        f"{args.seed + args.pairs - 1}); A is real, B is real (the baseline: sampling noise only) or corrupted. Values "
        "are mean ± std over the pairs; \"above baseline\" is (mean - baseline mean) / baseline std at the same size, "
        f"side and net. CKD: unbiased MMD^2 with the kernel (x.y/{FEATURE_DIM} + 1)^3 on subsets of min(1000, n) = n "
        "images (the whole sets, as the evaluation does at these sizes), shown x1e3. Corruptions are applied to B "
        "and clamped to [-1, 1]; at 16 px the test images are resized to 16 first (as the 16x16 experiments' data) "
        "and corrupted there.",
        "", *table, "", "Strengths (found by bisection on the mean PSNR):", *[f"- {n}" for n in notes], "",
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
