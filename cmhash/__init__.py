"""cmhash: deep cross-modal hashing, from training recipes to a torch-free search runtime."""

__version__ = "0.1.0"
