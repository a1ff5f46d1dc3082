"""Element-wise layers: ReLU, PReLU, Sigmoid, TanH, Power, AbsVal, Dropout, Softmax, ELU,
BNLL, Threshold, Exp, Log, Clip, Swish, and the forks' ReLU6, HardSwish, HardSigmoid.

Caffe: ``src/caffe/layers/<type>_layer.cpp``; the top has the bottom's shape. In the TEST
phase Dropout copies its input (no rescaling: Caffe scales during training). ReLU6,
HardSwish and HardSigmoid are inisis/caffe's (``relu6_layer.cpp``, ``hardswish_layer.cpp``,
``hardsigmoid_layer.cpp``; rules in ``tests/fixtures/fork_layers/case.json``). Caffe (and the
fork) computes each of these correctly in place.
"""

from __future__ import annotations

import math

from converter.codegen.common import number
from converter.errors import ConverterError
from converter.layers.registry import (
    ExactPart,
    LayerCode,
    LayerShapes,
    Shape,
    canonical_axis,
    need_bottoms,
    register_layer,
    same_shape,
)


def _nn():
    """``torch.nn``, imported when a module is built (shape inference does without torch)."""
    from torch import nn

    return nn


def _modules():
    from converter.modules import activation

    return activation


def _relu_module(layer, bottoms: list[Shape], where: str):
    slope = layer.param.relu_param.negative_slope
    return _nn().LeakyReLU(slope) if slope != 0 else _nn().ReLU()


def _prelu_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    if len(bottoms[0]) < 2:  # prelu_layer.cpp: CHECK_GE(num_axes, 2)
        raise ConverterError(f"{where}: PReLU needs at least 2 axes, found {bottoms[0]}")
    channels = bottoms[0][1]
    shared = layer.param.prelu_param.channel_shared
    return LayerShapes([bottoms[0]], [() if shared else (channels,)])


def _prelu_module(layer, bottoms: list[Shape], where: str):
    channels = bottoms[0][1]
    return _modules().PReLU(() if layer.param.prelu_param.channel_shared else (channels,))


def _power_module(layer, bottoms: list[Shape], where: str):
    pp = layer.param.power_param
    return _modules().Power(pp.power, pp.scale, pp.shift)


def _softmax_module(layer, bottoms: list[Shape], where: str):
    axis = canonical_axis(layer.param.softmax_param.axis, len(bottoms[0]), where)
    return _nn().Softmax(dim=axis)


def _relu6_module(layer, bottoms: list[Shape], where: str):
    rp = layer.param.relu6_param
    if rp.negative_slope == 0 and rp.threshold == 6:
        return _nn().ReLU6()
    return _modules().ReLU6(rp.negative_slope, rp.threshold)


def _hardsigmoid_module(layer, bottoms: list[Shape], where: str):
    hp = layer.param.hardsigmoid_param  # defaults 0.2, 0.5 (ONNX's), not torch's 1/6, 1/2
    return _modules().HardSigmoid(hp.alpha, hp.beta)


def log_of_base(base: float, where: str) -> float:
    """ln(base) for Exp and Log: base -1 (the default) means e (``exp_layer.cpp``)."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise ConverterError(f"{where}: base must be strictly positive (or -1 for e), found {base}")
    return math.log(base)


def _base_checked(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    param = layer.param.exp_param if layer.type == "Exp" else layer.param.log_param
    log_of_base(param.base, where)
    return same_shape(layer, bottoms, where)


def _exp_module(layer, bottoms: list[Shape], where: str):
    ep = layer.param.exp_param
    log_base = log_of_base(ep.base, where)
    # exp_layer.cpp: outer * exp(inner * x), inner = ln(base) * scale, outer = base ^ shift
    outer = 1.0 if ep.shift == 0 else math.exp(log_base * ep.shift)
    return _modules().Exp(log_base * ep.scale, outer)


def _log_module(layer, bottoms: list[Shape], where: str):
    lp = layer.param.log_param
    return _modules().Log(lp.scale, lp.shift, 1.0 / log_of_base(lp.base, where))


def _clip_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    cp = layer.param.clip_param
    if not (cp.HasField("min") and cp.HasField("max")):
        raise ConverterError(f"{where}: Clip needs clip_param {{ min: ... max: ... }}")
    return same_shape(layer, bottoms, where)


# ----------------------------------------------------------------------------- code


def _relu_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    slope = layer.param.relu_param.negative_slope
    return LayerCode(f"F.leaky_relu({{0}}, {number(slope)})" if slope != 0 else "torch.relu({0})")


_SHARED_PRELU = '''
class SharedPReLU(nn.Module):
    """Caffe's PReLU with one slope for every channel (a 0-d weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + self.weight * torch.clamp(x, max=0)
'''


def _prelu_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    if layer.param.prelu_param.channel_shared:
        return LayerCode("{m}({0})", "SharedPReLU()", (_SHARED_PRELU,))
    channels = bottoms[0][1]
    return LayerCode("{m}({0})", f"nn.PReLU({channels})")  # max(0, x) + a_c * min(0, x)


def _power_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    pp = layer.param.power_param
    if pp.power * pp.scale == 0:  # Caffe: a constant
        value = 1.0 if pp.power == 0 else math.pow(pp.shift, pp.power)
        return LayerCode(f"torch.full_like({{0}}, {number(value)})")
    expr = "{0}"
    if pp.scale != 1:
        expr = f"{expr} * {number(pp.scale)}"
    if pp.shift != 0:
        expr = f"{expr} + {number(pp.shift)}"
    if pp.power != 1:
        base = "{0}" if expr == "{0}" else f"({expr})"
        expr = f"{base}.pow({number(pp.power)})"
    return LayerCode(expr)


def _softmax_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    axis = canonical_axis(layer.param.softmax_param.axis, len(bottoms[0]), where)
    return LayerCode(f"torch.softmax({{0}}, dim={axis})")


def _fixed(text: str):
    """An emitter writing the same expression for every layer of the type."""
    return lambda layer, bottoms, where: LayerCode(text)


def _relu6_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    rp = layer.param.relu6_param
    if rp.negative_slope == 0 and rp.threshold == 6:
        return LayerCode("F.relu6({0})")
    y = "torch.relu({0})"
    if rp.negative_slope != 0:
        y += f" + {number(rp.negative_slope)} * torch.clamp({{0}}, max=0)"
    return LayerCode(f"torch.clamp({y}, max={number(rp.threshold)})")


def _hardsigmoid_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    hp = layer.param.hardsigmoid_param
    return LayerCode(f"torch.clamp({{0}} * {number(hp.alpha)} + {number(hp.beta)}, 0.0, 1.0)")


def _exp_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    module = _exp_module(layer, bottoms, where)  # outer * exp(inner * x)
    y = "torch.exp({0})" if module.inner == 1 else f"torch.exp({{0}} * {number(module.inner)})"
    return LayerCode(y if module.outer == 1 else f"{y} * {number(module.outer)}")


def _log_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    lp = layer.param.log_param
    x = "{0}" if lp.scale == 1 else f"{{0}} * {number(lp.scale)}"
    x = x if lp.shift == 0 else f"{x} + {number(lp.shift)}"
    base_scale = 1.0 / log_of_base(lp.base, where)
    y = f"torch.log({x})"
    return LayerCode(y if base_scale == 1 else f"{y} * {number(base_scale)}")


def _clip_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    cp = layer.param.clip_param
    return LayerCode(f"{{0}}.clamp(max={number(cp.max)}).clamp(min={number(cp.min)})")


def _swish_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    beta = layer.param.swish_param.beta
    return LayerCode(
        "{0} * torch.sigmoid(" + ("{0}" if beta == 1 else f"{{0}} * {number(beta)}") + ")"
    )


def _elementwise(name: str, module, shape=same_shape, code=None, exact=None) -> None:
    register_layer(name, shape=shape, module=module, in_place=True, code=code, exact=exact)


_elementwise("ReLU", _relu_module, code=_relu_code)
_elementwise("ReLU6", _relu6_module, code=_relu6_code)
# x * max(0, min(1, x / 6 + 1 / 2)), the fork's formula
_elementwise(
    "HardSwish", lambda layer, bottoms, where: _nn().Hardswish(), code=_fixed("F.hardswish({0})")
)
_elementwise("HardSigmoid", _hardsigmoid_module, code=_hardsigmoid_code)
_elementwise("PReLU", _prelu_module, shape=_prelu_shapes, code=_prelu_code)
_elementwise(
    "Sigmoid", lambda layer, bottoms, where: _nn().Sigmoid(), code=_fixed("torch.sigmoid({0})")
)
_elementwise("TanH", lambda layer, bottoms, where: _nn().Tanh(), code=_fixed("torch.tanh({0})"))
_elementwise("Power", _power_module, code=_power_code)
_elementwise(
    "AbsVal", lambda layer, bottoms, where: _modules().AbsVal(), code=_fixed("torch.abs({0})")
)
# TEST: a copy
_elementwise("Dropout", lambda layer, bottoms, where: _nn().Identity(), code=_fixed("{0}"))
_elementwise("Softmax", _softmax_module, code=_softmax_code)
# nn.ELU is Caffe's x > 0 ? x : alpha * (exp(x) - 1)
_elementwise(
    "ELU",
    lambda layer, bottoms, where: _nn().ELU(layer.param.elu_param.alpha),
    code=lambda layer, bottoms, where: LayerCode(
        f"F.elu({{0}}, {number(layer.param.elu_param.alpha)})"
    ),
)
_elementwise(
    "BNLL",
    lambda layer, bottoms, where: _modules().BNLL(),
    code=_fixed("{0}.clamp(min=0) + torch.log1p(torch.exp(-{0}.abs()))"),
)
_elementwise(
    "Threshold",
    lambda layer, bottoms, where: _modules().Threshold(layer.param.threshold_param.threshold),
    code=lambda layer, bottoms, where: LayerCode(
        f"({{0}} > {number(layer.param.threshold_param.threshold)}).to({{0}}.dtype)"
    ),
    exact=lambda layer: {0: ExactPart("0/1 values")},
)
_elementwise("Exp", _exp_module, shape=_base_checked, code=_exp_code)
_elementwise("Log", _log_module, shape=_base_checked, code=_log_code)
_elementwise(
    "Clip",
    lambda layer, bottoms, where: _modules().Clip(
        layer.param.clip_param.min, layer.param.clip_param.max
    ),
    shape=_clip_shapes,
    code=_clip_code,
)
_elementwise(
    "Swish",
    lambda layer, bottoms, where: _modules().Swish(layer.param.swish_param.beta),
    code=_swish_code,
)
