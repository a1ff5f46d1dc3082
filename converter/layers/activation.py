"""Element-wise layers: ReLU, PReLU, Sigmoid, TanH, Power, AbsVal, Dropout, Softmax, ...

Caffe: ``src/caffe/layers/<type>_layer.cpp``; the top has the bottom's shape. In the TEST
phase Dropout copies its input (no rescaling: Caffe scales during training). ReLU6,
HardSwish and HardSigmoid are inisis/caffe's (``relu6_layer.cpp``, ``hardswish_layer.cpp``,
``hardsigmoid_layer.cpp``; rules in ``tests/fixtures/fork_layers/case.json``).
"""

from __future__ import annotations

from converter.layers.registry import (
    LayerShapes,
    Shape,
    canonical_axis,
    need_bottoms,
    register_layer,
    same_shape,
)


def _relu_module(layer, bottoms: list[Shape], where: str):
    from torch import nn

    slope = layer.param.relu_param.negative_slope
    return nn.LeakyReLU(slope) if slope != 0 else nn.ReLU()


def _prelu_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    shared = layer.param.prelu_param.channel_shared
    return LayerShapes([bottoms[0]], [() if shared else (channels,)])


def _prelu_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.activation import PReLU

    channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    return PReLU(() if layer.param.prelu_param.channel_shared else (channels,))


def _sigmoid_module(layer, bottoms: list[Shape], where: str):
    from torch import nn

    return nn.Sigmoid()


def _tanh_module(layer, bottoms: list[Shape], where: str):
    from torch import nn

    return nn.Tanh()


def _power_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.activation import Power

    pp = layer.param.power_param
    return Power(pp.power, pp.scale, pp.shift)


def _abs_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.activation import AbsVal

    return AbsVal()


def _dropout_module(layer, bottoms: list[Shape], where: str):
    from torch import nn

    return nn.Identity()  # TEST phase: Caffe copies the input, no rescaling


def _softmax_module(layer, bottoms: list[Shape], where: str):
    from torch import nn

    return nn.Softmax(dim=canonical_axis(layer.param.softmax_param.axis, len(bottoms[0]), where))


def _relu6_module(layer, bottoms: list[Shape], where: str):
    from torch import nn

    from converter.modules.activation import ReLU6

    rp = layer.param.relu6_param
    if rp.negative_slope == 0 and rp.threshold == 6:
        return nn.ReLU6()
    return ReLU6(rp.negative_slope, rp.threshold)


def _hardswish_module(layer, bottoms: list[Shape], where: str):
    from torch import nn

    return nn.Hardswish()  # x * max(0, min(1, x / 6 + 1 / 2)), the fork's formula


def _hardsigmoid_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.activation import HardSigmoid

    hp = layer.param.hardsigmoid_param  # defaults 0.2, 0.5 (ONNX's), not torch's 1/6, 1/2
    return HardSigmoid(hp.alpha, hp.beta)


register_layer("ReLU", shape=same_shape, module=_relu_module, in_place=True)
register_layer("ReLU6", shape=same_shape, module=_relu6_module, in_place=True)
register_layer("HardSwish", shape=same_shape, module=_hardswish_module, in_place=True)
register_layer("HardSigmoid", shape=same_shape, module=_hardsigmoid_module, in_place=True)
register_layer("PReLU", shape=_prelu_shapes, module=_prelu_module, in_place=True)
register_layer("Sigmoid", shape=same_shape, module=_sigmoid_module, in_place=True)
register_layer("TanH", shape=same_shape, module=_tanh_module, in_place=True)
register_layer("Power", shape=same_shape, module=_power_module, in_place=True)
register_layer("AbsVal", shape=same_shape, module=_abs_module, in_place=True)
register_layer("Dropout", shape=same_shape, module=_dropout_module, in_place=True)
register_layer("Softmax", shape=same_shape, module=_softmax_module, in_place=True)

# Shape rules only: no module runs these yet.
for _name in ("BNLL", "ELU", "Exp", "Log", "Threshold", "Swish", "Clip"):
    register_layer(_name, shape=same_shape)
