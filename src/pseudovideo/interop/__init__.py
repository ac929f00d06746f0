"""Networks of other libraries, in and out.

In: a ``model.lifted.base`` that is a diffusers ``UNet2DModel`` folder or a ``python:module:factory`` function
(:mod:`~pseudovideo.interop.bases`; a diffusers base's scheduler checked by
:mod:`~pseudovideo.interop.diffusers_scheduler`; user code only with ``--trust-code``, :mod:`~pseudovideo.interop.trust`).
Out: our image UNet as a diffusers ``UNet2DModel`` folder with its scheduler (:mod:`~pseudovideo.interop.export`;
:func:`pseudovideo.factory.models.export_run` does it for a run folder). Our own bases (``unet``, ``vqvae``,
``run:``) are built by :mod:`pseudovideo.factory.models`, which sits above this package.
"""
