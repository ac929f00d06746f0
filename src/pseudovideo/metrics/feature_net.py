"""The small residual classifier whose pooled features the ``cfd`` and ``ckd`` metrics compare.

SWD standardises each image set by its own patch statistics, so it cannot see a global brightness or contrast
change (SWD(x, 0.5 x) = 0). CFD (classifier Fréchet distance) and CKD (classifier kernel distance, unbiased as
KID) need no downloaded weights and do see them: a small residual CNN is trained reproducibly (seeded, on CPU)
on the labelled training split of the run's dataset with a classifier recipe (random crops, flips where the
dataset allows them, SGD with Nesterov momentum, label smoothing, a one-cycle learning rate), and the distances
between its pooled, standardised stage features of real and evaluated images are reported.

They are **not FID/KID**: the network is small and trained on the dataset itself, so values are only comparable
between evaluations that use the same feature net (same weights hash, recorded in every eval.json). The net is
trained at one side (``resolution``: by default the evaluated images' side, at most 32 px) and images of another
side are resized to it before the features are taken. For 1-D signals (N, C, L) the same net is built with 1-D
convolutions, pooling and batch norm (``spatial_dims=1``, recorded in its file), trained with random shifts (crops
of the reflect-padded signal) and no flips; signals of another length are resampled to its length.

This module holds the network, its training and its file format; ``pseudovideo.factory.feature_net`` finds or
trains the net of a run config (cache key, file lock, the label check).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = [
    "FEATURE_NET_VERSION",
    "RECIPE",
    "FeatureClassifier",
    "FeatureNet",
    "TrainingRecipe",
    "augment",
    "classifier_features",
    "dead_features",
    "file_sha256",
    "fit_feature_statistics",
    "load_feature_net",
    "save_feature_net",
    "to_unit",
    "train_feature_net",
    "weights_sha256",
]

FEATURE_NET_VERSION = "cfd-resnet-v2"  # bump when the architecture or training recipe changes
WIDTHS = (32, 64, 128, 256)  # stem, then three stages at 1/2, 1/4 and 1/8 of the input side
FEATURE_DIM = sum(WIDTHS[1:])  # 448: the pooled outputs of the three stages
HELD_OUT_EVERY = 10  # every 10th training image is held out to measure the net's accuracy
MIN_RESOLUTION = 8  # three 2x poolings leave at least 1x1
DEAD_STD = 1e-6  # a feature whose standard deviation over real images is below this is dead


_LAYERS = {2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),  # images
           1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d)}  # signals


def _conv_bn_relu(cin: int, cout: int, spatial_dims: int = 2) -> list[nn.Module]:
    conv, norm = _LAYERS[spatial_dims][:2]
    return [conv(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU()]


class ResidualBlock(nn.Module):
    """x + (conv-BN-ReLU twice)(x): (N, C, H, W) -> (N, C, H, W) (signals (N, C, L) with ``spatial_dims=1``)."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(channels, channels, spatial_dims),
                                  *_conv_bn_relu(channels, channels, spatial_dims))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        return x + self.body(x)


class FeatureClassifier(nn.Module):
    """A ResNet-style CNN: conv stem, three stages (2x max-pool, conv-BN-ReLU, residual block), global average pool.

    Widths 32 / 64 / 128 / 256. ``forward``: images (N, C, H, W) in [-1, 1] -> (N, classes) logits, a linear head
    on the last stage's global average (batch-normalised without affine parameters).

    ``features``: images -> (N, 448), the global averages of the three stages (64 + 128 + 256), each standardised
    by its mean and standard deviation over the held-out training images (``feature_mean`` / ``feature_std``, set
    by ``fit_feature_statistics`` after training) and scaled to a root-mean-square of 1 per image and stage. Why
    all stages: a classifier's last stage is nearly blind to additive noise (1.1x the real-vs-real CFD at 30 dB on
    CIFAR-10), its first stage is not. Why per-image scaling: pooled ReLU features are heavy-tailed (a few images
    reach 20x the median squared norm), and the cubic kernel of CKD would let those few images decide it (the
    real-vs-real CKD std was 2-35x its mean on CIFAR-10); scaled, each stage's features lie on a sphere and
    (x.y/448 + 1)^3 is bounded. Batch norm keeps every channel's pre-activation spread over the batch and every stage
    ends in a residual sum, so features do not die (``dead_features`` counts them; the file records the count).
    """

    def __init__(self, channels: int, num_classes: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims  # 1: the same net on signals (N, C, L)
        _, _, max_pool, average_pool = _LAYERS[spatial_dims]
        layers: list[nn.Module] = _conv_bn_relu(channels, WIDTHS[0], spatial_dims)
        stage_ends = []
        for cin, cout in zip(WIDTHS[:-1], WIDTHS[1:]):
            layers += [max_pool(2), *_conv_bn_relu(cin, cout, spatial_dims), ResidualBlock(cout, spatial_dims)]
            stage_ends.append(len(layers))
        self.stage_ends = tuple(stage_ends)  # body[:end] is the net up to the end of each stage
        head_norm = nn.BatchNorm1d(WIDTHS[-1], affine=False)
        self.body = nn.Sequential(*layers, average_pool(1), nn.Flatten(), head_norm)  # (N, 256)
        self.head = nn.Linear(WIDTHS[-1], num_classes)
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("feature_std", torch.ones(FEATURE_DIM))

    @property
    def in_channels(self) -> int:
        """Image channels the net takes (1 or 3)."""
        return self.body[0].in_channels

    def pooled_stages(self, images: Tensor) -> Tensor:
        """Global averages of the three stages' outputs, concatenated: images (N, C, H, W) -> (N, 448), unscaled."""
        pooled, x, start = [], images, 0
        for end in self.stage_ends:
            x = self.body[start:end](x)
            pooled.append(x.mean(dim=tuple(range(2, x.ndim))))  # over H W (or L)
            start = end
        return torch.cat(pooled, dim=1)

    def features(self, images: Tensor) -> Tensor:
        """The features the distances compare: images (N, C, H, W) in [-1, 1] -> (N, 448) (see the class doc)."""
        z = (self.pooled_stages(images) - self.feature_mean) / self.feature_std
        parts = [p * p.shape[1] ** 0.5 / p.norm(dim=1, keepdim=True).clamp_min(1e-12) for p in z.split(WIDTHS[1:], 1)]
        return torch.cat(parts, dim=1)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (N, num_classes) of images (N, C, H, W) in [-1, 1]."""
        return self.head(self.body(images))


@torch.no_grad()
def fit_feature_statistics(model: FeatureClassifier, images: Tensor, batch_size: int = 500) -> None:
    """Sets ``model.feature_mean`` / ``feature_std`` to the per-feature mean and standard deviation (at least
    1e-6) of the pooled stage outputs over ``images`` (N, C, H, W), uint8 or float in [-1, 1], N >= 2."""
    pooled = torch.cat([model.pooled_stages(to_unit(batch)) for batch in images.split(batch_size)]).double()
    model.feature_mean.copy_(pooled.mean(0))
    model.feature_std.copy_(pooled.std(0).clamp_min(1e-6))


# --------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRecipe:
    """The classifier recipe (fixed per FEATURE_NET_VERSION): SGD + Nesterov, one-cycle lr, label smoothing."""

    batch_size: int = 128
    peak_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on conv / linear weights only (not on batch-norm parameters or biases)
    warmup_fraction: float = 0.2  # linear warm-up to peak_lr over this share of the steps, then linear to 0
    label_smoothing: float = 0.1
    crop_padding_fraction: float = 0.125  # random crops after reflect-padding 1/8 of the side (4 px at 32)

    def describe(self, flips: bool) -> str:
        """One line for eval.json."""
        return (f"SGD Nesterov {self.momentum}, batch {self.batch_size}, one-cycle lr (peak {self.peak_lr}, "
                f"{self.warmup_fraction:.0%} warm-up, linear to 0), weight decay {self.weight_decay}, label smoothing "
                f"{self.label_smoothing}, random crops (reflect padding 1/8 of the side)"
                + (", horizontal flips" if flips else ", no flips"))


RECIPE = TrainingRecipe()


def to_unit(batch: Tensor) -> Tensor:
    """uint8 [0, 255] or float [-1, 1] images -> float32 in [-1, 1]."""
    return batch.float().div(127.5).sub(1.0) if batch.dtype == torch.uint8 else batch.float()


def augment(images: Tensor, generator: torch.Generator, *, flips: bool, padding: int) -> Tensor:
    """Random crops of the reflect-padded images and (if ``flips``) random left-right flips, drawn from ``generator``.

    images: (B, C, H, W) float -> (B, C, H, W): each image shifted by up to ``padding`` pixels per axis. Signals
    (B, C, L) are shifted along their length (``flips`` must be False: a reversed signal runs backwards in time).
    """
    if images.ndim == 3:
        return _shift_signals(images, generator, padding)
    b, c, h, w = images.shape
    if padding > 0:
        padded = F.pad(images, (padding,) * 4, mode="reflect")
        dy, dx = torch.randint(0, 2 * padding + 1, (2, b, 1), generator=generator)
        rows = (dy + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
        images = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flips:
        flip = torch.rand(b, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images


def _shift_signals(signals: Tensor, generator: torch.Generator, padding: int) -> Tensor:
    """Random crops of the reflect-padded signals (B, C, L): each shifted by up to ``padding`` samples."""
    if padding <= 0:
        return signals
    b, c, length = signals.shape
    padded = F.pad(signals, (padding, padding), mode="reflect")
    shift = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    positions = (shift + torch.arange(length))[:, None, :].expand(b, c, length)  # (B, C, L)
    return torch.gather(padded, 2, positions)


def _one_cycle(step: int, steps: int, warmup_fraction: float) -> float:
    warmup = max(1, round(warmup_fraction * steps))
    return (step + 1) / warmup if step < warmup else max(0.0, (steps - step) / max(1, steps - warmup))


def _optimizer(model: nn.Module, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]  # conv and linear weights
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]  # biases, batch-norm scales and shifts
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=recipe.peak_lr, momentum=recipe.momentum, nesterov=True)


def held_out_mask(n: int) -> Tensor:
    """(n,) bool: True for every ``HELD_OUT_EVERY``-th image, held out of training to measure the accuracy."""
    return torch.arange(n) % HELD_OUT_EVERY == 0


def train_feature_net(
    images: Tensor, labels: Tensor, num_classes: int, *, seed: int, steps: int, flips: bool,
    recipe: TrainingRecipe = RECIPE, progress: bool = False,
) -> tuple[FeatureClassifier, float]:
    """Trains a ``FeatureClassifier`` on CPU; returns it (eval mode, feature statistics fitted on the held-out
    images) and its accuracy on the held-out images.

    images: (N, C, H, W), uint8 in [0, 255] or float in [-1, 1]; labels: (N,) in [0, num_classes). Every
    ``HELD_OUT_EVERY``-th image is held out for the accuracy; the rest are visited in seeded random order, one
    permutation per epoch, with ``augment``. Initialisation, order and augmentation come from ``seed`` alone (the
    global RNG is left untouched), so the same inputs, seed and thread count give bit-identical weights.
    ``progress`` shows a tqdm bar with the ETA.
    """
    if images.ndim not in (3, 4) or labels.shape != (images.shape[0],):
        raise ValueError(f"expected images (N, C, H, W) or signals (N, C, L) and labels (N,), got {tuple(images.shape)} "
                         f"and {tuple(labels.shape)}")
    if min(images.shape[2:]) < MIN_RESOLUTION:
        raise ValueError(f"the feature net needs images of at least {MIN_RESOLUTION} px, got {tuple(images.shape[2:])}")
    held_out = held_out_mask(images.shape[0])
    train_x, train_y = images[~held_out].cpu(), labels[~held_out].long().cpu()
    if train_x.shape[0] < 2 or train_y.unique().numel() < 2:
        raise ValueError(f"a classifier needs at least 2 training images of 2 classes, got {train_x.shape[0]} images")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureClassifier(images.shape[1], num_classes, spatial_dims=images.ndim - 2)
    model = model.to(memory_format=torch.channels_last)  # ~15 % faster convolutions on CPU, same determinism
    generator = torch.Generator().manual_seed(seed)
    optimizer = _optimizer(model, recipe)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _one_cycle(s, steps, recipe.warmup_fraction))
    padding = max(1, round(recipe.crop_padding_fraction * min(images.shape[2:])))
    batch_size = min(recipe.batch_size, train_x.shape[0])
    order = torch.empty(0, dtype=torch.long)
    model.train()
    for _ in tqdm(range(steps), desc="cfd feature net", unit="step", disable=not progress, dynamic_ncols=True):
        if order.numel() < batch_size:  # a new epoch: the rest of the last permutation is dropped
            order = torch.randperm(train_x.shape[0], generator=generator)
        batch, order = order[:batch_size], order[batch_size:]
        x = augment(to_unit(train_x[batch]), generator, flips=flips, padding=padding)
        x = x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.contiguous_format)
        loss = F.cross_entropy(model(x), train_y[batch], label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    held_x, held_y = images[held_out], labels[held_out].long()
    fit_feature_statistics(model, held_x if held_x.shape[0] >= 2 else train_x)  # images it never trained on
    return model, _accuracy(model, held_x, held_y)


@torch.no_grad()
def _accuracy(model: FeatureClassifier, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    batches = zip(images.split(batch_size), labels.split(batch_size))
    correct = sum(int((model(to_unit(x)).argmax(1) == y).sum()) for x, y in batches)
    return correct / max(1, labels.shape[0])


def epochs_of(steps: int, num_images: int, batch_size: int = RECIPE.batch_size) -> float:
    """How many passes over ``num_images`` training images ``steps`` batches make."""
    return steps * min(batch_size, num_images) / max(1, num_images)


# --------------------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------------------


def resize_to(images: Tensor, side: int) -> Tensor:
    """(N, C, H, W) -> (N, C, side, side), bilinear with antialiasing; unchanged when already that size. Signals
    (N, C, L) -> (N, C, side), linear with antialiasing (bilinear on one row)."""
    if images.ndim == 3:
        if images.shape[-1] == side:
            return images
        return F.interpolate(images[:, :, None], size=(1, side), mode="bilinear", antialias=True)[:, :, 0]
    if images.shape[-2:] == (side, side):
        return images
    return TF.resize(images, [side, side], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


@torch.no_grad()
def classifier_features(
    images: Tensor, model: FeatureClassifier, batch_size: int = 256, resolution: int | None = None
) -> Tensor:
    """``model.features`` of images (N, C, H, W) in [-1, 1] -> (N, 448) float32 on the CPU, batched on the model's
    device; with ``resolution`` each batch is first resized to that side (the side the net was trained at)."""
    device = next(model.parameters()).device
    out = []
    for batch in images.split(batch_size):
        batch = batch.to(device).float()
        out.append(model.features(batch if resolution is None else resize_to(batch, resolution)).float().cpu())
    return torch.cat(out)


def dead_features(features: Tensor, tolerance: float = DEAD_STD) -> int:
    """How many of the D features in (N, D), N >= 2, have a standard deviation over the N images below ``tolerance``."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"dead_features needs features (N, D) of N >= 2 images, got {tuple(features.shape)}")
    return int((features.double().std(dim=0) < tolerance).sum())


# --------------------------------------------------------------------------------------------------------------
# File format
# --------------------------------------------------------------------------------------------------------------


@dataclass
class FeatureNet:
    """A trained feature classifier with its provenance: file, weights and file sha256, held-out accuracy, metadata.

    ``resolution`` is the side it was trained at (images of another side are resized to it by ``features``).
    """

    model: FeatureClassifier
    path: Path
    sha256: str  # weights_sha256: equal for bit-identical nets
    file_sha256: str
    accuracy: float
    metadata: dict[str, str]

    @property
    def resolution(self) -> int:
        """The image side the net was trained at."""
        return int(self.metadata["resolution"])

    def features(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """Images (N, C, H, W) in [-1, 1], any side -> (N, 448) features, resized to ``resolution`` first."""
        return classifier_features(images, self.model, batch_size, resolution=self.resolution)

    def describe(self, evaluated_side: int | None = None) -> dict[str, str | float | int]:
        """Protocol entry for eval.json: which net produced the features and how the images reached it."""
        meta = self.metadata
        resize = (f"images resized from {evaluated_side} to {self.resolution} px (bilinear, antialiased) before the net"
                  if evaluated_side not in (None, self.resolution) else f"images at the net's {self.resolution} px")
        return {"file": str(self.path), "version": meta.get("version", ""), "weights_sha256": self.sha256,
                "file_sha256": self.file_sha256, "held_out_accuracy": self.accuracy,
                "dead_features": int(meta.get("dead_features", -1)),
                "features": f"{FEATURE_DIM}-d: the global averages of the 3 stages of a residual "
                f"{'1-D CNN (signals)' if meta.get('spatial_dims') == '1' else 'CNN'} "
                f"({FEATURE_NET_VERSION}), each standardised over held-out training images and scaled to unit RMS "
                "per image",
                "resize": resize,
                "trained_on": f"{meta.get('dataset')} {meta.get('split', 'train')} split minus every {HELD_OUT_EVERY}th image "
                f"(held out for the accuracy), {meta.get('resolution')} px, {meta.get('steps')} steps "
                f"({float(meta.get('epochs', 'nan')):.1f} epochs), seed {meta.get('seed')}; {meta.get('recipe', '')}",
                "note": "distances in this dataset-trained net's features; not FID/KID, comparable only between "
                "evaluations with the same weights_sha256"}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (what ``sha256sum`` prints)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def weights_sha256(state: dict[str, Tensor]) -> str:
    """Hex sha256 over the tensors' names, dtypes, shapes and bytes in name order: the identity of a net.

    Unlike the file hash it does not depend on the order safetensors writes metadata in (which varies between
    saves), so bit-identical weights always give the same value.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_feature_net(model: FeatureClassifier, accuracy: float, path: str | Path, metadata: dict[str, str]) -> FeatureNet:
    """Writes the weights to a safetensors file with ``metadata`` plus accuracy and class count; returns it loaded.

    The file appears atomically (written beside it, then renamed), so a crash never leaves half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**metadata, "accuracy": repr(float(accuracy)), "num_classes": str(model.head.out_features),
            "channels": str(model.in_channels), "version": FEATURE_NET_VERSION,
            **({"spatial_dims": "1"} if model.spatial_dims == 1 else {})}  # signals' 1-D net (images' files unchanged)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    return load_feature_net(path)


def load_feature_net(path: str | Path, expected: dict[str, str] | None = None) -> FeatureNet:
    """Loads a file written by ``save_feature_net``; errors name the file.

    Raises FileNotFoundError when it is missing, ValueError when it is not a readable feature-net safetensors
    file of this version or its metadata disagrees with ``expected`` (e.g. another dataset, side or channel count).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"feature-net weights file {str(path)!r} does not exist (train it with "
                                f"`pseudovideo feature-net -c CONFIG` or fix eval.feature_net)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("version") != FEATURE_NET_VERSION:
            raise ValueError(f"it holds version {meta.get('version')!r}")
        model = FeatureClassifier(int(meta["channels"]), int(meta["num_classes"]), int(meta.get("spatial_dims", "2")))
        model.load_state_dict(state)
        accuracy = float(meta["accuracy"])
        int(meta["resolution"])
    except (SafetensorError, OSError, KeyError, RuntimeError, ValueError) as err:
        raise ValueError(f"feature-net weights file {str(path)!r} is not a valid {FEATURE_NET_VERSION} safetensors "
                         f"file ({type(err).__name__}: {err}); delete it to retrain, or fix eval.feature_net") from err
    wrong = {k: (meta.get(k), v) for k, v in (expected or {}).items() if meta.get(k) != v}
    if wrong:
        raise ValueError(f"feature-net weights file {str(path)!r} was trained for other data (stored, expected): {wrong}")
    if not math.isfinite(accuracy):
        raise ValueError(f"feature-net weights file {str(path)!r} records a non-finite accuracy {accuracy}")
    return FeatureNet(model.eval().requires_grad_(False), path, weights_sha256(state), file_sha256(path), accuracy, meta)
