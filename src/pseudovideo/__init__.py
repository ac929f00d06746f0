"""pseudovideo: train video counterparts of image generative models on pseudo videos.

A pseudo video is a short clip built by progressively corrupting an image (blur, noise, ...);
its last frame is the clean image. See README.md for the command-line tool.
"""

__version__ = "0.1.0"

from pseudovideo.lift import lift  # noqa: E402  (pseudovideo.lift(image_net, num_frames, ...))

__all__ = ["lift", "__version__"]
