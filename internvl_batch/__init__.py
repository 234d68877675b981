"""internvl-batch: InternVL 2.5 batch inference on Ray."""

__version__ = "0.1.0"
