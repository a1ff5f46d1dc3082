"""caffe2torch: Caffe models in PyTorch, with proof that the numbers match.

The readers load eagerly (NumPy and protobuf only); other names load on first use, and
only those that need PyTorch import it: ``caffe2torch inspect``, ``read_net`` and the
conversion of a ResNet to safetensors do not pay for importing torch. ``register_layer``
makes a layer type known (its shape rule, PyTorch module, weights and NumPy forward).
"""

from converter.deploy import DeployNetWarning
from converter.errors import ConverterError
from converter.io.caffemodel import read_blob, read_weights
from converter.layers import register_layer, unregister_layer
from converter.lazy import lazy_names
from converter.net import IgnoredLayersWarning, Layer, Net, read_net, write_caffemodel

__version__ = "0.1.0"

_LAZY = {
    "NonFiniteWeightsWarning": "converter.conversion",
    "blobs": "converter.api",
    "build_model": "converter.api",
    "convert": "converter.conversion",
    "load": "converter.api",
    "stream_blobs": "converter.api",
    "CaffeResNet": "converter.resnet",
    "recognize": "converter.resnet",
    "resnet18_caffe": "converter.resnet",
    "resnet34_caffe": "converter.resnet",
    "resnet50_caffe": "converter.resnet",
    "resnet101_caffe": "converter.resnet",
    "resnet152_caffe": "converter.resnet",
}

__all__ = [
    "ConverterError",
    "DeployNetWarning",
    "IgnoredLayersWarning",
    "Layer",
    "Net",
    "read_blob",
    "read_net",
    "read_weights",
    "register_layer",
    "unregister_layer",
    "write_caffemodel",
    *_LAZY,
]


__getattr__, __dir__ = lazy_names(globals(), _LAZY)
