"""The networks: the tokenizer pair (:mod:`~pseudovideo.models.vqvae`, :mod:`~pseudovideo.models.cvivit`, their
:mod:`~pseudovideo.models.quantizer` and :mod:`~pseudovideo.models.tokenizer` interface), the diffusion pair
(:mod:`~pseudovideo.models.unet` of :mod:`~pseudovideo.models.unet_blocks`), the GAN
:mod:`~pseudovideo.models.discriminator`, shared :mod:`~pseudovideo.models.layers`, and
:mod:`~pseudovideo.models.lift`, which turns any image network into its video counterpart. They take plain
arguments: the config meets them in :mod:`pseudovideo.factory.models`.
"""
