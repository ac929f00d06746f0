"""Training: a run config and a dataset in, a run folder out.

:mod:`~pseudovideo.training.runs` trains one run (checks, plan, resume) with the :mod:`~pseudovideo.training.tasks`
of its model pair (the objective: :mod:`~pseudovideo.training.losses`, or the diffusion loss) through the one
:mod:`~pseudovideo.training.engine` of every family, whose parts are the data order
(:mod:`~pseudovideo.training.batches`), :mod:`~pseudovideo.training.ema`, :mod:`~pseudovideo.training.randomness`,
:mod:`~pseudovideo.training.precision`, :mod:`~pseudovideo.training.optimisation`, the NaN guard
(:mod:`~pseudovideo.training.health`), :mod:`~pseudovideo.training.loggers`, :mod:`~pseudovideo.training.previews`,
:mod:`~pseudovideo.training.memory`, :mod:`~pseudovideo.training.distributed` and the code record
(:mod:`~pseudovideo.training.provenance`). A run's learned corruption is prepared, recorded and reloaded by
:mod:`~pseudovideo.training.learned_runs` (searches: :mod:`~pseudovideo.training.corruption_search`, proxy runs:
:mod:`~pseudovideo.training.proxy`). The checkpoint format is :mod:`pseudovideo.checkpoint`.
"""
