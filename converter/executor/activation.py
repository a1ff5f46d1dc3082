"""Element-wise layers in NumPy: ReLU, PReLU, Power, Sigmoid, TanH, AbsVal, Dropout, ReLU6,
HardSwish, HardSigmoid."""

from __future__ import annotations

import numpy as np

from converter.errors import ConverterError
from converter.executor.common import broadcast
from converter.executor.registry import executes


@executes("ReLU")
def _relu(layer, bottoms, params, where):
    x, slope = bottoms[0], layer.param.relu_param.negative_slope
    return [np.maximum(x, 0) + slope * np.minimum(x, 0)]


@executes("PReLU")
def _prelu(layer, bottoms, params, where):
    x = bottoms[0]  # at least 2 axes: the shape rule checked
    slope = params[0]
    slope = slope.reshape(()) if slope.ndim == 0 else broadcast(slope, x.ndim, 1)
    return [np.maximum(x, 0) + slope * np.minimum(x, 0)]


@executes("Power")
def _power(layer, bottoms, params, where):
    pp = layer.param.power_param
    x = bottoms[0]
    if pp.power == 0 or pp.scale == 0:  # Caffe fills a constant, even where x is inf/NaN
        value = 1.0 if pp.power == 0 else np.power(np.float64(pp.shift), pp.power)
        return [np.full_like(x, value)]
    return [np.power(pp.shift + pp.scale * x, pp.power)]


@executes("Sigmoid")
def _sigmoid(layer, bottoms, params, where):
    return [1.0 / (1.0 + np.exp(-bottoms[0]))]


@executes("TanH")
def _tanh(layer, bottoms, params, where):
    return [np.tanh(bottoms[0])]


@executes("AbsVal")
def _abs(layer, bottoms, params, where):
    return [np.abs(bottoms[0])]


@executes("Dropout")
def _dropout(layer, bottoms, params, where):
    return [bottoms[0].copy()]  # identity in the TEST phase


@executes("ReLU6")
def _relu6(layer, bottoms, params, where):
    x, rp = bottoms[0], layer.param.relu6_param
    return [np.minimum(np.maximum(x, 0) + rp.negative_slope * np.minimum(x, 0), rp.threshold)]


@executes("HardSwish")
def _hardswish(layer, bottoms, params, where):
    x = bottoms[0]
    return [x * np.maximum(0.0, np.minimum(1.0, x / 6.0 + 0.5))]


@executes("HardSigmoid")
def _hardsigmoid(layer, bottoms, params, where):
    hp = layer.param.hardsigmoid_param
    return [np.maximum(0.0, np.minimum(1.0, hp.alpha * bottoms[0] + hp.beta))]


@executes("ELU")
def _elu(layer, bottoms, params, where):
    x, alpha = bottoms[0], layer.param.elu_param.alpha
    return [np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1))]


@executes("BNLL")
def _bnll(layer, bottoms, params, where):
    return [np.logaddexp(0.0, bottoms[0])]  # log(1 + exp(x))


@executes("Threshold")
def _threshold(layer, bottoms, params, where):
    x = bottoms[0]
    return [np.where(x > layer.param.threshold_param.threshold, 1.0, 0.0).astype(x.dtype)]


def _base(base: float, where: str) -> float:
    if base == -1:
        return np.e
    if not base > 0:
        raise ConverterError(f"{where}: base must be strictly positive (or -1 for e), found {base}")
    return base


@executes("Exp")
def _exp(layer, bottoms, params, where):
    ep = layer.param.exp_param
    return [np.power(_base(ep.base, where), ep.shift + ep.scale * bottoms[0])]


@executes("Log")
def _log(layer, bottoms, params, where):
    lp = layer.param.log_param
    return [np.log(lp.shift + lp.scale * bottoms[0]) / np.log(_base(lp.base, where))]


@executes("Clip")
def _clip(layer, bottoms, params, where):
    cp = layer.param.clip_param
    return [np.maximum(cp.min, np.minimum(cp.max, bottoms[0]))]


@executes("Swish")
def _swish(layer, bottoms, params, where):
    x = bottoms[0]
    return [x / (1.0 + np.exp(-layer.param.swish_param.beta * x))]
