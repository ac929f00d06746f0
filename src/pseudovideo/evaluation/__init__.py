"""Evaluation: a trained run folder in, numbers with their protocol out (eval.json, eval.md, pictures).

:mod:`~pseudovideo.evaluation.evaluate` evaluates a run (the model run by :mod:`~pseudovideo.evaluation.inference`,
the metrics of :mod:`pseudovideo.metrics` (the classifier behind CFD / CKD: :mod:`pseudovideo.metrics.feature_net`,
found or trained for a config by :mod:`pseudovideo.factory.feature_net`),
the linear :mod:`~pseudovideo.evaluation.probe`, a sampling ETA from :mod:`~pseudovideo.evaluation.sampling_progress`)
and :mod:`~pseudovideo.evaluation.report` writes eval.md; :mod:`~pseudovideo.evaluation.stats` holds the intervals
experiment tables print; :mod:`~pseudovideo.evaluation.diagnose` measures a config's pseudo videos before any training.
"""
