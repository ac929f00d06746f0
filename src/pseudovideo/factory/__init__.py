"""From a typed config (and a run folder) to the objects a run is made of: the dataset, the pseudo-video builder,
the network of any family (including a lifted one and its bases), the diffusion process, and a trained run loaded
back. The one place where config sections meet constructors; below training, evaluation and the CLI."""
