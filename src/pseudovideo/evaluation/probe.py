"""The ``probe`` metric: linear-probe accuracy of a trained model's frozen features of the clean frame.

Do pseudo videos teach a model better representations of the image? A fixed linear classifier is trained on the
frozen features of labelled training images and tested on the held-out evaluation images; beside it, the same
architecture with random (untrained) weights gives ``probe_random``, the baseline to beat (random conv features
are far above chance on CIFAR-10).

The recipe (``PROBE_VERSION``), fixed so that figures compare across runs:

- **Images**: ``PROBE_TRAIN_IMAGES`` training-split images evenly spaced over the split (all of it when smaller),
  and the ``eval.num_images`` held-out images of the evaluation (the same images as the other metrics).
- **Model input**: what the model sees in evaluation: the pseudo video of each image (the run's builder, seeded
  with ``eval.seed``), or the clean image alone for an image model (T = 1).
- **Features**: tokenizers (VQVAE, C-ViViT, lifted VQVAE): the encoder's output *before quantization* (the
  quantizer's input tokens), at the clean frame's time step (the last frame; the C-ViViT's last time step),
  average-pooled over the spatial positions. Diffusion models (UNet, video UNet, lifted UNet): the UNet's
  bottleneck, the output of its last middle block, at the clean frame, average-pooled over positions, with the
  pseudo video noised to diffusion step t = round(``PROBE_NOISE_FRACTION`` x num_timesteps) (noise drawn from
  the same ``eval.seed`` generator; a level-conditioned UNet at level 0).
- **Classifier**: features standardised (scikit-learn ``StandardScaler`` fit on the training features), then
  ``LogisticRegression(C=PROBE_C, solver="lbfgs", max_iter=PROBE_MAX_ITER)`` (multinomial; deterministic).
- **Chance**: the accuracy of always answering the training images' most frequent class (what constant
  features score), reported in the protocol.

A dataset without labels (CelebA, raw MNIST images, a folder without class sub-folders) skips the metric with its
reason: :func:`pseudovideo.factory.datasets.unlabelled_reason` tells it before training (``check_run_inputs`` warns), evaluation records it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from pseudovideo.config import ConfigError, EvalConfig, RunConfig, load_config
from pseudovideo.factory.datasets import ProbeSkipped, labelled_images

__all__ = [
    "PROBE_C",
    "PROBE_MAX_ITER",
    "PROBE_NOISE_FRACTION",
    "PROBE_TRAIN_IMAGES",
    "PROBE_VERSION",
    "frozen_features",
    "linear_probe",
    "probe_metrics",
    "random_weights_model",
]

PROBE_VERSION = "linear-probe-v1"  # bump when the recipe below changes
PROBE_TRAIN_IMAGES = 2000  # labelled training-split images the classifier is fit on
PROBE_C = 1.0  # inverse L2 regularisation strength of the logistic regression
PROBE_MAX_ITER = 1000
PROBE_NOISE_FRACTION = 0.1  # diffusion features at step t = round(0.1 x num_timesteps)


# -- the classifier -------------------------------------------------------------------------------------------


def linear_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor) -> dict[str, Any]:
    """Fits the fixed recipe's classifier on (N, D) features and (N,) labels; scores it on the test set.

    Returns {"accuracy": test accuracy, "chance": the test accuracy of always answering the training set's most
    frequent class, "converged": whether lbfgs converged within PROBE_MAX_ITER, "iterations": lbfgs iterations}.
    Non-finite features (a diverged model) give accuracy NaN.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    y_train, y_test = train_labels.long().numpy(), test_labels.long().numpy()
    if len(np.unique(y_train)) < 2:
        raise ProbeSkipped(f"the probe's training images hold {len(np.unique(y_train))} class(es); it needs 2 or more")
    chance = float(np.mean(y_test == np.bincount(y_train).argmax()))
    if not (torch.isfinite(train_features).all() and torch.isfinite(test_features).all()):
        return {"accuracy": float("nan"), "chance": chance, "converged": False, "iterations": 0}
    x_train, x_test = train_features.double().numpy(), test_features.double().numpy()
    scaler = StandardScaler().fit(x_train)
    classifier = LogisticRegression(C=PROBE_C, solver="lbfgs", max_iter=PROBE_MAX_ITER)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(scaler.transform(x_train), y_train)
    accuracy = float(np.mean(classifier.predict(scaler.transform(x_test)) == y_test))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {"accuracy": accuracy, "chance": chance, "converged": converged, "iterations": int(np.max(classifier.n_iter_))}


# -- labelled images ------------------------------------------------------------------------------------------


# -- features -------------------------------------------------------------------------------------------------


class _Captured(Exception):
    """Raised by a hook to stop the forward pass once the probed layer has been reached."""

    def __init__(self, value: Tensor) -> None:
        super().__init__("captured")
        self.value = value


@contextlib.contextmanager
def _stop_at(module: nn.Module, *, inputs: bool) -> Iterator[None]:
    """While active, a forward through ``module`` raises _Captured with its first input (or its output)."""
    def pre_hook(_: nn.Module, args: tuple[Any, ...]) -> None:
        raise _Captured(args[0])

    def hook(_: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        raise _Captured(output)

    handle = module.register_forward_pre_hook(pre_hook) if inputs else module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _captured(module: nn.Module, inputs: bool, run: Callable[[], Any]) -> Tensor:
    with _stop_at(module, inputs=inputs):
        try:
            run()
        except _Captured as captured:
            return captured.value
    raise ProbeSkipped(f"the forward pass never reached the probed layer {type(module).__name__}")


def _quantizer_of(model: nn.Module) -> nn.Module:
    """The tokenizer's vector quantizer (its input is the encoder's output before quantization)."""
    from pseudovideo.models.quantizer import VectorQuantizer

    found = [m for m in model.modules() if isinstance(m, VectorQuantizer)]
    if len(found) != 1:
        raise ProbeSkipped(f"{type(model).__name__} has {len(found)} pseudovideo VectorQuantizer modules; the probe "
                           "reads the input of exactly one")
    return found[0]


def _bottleneck_of(model: nn.Module) -> nn.Module:
    """The last middle block of our UNet (also inside a lifted model), or a diffusers UNet's ``mid_block``."""
    net = getattr(model, "image", model)
    if hasattr(net, "middle"):
        return net.middle[-1]
    if getattr(net, "mid_block", None) is not None:
        return net.mid_block
    raise ProbeSkipped(f"{type(net).__name__} has no middle block (our UNet's .middle or a diffusers .mid_block)")


def _clean_step_pool(tokens: Tensor, batch: int, frames: int, model: nn.Module) -> Tensor:
    """Quantizer input tokens -> (B, D) mean over the clean frame's step: (B T, h w, D) frame by frame (VQVAE),
    or (B, t h w, D) for the C-ViViT (whose last time step holds the clean frame)."""
    if tokens.shape[0] == batch * frames:
        clean = tokens.reshape(batch, frames, *tokens.shape[1:])[:, -1]  # (B, h w, D)
    else:
        steps = model.num_time_steps(frames)
        clean = tokens.reshape(batch, steps, -1, tokens.shape[-1])[:, -1]  # (B, h w, D)
    return clean.mean(dim=1)


@torch.no_grad()
def frozen_features(
    model: nn.Module, config: RunConfig, images: Tensor, *, batch_size: int, seed: int, device: torch.device
) -> Tensor:
    """The recipe's features (module docstring) of clean images (N, C, H, W) -> (N, D) float32 on the CPU."""
    from pseudovideo.factory.models import build_diffusion, is_tokenizer, model_frames
    from pseudovideo.factory.pseudo_videos import build_pseudo_video_builder
    from pseudovideo.training.tasks import sampling_model

    model = model.eval()
    tokenizer = is_tokenizer(config)
    layer = _quantizer_of(model) if tokenizer else _bottleneck_of(model)
    builder = build_pseudo_video_builder(config.pseudo_video)
    frames = model_frames(config)
    generator = torch.Generator(device=device).manual_seed(seed)
    diffusion = None if tokenizer else build_diffusion(config).to(device)
    step = 0 if tokenizer else round(PROBE_NOISE_FRACTION * config.diffusion.num_timesteps)
    features = []
    for batch in images.split(batch_size):
        video = builder(batch.to(device), generator=generator)  # (B, T, C, H, W)
        if frames == 1:
            video = video[:, -1:]  # an image model sees the clean image alone
        b = video.shape[0]
        if tokenizer:
            tokens = _captured(layer, True, lambda: model.encode(video))
            features.append(_clean_step_pool(tokens.float(), b, frames, model).cpu())
            continue
        noise = torch.randn(video.shape, generator=generator, device=device)
        t = torch.full((b,), step, device=device, dtype=torch.long)
        x_t = diffusion.q_sample(video, t, noise)
        h = _captured(layer, False, lambda: sampling_model(model)(x_t, t))  # ((B T), C, h, w)
        clean = h.float().reshape(b, frames, *h.shape[1:])[:, -1]  # (B, C, *spatial): h w, or the length of signals
        features.append(clean.mean(dim=tuple(range(2, clean.ndim))).cpu())  # (B, C)
    return torch.cat(features)  # (N, D)


# -- the random-weights baseline ------------------------------------------------------------------------------


def _fresh_config(config: RunConfig) -> RunConfig:
    """A config that builds ``config``'s architecture with fresh weights: a lifted run on ``run:DIR`` becomes a
    lifted run on the base's own family (and its model section, read from DIR/config.yaml)."""
    model = config.model
    for _ in range(8):  # a run: base may itself be a lifted run without temporal layers on another run
        base = model.lifted.base
        if model.family != "lifted" or not base.startswith("run:"):
            return dataclasses.replace(config, model=model)
        saved = Path(base.removeprefix("run:")) / "config.yaml"
        if not saved.is_file():
            raise ProbeSkipped(f"probe_random: cannot rebuild the base of model.lifted.base={base} (no {saved})")
        base_model = load_config(saved).model
        family = base_model.lifted.base if base_model.family == "lifted" else base_model.family
        model = dataclasses.replace(model, vqvae=base_model.vqvae, unet=base_model.unet,
                                    lifted=dataclasses.replace(model.lifted, base=family))
    raise ProbeSkipped(f"probe_random: model.lifted.base={config.model.lifted.base} is nested too deeply")


def random_weights_model(config: RunConfig, channels: int, device: torch.device) -> nn.Module:
    """The run's architecture with the weights it had before training (built under ``train.seed``), eval mode.

    Bases that cannot be built fresh (``python:``, ``diffusers:``) raise ProbeSkipped.
    """
    from pseudovideo.factory.models import build_model
    from pseudovideo.training.randomness import seeded

    if config.model.family == "lifted" and config.model.lifted.base.startswith(("python:", "diffusers:")):
        raise ProbeSkipped(f"probe_random: model.lifted.base={config.model.lifted.base} has no untrained version here")
    fresh = _fresh_config(config)
    try:
        with seeded(config.train.seed):
            model = build_model(fresh, channels)
    except ConfigError as err:
        raise ProbeSkipped(f"probe_random: {err}") from None
    return model.to(device).eval()


# -- the metric -----------------------------------------------------------------------------------------------


def _describe_features(config: RunConfig, feature_dim: int) -> str:
    from pseudovideo.factory.models import is_tokenizer

    if is_tokenizer(config):
        return (f"encoder output before quantization (the quantizer's {feature_dim}-d input tokens) at the clean "
                "frame's time step, average-pooled over the spatial positions")
    d = config.diffusion
    step = round(PROBE_NOISE_FRACTION * d.num_timesteps)
    return (f"UNet bottleneck (output of the last middle block, {feature_dim} channels) of the clean frame at diffusion "
            f"step t={step} of {d.num_timesteps} ({PROBE_NOISE_FRACTION:.0%}), average-pooled over the spatial positions")


def probe_metrics(
    model: nn.Module, config: RunConfig, eval_config: EvalConfig, channels: int, device: torch.device,
    skipped: dict[str, str],
) -> tuple[dict[str, float], dict[str, Any]]:
    """``probe`` (and ``probe_random``) of a trained run's model, with the protocol entry for eval.json.

    Raises ProbeSkipped (the reason) when the probe cannot be computed; a missing random baseline is put in
    ``skipped["probe_random"]`` instead.
    """
    from pseudovideo.factory.pseudo_videos import describe_pseudo_video
    from pseudovideo.factory.models import model_frames

    train_x, train_y, num_classes, train_split = labelled_images(config, config.data.train_split, PROBE_TRAIN_IMAGES)
    test_x, test_y, _, test_split = labelled_images(config, config.data.eval_split, eval_config.num_images)

    def score(net: nn.Module) -> dict[str, Any]:
        extract = functools.partial(frozen_features, net, config, batch_size=eval_config.batch_size,
                                    seed=eval_config.seed, device=device)
        train_features, test_features = extract(train_x), extract(test_x)
        return {**linear_probe(train_features, train_y, test_features, test_y), "feature_dim": train_features.shape[1]}

    trained = score(model)
    metrics = {"probe": trained["accuracy"]}
    protocol: dict[str, Any] = {
        "recipe": PROBE_VERSION,
        "features": _describe_features(config, trained["feature_dim"]),
        "model_input": describe_pseudo_video(config.pseudo_video) if model_frames(config) > 1
        else "the clean image alone (T=1)",
        "classifier": f"scikit-learn LogisticRegression(C={PROBE_C}, solver=lbfgs, max_iter={PROBE_MAX_ITER}), "
                      "multinomial, on features standardised by a StandardScaler fit on the training features",
        "train_images": f"{train_x.shape[0]} images evenly spaced over {train_split} ({num_classes} classes)",
        "test_images": f"{test_x.shape[0]} held-out evaluation images ({test_split})",
        "chance": trained["chance"],
        "converged": trained["converged"],
        "seed": eval_config.seed,
    }
    try:
        random = score(random_weights_model(config, channels, device))
    except ProbeSkipped as err:
        skipped["probe_random"] = str(err)
        return metrics, protocol
    metrics["probe_random"] = random["accuracy"]
    protocol["probe_random"] = (f"the same architecture with random weights (untrained, initialised with train.seed="
                                f"{config.train.seed}), same recipe; lbfgs converged: {random['converged']}")
    return metrics, protocol
