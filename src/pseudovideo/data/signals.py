"""Datasets of 1-D signals: the last frames of pseudo sequences, as images are for pseudo videos.

Every dataset built here yields float32 tensors ``(C, L)`` in ``[-1, 1]`` (labels kept beside them in ``.labels``),
with L = ``length``. Entry point :func:`build_signal_dataset`, driven by a spec string:

- ``"sktime:NAME"``: a dataset bundled inside the sktime wheel (offline: ItalyPowerDemand, GunPoint, ArrowHead,
  OSULeaf, ACSF1, PLAID, BasicMotions, JapaneseVowels, ...), read by sktime's own loader
  (``load_UCR_UEA_dataset``, ``pip install 'pseudovideo[timeseries]'``) with its official train/test split.
- ``"series:PATH"``: a folder of series files, one series per file: ``.npy`` (``(L,)`` or ``(C, L)``) or ``.csv``
  (one row per time step, one column per channel, an optional header row). One sub-folder per class gives labels
  (``PATH/train/<class>/x.npy``); ``PATH/train`` + ``PATH/test`` are the splits when present, otherwise a
  ``held_out_fraction`` of the files is held out by a hash of their relative path (as image folders).

Then, in this order: **windows** (``window``, ``stride``): each series is cut into windows of ``window`` samples
every ``stride`` samples (series shorter than a window are dropped and counted); a series is split before it is
cut, so all its windows stay in its split. **Length**: every series or window is resampled to ``length`` samples
(antialiased linear interpolation, torch's ``bilinear`` with ``antialias`` on a one-row image) when its length
differs, and the description says so. **Normalisation** (:class:`Normalisation`): per channel, the training split's
minimum and maximum (over all its series and samples) are mapped to -1 and 1; every split uses the training split's
values, so evaluation sees what training saw (values outside are clipped, their share is in the description), and
the values are recorded in ``train_summary.json`` and ``eval.json`` (``normalisation``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from pseudovideo.data.datasets import spread_subset
from pseudovideo.data.splits import held_out_mask

__all__ = [
    "SERIES_EXTENSIONS",
    "SIGNAL_SPECS",
    "Normalisation",
    "SignalDataset",
    "build_signal_dataset",
    "bundled_sktime_datasets",
    "check_signal_spec",
    "cut_windows",
    "parse_signal_spec",
    "resample",
    "signal_cache_name",
    "signal_labels_exist",
    "signal_training_split",
]

SIGNAL_KINDS = ("sktime", "series")  # the spec prefixes (pseudovideo.config.modality tells the modality by them too)
SIGNAL_SPECS = ("sktime:NAME", "series:PATH")
SERIES_EXTENSIONS = (".npy", ".csv")
SPLITS = {"sktime": ("train", "test"), "series": ("train", "valid", "test")}
NORMALISATION_METHOD = "per channel: the training split's [min, max] mapped to [-1, 1], other values clipped"


@dataclass(frozen=True)
class Normalisation:
    """Per-channel affine map of the training split's [low, high] onto [-1, 1] (a constant channel maps to 0)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def of(cls, series: Sequence[np.ndarray]) -> "Normalisation":
        """The minimum and maximum per channel over series (C, L_i) (float64)."""
        low = np.min([s.min(axis=1) for s in series], axis=0)
        high = np.max([s.max(axis=1) for s in series], axis=0)
        return cls(tuple(float(v) for v in low), tuple(float(v) for v in high))

    def apply(self, x: Tensor) -> tuple[Tensor, float]:
        """x (N, C, L) float64 -> (normalised float32 (N, C, L) in [-1, 1], share of values clipped)."""
        low = torch.tensor(self.low, dtype=torch.float64)[:, None]
        span = torch.tensor(self.high, dtype=torch.float64)[:, None] - low
        scaled = torch.where(span > 0, 2 * (x - low) / span.clamp(min=1e-300) - 1, torch.zeros((), dtype=x.dtype))
        clipped = float((scaled.abs() > 1).double().mean()) if scaled.numel() else 0.0
        return scaled.clamp(-1, 1).float(), clipped

    def as_dict(self) -> dict[str, Any]:
        """The record written into train_summary.json and eval.json."""
        return {"method": NORMALISATION_METHOD, **asdict(self)}


class SignalDataset(Dataset):
    """1-D signals held in memory: items float32 ``(C, L)`` in [-1, 1] (no augmentation).

    Attributes: ``name`` (spec), ``length`` (L), ``channels`` (C), ``signals`` (N, C, L), ``labels`` /
    ``class_names`` (int64 (N,) and names, or None), ``split_description`` (which series, windows, resampling,
    normalisation), ``normalisation`` (the record of :class:`Normalisation`), and, as image datasets,
    ``random_flip`` (False) and ``bad_files`` (empty).
    """

    random_flip = False

    def __init__(self, signals: Tensor, *, name: str, labels: Tensor | None, class_names: Sequence[str] | None,
                 split_description: str, normalisation: Normalisation) -> None:
        if signals.ndim != 3:
            raise ValueError(f"signals must have shape (N, C, L), got {tuple(signals.shape)}")
        self.signals = signals
        self.name = name
        self.length = signals.shape[-1]
        self.channels = signals.shape[1]
        self.labels = labels
        self.class_names = list(class_names) if class_names is not None else None
        self.split_description = split_description
        self.normalisation = normalisation.as_dict()
        self.bad_files: list[str] = []

    def __len__(self) -> int:
        return self.signals.shape[0]

    def load(self, index: int) -> Tensor:
        """Item ``index``: float32 (C, L) in [-1, 1]."""
        return self.signals[index]

    __getitem__ = load

    def __repr__(self) -> str:
        return f"SignalDataset(name={self.name!r}, len={len(self)}, channels={self.channels}, length={self.length})"


# -- specs -----------------------------------------------------------------------------------------------------


def parse_signal_spec(spec: str) -> tuple[str, str]:
    """``"sktime:NAME"`` -> ("sktime", "NAME"), ``"series:PATH"`` -> ("series", "PATH"); ValueError otherwise."""
    kind, _, arg = str(spec).strip().partition(":")
    kind = kind.strip().lower()
    if kind not in SIGNAL_KINDS or not arg.strip():
        raise ValueError(f"signal dataset spec {spec!r}: expected {' or '.join(SIGNAL_SPECS)}")
    return kind, arg.strip()


def _sktime_data_folder() -> Path:
    try:
        import sktime.datasets
    except ImportError:
        raise ValueError("sktime: datasets need the sktime package: pip install 'pseudovideo[timeseries]'") from None
    return Path(sktime.datasets.__file__).parent / "data"


def bundled_sktime_datasets() -> list[str]:
    """Names of the datasets bundled inside the installed sktime wheel (read without network)."""
    folder = _sktime_data_folder()
    return sorted(p.name for p in folder.iterdir() if (p / f"{p.name}_TRAIN.ts").is_file())


def check_signal_spec(spec: str, split: str) -> None:
    """Cheap checks before any work: the spec's form, the split, sktime installed and the dataset bundled in it, the
    folder present. ValueError / FileNotFoundError name what is wrong."""
    kind, arg = parse_signal_spec(spec)
    if split not in SPLITS[kind]:
        raise ValueError(f"{spec} has splits {list(SPLITS[kind])}, got split {split!r} (data.train_split / data.eval_split)")
    if kind == "sktime":
        names = bundled_sktime_datasets()
        if arg not in names:
            raise ValueError(f"{spec}: {arg!r} is not bundled with the installed sktime (read offline); bundled: "
                             f"{', '.join(names)}")
    elif not Path(arg).expanduser().is_dir():
        raise FileNotFoundError(f"series folder {arg!r} does not exist")


# -- reading ---------------------------------------------------------------------------------------------------


def _read_sktime(name: str, split: str) -> tuple[list[np.ndarray], list[str] | None, str]:
    """Series (C, L_i) float64, class labels (None for a regression set) and the split's description."""
    import warnings

    from sktime.datasets import load_UCR_UEA_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sktime's deprecation notices are not the user's concern
        frame, y = load_UCR_UEA_dataset(name, split=split, return_type="nested_univ")  # bundled: read locally
    series = [np.stack([np.asarray(frame.iloc[i, c], dtype=np.float64) for c in range(frame.shape[1])])
              for i in range(frame.shape[0])]
    labels = [str(v) for v in y] if _sktime_labelled(name) else None  # a regression set's targets are no classes
    return series, labels, f"sktime {name}'s official {split!r} split"


def _sktime_labelled(name: str) -> bool:
    """Whether a bundled sktime set is a classification problem (its .ts header says ``@classLabel true``)."""
    header = (_sktime_data_folder() / name / f"{name}_TRAIN.ts").read_text(errors="replace")[:20000].lower()
    return "@classlabel true" in header


def _read_series_file(path: Path) -> np.ndarray:
    """One series file as float64 (C, L): .npy (L,) or (C, L); .csv rows = time steps, columns = channels."""
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
            array = array[None] if array.ndim == 1 else array
        else:
            lines = path.read_text().splitlines()
            header = 1 if lines and not _is_numeric_row(lines[0]) else 0
            array = np.loadtxt(path, delimiter=",", skiprows=header, ndmin=2, dtype=np.float64).T  # (C, L)
    except (OSError, ValueError) as err:
        raise ValueError(f"series file {str(path)!r} is not a readable series ({err})") from None
    if array.ndim != 2 or array.shape[1] < 1 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"series file {str(path)!r}: expected a numeric (L,) or (C, L) series, got shape {array.shape}")
    return array.astype(np.float64)


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


def _series_folder(path: Path, split: str) -> tuple[Path, bool]:
    """(folder to read, whether to split it by hash) for ``split`` of a series folder (as image folders)."""
    present = [name for name in SPLITS["series"] if (path / name).is_dir()]
    if "train" in present and len(present) > 1:
        if split not in present:
            raise FileNotFoundError(f"series folder {str(path)!r} has split sub-folders {present} but no {split!r}")
        return path / split, False
    return (path / "train" if "train" in present else path), True


def _read_series_folder(arg: str, split: str, held_out_fraction: float) -> tuple[list[np.ndarray], list[str] | None, str]:
    root = Path(arg).expanduser()
    folder, hashed = _series_folder(root, split)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SERIES_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"series folder {str(folder)!r} holds no {' or '.join(SERIES_EXTENSIONS)} files")
    keys = [f.relative_to(folder).as_posix() for f in files]
    description = f"the {split!r} sub-folder of {arg}"
    if hashed:
        held = held_out_mask(keys, held_out_fraction)
        files = [f for f, h in zip(files, held) if h == (split != "train")]
        if not files:
            raise ValueError(f"the {split!r} part of series folder {str(folder)!r} is empty (data.held_out_fraction="
                             f"{held_out_fraction}); give it train/ and test/ sub-folders")
        part = "held-out" if split != "train" else "training part (not held out)"
        description = f"{part} of series folder {arg} by hash of the relative path ({len(files)} of {len(keys)} files)"
    parts = [f.relative_to(folder).parts for f in files]
    classes = sorted({p[0] for p in parts}) if all(len(p) > 1 for p in parts) else []
    labels = [p[0] for p in parts] if len(classes) > 1 else None
    return [_read_series_file(f) for f in files], labels, description


def _read(kind: str, arg: str, split: str, held_out_fraction: float) -> tuple[list[np.ndarray], list[str] | None, str]:
    series, labels, description = (_read_sktime(arg, split) if kind == "sktime"
                                   else _read_series_folder(arg, split, held_out_fraction))
    channels = {s.shape[0] for s in series}
    if len(channels) > 1:
        raise ValueError(f"{kind}:{arg} ({split}): series have different channel counts {sorted(channels)}")
    for i, s in enumerate(series):
        if not np.isfinite(s).all():
            raise ValueError(f"{kind}:{arg} ({split}): series {i} holds NaN or infinite values")
    return series, labels, description


# -- windows, length, normalisation ------------------------------------------------------------------------------


def cut_windows(series: Sequence[np.ndarray], window: int | None, stride: int | None) -> tuple[list[np.ndarray], list[int]]:
    """Windows (C, window) of every series every ``stride`` samples (default: ``window``), and the index of the
    series each comes from; series shorter than a window give none. ``window`` None: the series themselves."""
    if window is None:
        return list(series), list(range(len(series)))
    step = stride or window
    windows, owners = [], []
    for index, s in enumerate(series):
        for start in range(0, s.shape[1] - window + 1, step):
            windows.append(s[:, start : start + window])
            owners.append(index)
    return windows, owners


def resample(series: Tensor, length: int) -> Tensor:
    """(C, L0) -> (C, length): antialiased linear interpolation (torch ``bilinear``, ``antialias``, one row)."""
    if series.shape[-1] == length:
        return series
    return F.interpolate(series[None, :, None], size=(1, length), mode="bilinear", antialias=True, align_corners=False)[0, :, 0]


def _describe(description: str, kind: str, arg: str, series: list[np.ndarray], windows: list[np.ndarray],
              window: int | None, stride: int | None, length: int, clipped: float, split: str) -> str:
    lengths = sorted({w.shape[1] for w in windows})
    text = f"{description}: {len(series)} series"
    if window is not None:
        short = sum(s.shape[1] < window for s in series)
        text += (f" cut into {len(windows)} windows of {window} samples every {stride or window}"
                 + (f" ({short} series shorter than a window dropped)" if short else ""))
    if lengths != [length]:
        shown = f"{lengths[0]}..{lengths[-1]}" if len(lengths) > 1 else str(lengths[0])
        text += f", resampled from {shown} to {length} samples (antialiased linear)"
    text += "; normalised by the training split's per-channel min/max"
    if split != "train" and clipped > 0:
        text += f" ({clipped:.2%} of values outside, clipped)"
    return text


def build_signal_dataset(
    spec: str,
    *,
    length: int,
    split: str = "train",
    window: int | None = None,
    stride: int | None = None,
    channels: int | None = None,
    max_images: int | None = None,
    held_out_fraction: float = 0.1,
) -> SignalDataset:
    """The signal dataset named by ``spec`` (module docstring): float32 (N, C, ``length``) in [-1, 1] with labels.

    ``window`` / ``stride``: cut windows first; ``channels``: the channel count expected (None: the data's own;
    signals are never converted); ``max_images``: keep that many series (windows) evenly spaced; ``held_out_fraction``:
    the share of a split-less series folder held out for evaluation. ValueError naming the problem otherwise.
    """
    kind, arg = parse_signal_spec(spec)
    check_signal_spec(spec, split)
    if length < 4:
        raise ValueError(f"data.length: expected an integer >= 4, got {length}")
    train = _read(kind, arg, "train", held_out_fraction)
    series, labels, description = train if split == "train" else _read(kind, arg, split, held_out_fraction)
    train_series = train[0]
    if channels is not None and series[0].shape[0] != channels:
        raise ValueError(f"data.channels={channels} but {spec} has {series[0].shape[0]} channels (signals are not converted)")
    normalisation = Normalisation.of(cut_windows(train_series, window, stride)[0] or train_series)
    windows, owners = cut_windows(series, window, stride)
    if not windows:
        raise ValueError(f"{spec} ({split}): no series is as long as data.window={window} "
                         f"(longest: {max(s.shape[1] for s in series)} samples)")
    keep = spread_subset(len(windows), max_images).tolist()
    raw = torch.stack([resample(torch.from_numpy(windows[i]), length) for i in keep])  # (N, C, length) float64
    signals, clipped = normalisation.apply(raw)
    class_names = sorted(set(labels)) if labels is not None else None
    label_tensor = None
    if labels is not None and len(class_names) > 1:
        index = {name: i for i, name in enumerate(class_names)}
        label_tensor = torch.tensor([index[labels[owners[i]]] for i in keep], dtype=torch.long)
    else:
        class_names = None
    text = _describe(description, kind, arg, series, windows, window, stride, length, clipped, split)
    return SignalDataset(signals, name=spec, labels=label_tensor, class_names=class_names, split_description=text,
                         normalisation=normalisation)


def signal_training_split(spec: str, split: str, held_out_fraction: float) -> str:
    """The training split as a cache key names it: ``train``, or ``train-heldout0.1`` for a series folder split by hash."""
    kind, arg = parse_signal_spec(spec)
    hashed = kind == "series" and _series_folder(Path(arg).expanduser(), split)[1]
    return f"{split}-heldout{held_out_fraction:g}" if hashed else split


def signal_labels_exist(spec: str, split: str, held_out_fraction: float) -> bool:
    """Whether the training split has class labels, told cheaply: an sktime set's header says ``@classLabel true``;
    a series folder's files lie in two or more class sub-folders (no series is read)."""
    kind, arg = parse_signal_spec(spec)
    if kind == "sktime":
        return _sktime_labelled(arg)
    folder, _ = _series_folder(Path(arg).expanduser(), split)
    parts = [p.relative_to(folder).parts for p in folder.rglob("*") if p.suffix.lower() in SERIES_EXTENSIONS]
    return bool(parts) and all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) > 1


def signal_cache_name(spec: str, length: int, window: int | None, stride: int | None) -> str:
    """A name for what a signal dataset holds (spec, window, stride, length), for cache keys (the feature net)."""
    kind, arg = parse_signal_spec(spec)
    if kind == "series":
        arg = f"{Path(arg).name}_{hashlib.sha256(os.path.realpath(Path(arg).expanduser()).encode()).hexdigest()[:8]}"
    windows = f"-w{window}s{stride or window}" if window is not None else ""
    return f"{kind}:{arg}{windows}"
