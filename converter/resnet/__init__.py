"""ResNets with Caffe semantics: recognise one in a Caffe net, build it, fill its weights.

Recognition, the config and the weight mapping need only NumPy; the modules (and torch)
load on first use of a name that needs them, so converting a ResNet never imports torch.
"""

from converter.lazy import lazy_names
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


__getattr__, __dir__ = lazy_names(globals(), dict.fromkeys(_MODULES, "converter.resnet.model"))
