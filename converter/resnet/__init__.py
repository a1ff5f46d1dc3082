"""ResNets with Caffe semantics: recognise one in a Caffe net, build it, fill its weights.

Recognition, the config and the weight mapping need only NumPy; the modules (and torch)
load on first use of a name that needs them, so converting a ResNet never imports torch.
"""

import importlib

from converter.resnet.config import (
    PoolConfig,
    ResNetConfig,
    StageConfig,
    kaiming_config,
    state_shapes,
)
from converter.resnet.recognize import recognize
from converter.resnet.weights import resnet_arrays, resnet_state_dict

_MODULES = (
    "BasicBlock",
    "Bottleneck",
    "CaffeResNet",
    "resnet18_caffe",
    "resnet34_caffe",
    "resnet50_caffe",
    "resnet101_caffe",
    "resnet152_caffe",
)

__all__ = [
    "PoolConfig",
    "ResNetConfig",
    "StageConfig",
    "kaiming_config",
    "recognize",
    "resnet_arrays",
    "resnet_state_dict",
    "state_shapes",
    *_MODULES,
]


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module 'converter.resnet' has no attribute '{name}'")
    value = getattr(importlib.import_module("converter.resnet.model"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
