"""caffe2torch: Caffe models in PyTorch, with proof that the numbers match."""

__version__ = "0.1.0"

from converter.api import NonFiniteWeightsWarning, blobs, build_model, convert, load  # noqa: E402
from converter.errors import ConverterError  # noqa: E402
from converter.io.caffemodel import read_blob, read_weights  # noqa: E402
from converter.net import Layer, Net, read_net, write_caffemodel  # noqa: E402
from converter.resnet import (  # noqa: E402
    CaffeResNet,
    recognize,
    resnet18_caffe,
    resnet34_caffe,
    resnet50_caffe,
    resnet101_caffe,
    resnet152_caffe,
)

__all__ = [
    "CaffeResNet",
    "ConverterError",
    "NonFiniteWeightsWarning",
    "Layer",
    "Net",
    "blobs",
    "build_model",
    "convert",
    "load",
    "read_blob",
    "read_net",
    "read_weights",
    "recognize",
    "resnet18_caffe",
    "resnet34_caffe",
    "resnet50_caffe",
    "resnet101_caffe",
    "resnet152_caffe",
    "write_caffemodel",
]
