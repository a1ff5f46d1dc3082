"""caffe2torch: Caffe models in PyTorch, with proof that the numbers match."""

from converter.errors import ConverterError
from converter.io.caffemodel import read_blob, read_weights
from converter.net import Layer, Net, read_net, write_caffemodel

__version__ = "0.1.0"

__all__ = [
    "ConverterError",
    "Layer",
    "Net",
    "read_blob",
    "read_net",
    "read_weights",
    "write_caffemodel",
]
