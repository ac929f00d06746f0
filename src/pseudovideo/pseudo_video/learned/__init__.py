"""Learned corruptions: levels that carry gradient (:mod:`~pseudovideo.pseudo_video.learned.differentiable`),
learnable monotone schedules and operator mixtures (:mod:`~pseudovideo.pseudo_video.learned.corruption`), the
per-image :mod:`~pseudovideo.pseudo_video.learned.policy`, and the ways to learn them:
:mod:`~pseudovideo.pseudo_video.learned.search` (the informativeness ascent, the random search grid) and
:mod:`~pseudovideo.pseudo_video.learned.adversarial` (ascent of the training loss). A run's learned corruption is
prepared from its config by :mod:`pseudovideo.training.learned_runs`.
"""
