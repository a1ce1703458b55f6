"""The conditional multi-scale 3D GAN: config, networks, losses, data, training, checkpoints, inference.

Import the submodules directly (`reface.model.train`, `reface.model.checkpoint`, ...): torch is heavy and
`reface --help` must stay instant.
"""
