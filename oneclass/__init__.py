"""oneclass: semi-supervised one-class classification of images."""

__version__ = "0.1.0"
