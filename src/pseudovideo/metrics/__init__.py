"""Metrics on tensors, with no knowledge of runs or configs: :mod:`~pseudovideo.metrics.image` (PSNR, SSIM, SWD) and
:mod:`~pseudovideo.metrics.inception` (FID, KID, CFD on network features, the reference statistics cache, the
evaluation protocol). Used by evaluation, by the informativeness of pseudo videos and by proxy runs, so they sit
below all of them. The names below are the package's API (``from pseudovideo import metrics as M; M.psnr(x, y)``)."""

from __future__ import annotations

from pseudovideo.metrics.image import laplacian_pyramid, psnr, sliced_wasserstein, sliced_wasserstein_distance, ssim
from pseudovideo.metrics.inception import (
    INCEPTION_FEATURE_DIM,
    INCEPTION_WEIGHTS_FILE,
    InceptionFeatureStats,
    ReferenceStatsKey,
    build_inception,
    cached_reference_stats,
    evaluation_protocol,
    feature_frechet_distance,
    fid_kid,
    format_protocol,
    frechet_distance,
    images_to_uint8,
    inception_features,
    inception_weights_available,
    inception_weights_cache_path,
    kernel_inception_distance,
    load_reference_stats,
    polynomial_kernel,
    reference_stats_path,
    resolve_inception_weights,
    save_reference_stats,
)

__all__ = [
    "INCEPTION_FEATURE_DIM",
    "INCEPTION_WEIGHTS_FILE",
    "InceptionFeatureStats",
    "ReferenceStatsKey",
    "build_inception",
    "cached_reference_stats",
    "evaluation_protocol",
    "feature_frechet_distance",
    "fid_kid",
    "format_protocol",
    "frechet_distance",
    "images_to_uint8",
    "inception_features",
    "inception_weights_available",
    "inception_weights_cache_path",
    "kernel_inception_distance",
    "laplacian_pyramid",
    "load_reference_stats",
    "polynomial_kernel",
    "psnr",
    "reference_stats_path",
    "resolve_inception_weights",
    "save_reference_stats",
    "sliced_wasserstein",
    "sliced_wasserstein_distance",
    "ssim",
]
