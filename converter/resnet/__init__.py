"""ResNets with Caffe semantics: recognise one in a Caffe net, build it, fill its weights."""

from converter.resnet.model import (
    BasicBlock,
    Bottleneck,
    CaffeResNet,
    PoolConfig,
    ResNetConfig,
    StageConfig,
    kaiming_config,
    resnet18_caffe,
    resnet34_caffe,
    resnet50_caffe,
    resnet101_caffe,
    resnet152_caffe,
    state_shapes,
)
from converter.resnet.recognize import recognize
from converter.resnet.weights import resnet_arrays, resnet_state_dict

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CaffeResNet",
    "PoolConfig",
    "ResNetConfig",
    "StageConfig",
    "kaiming_config",
    "recognize",
    "resnet18_caffe",
    "resnet34_caffe",
    "resnet50_caffe",
    "resnet101_caffe",
    "resnet152_caffe",
    "resnet_arrays",
    "resnet_state_dict",
    "state_shapes",
]
