"""Caffe blobs -> the state dict of a CaffeResNet.

BatchNorm stores ``[mean*s, var*s, [s]]`` (moving averages with their scale factor); the
following Scale layer holds gamma and (optionally) beta. Both fold into one BatchNorm2d.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from converter.errors import ConverterError, counted
from converter.net import Layer, Net
from converter.resnet.config import ResNetConfig, state_shapes

if TYPE_CHECKING:
    import torch


def bn_statistics(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of a BatchNorm layer, divided by its stored scale factor as Caffe does
    (statistics ignored when the factor is 0). Computed in float64: a float64 model then
    carries them exactly, and a float32 model rounds them once.
    """
    mean, var, factor = layer.blobs[:3]
    s = float(factor.reshape(-1)[0])
    scale = 0.0 if s == 0 else 1.0 / s
    return mean.astype(np.float64) * scale, var.astype(np.float64) * scale


def _module_kind(module: str) -> str:
    """'conv', 'bn' or 'fc', from the torchvision-style module name."""
    if module == "fc":
        return "fc"
    if module.endswith("downsample.1") or module.rsplit(".", 1)[-1].startswith("bn"):
        return "bn"
    return "conv"


def resnet_state_dict(net: Net, config: ResNetConfig) -> dict[str, torch.Tensor]:
    """Map ``net``'s weights onto the modules of ``CaffeResNet(config)`` (tensors own copies)."""
    from converter.export import owned_tensors

    return owned_tensors(resnet_arrays(net, config))


def resnet_arrays(net: Net, config: ResNetConfig) -> dict[str, np.ndarray]:
    """The state dict of ``CaffeResNet(config)`` as arrays: raw blobs are views of the
    caffemodel (nothing copied), derived BatchNorm statistics are float64."""
    source = net.weights_source or net.source
    state: dict[str, np.ndarray] = {}
    by_name: dict[str, Layer] = {}
    for layer in net.layers:
        by_name.setdefault(layer.name, layer)

    def caffe_layer(name: str, module: str, types: tuple[str, ...], blobs: int) -> Layer:
        layer = by_name.get(name)
        if layer is None:
            raise ConverterError(f"{net.source}: no layer '{name}' (for {module})")
        if layer.type not in types:
            raise ConverterError(
                f"{net.source}: layer '{name}' is a {layer.type}, expected {' or '.join(types)} "
                f"for {module}"
            )
        if len(layer.blobs) < blobs:
            raise ConverterError(
                f"{source}: layer '{name}' has {counted(len(layer.blobs), 'weight blob')}, "
                f"{module} needs {blobs}; was the net read with its caffemodel?"
            )
        return layer

    for module, names in config.caffe_layers.items():
        kind = _module_kind(module)
        if kind == "bn":
            bn = caffe_layer(names[0], module, ("BatchNorm",), 3)
            mean, var = bn_statistics(bn)
            channels = mean.shape[0]
            gamma: np.ndarray = np.ones(channels, np.float32)
            beta: np.ndarray = np.zeros(channels, np.float32)
            if len(names) > 1:
                scale = caffe_layer(names[1], module, ("Scale",), 1)
                gamma = scale.blobs[0]
                if scale.param.scale_param.bias_term:
                    beta = caffe_layer(names[1], module, ("Scale",), 2).blobs[1]
            state[f"{module}.weight"] = gamma
            state[f"{module}.bias"] = beta
            state[f"{module}.running_mean"] = mean
            state[f"{module}.running_var"] = var
            state[f"{module}.num_batches_tracked"] = np.zeros((), np.int64)
        elif kind == "fc":
            fc = caffe_layer(names[0], module, ("InnerProduct",), 1)
            weight = fc.blobs[0]
            if fc.param.inner_product_param.transpose:
                weight = np.asarray(weight).T
            state["fc.weight"] = weight
            if fc.param.inner_product_param.bias_term:
                fc = caffe_layer(names[0], module, ("InnerProduct",), 2)
                state["fc.bias"] = fc.blobs[1]
        else:
            conv = caffe_layer(names[0], module, ("Convolution",), 1)
            state[f"{module}.weight"] = conv.blobs[0]
            if conv.param.convolution_param.bias_term:
                conv = caffe_layer(names[0], module, ("Convolution",), 2)
                state[f"{module}.bias"] = conv.blobs[1]

    expected = state_shapes(config)
    problems = [
        f"{key}: expected {shape}, found {tuple(state[key].shape) if key in state else 'nothing'}"
        for key, shape in expected.items()
        if key not in state or tuple(state[key].shape) != shape
    ]
    problems += [f"{key}: not part of the model" for key in state if key not in expected]
    if problems:
        raise ConverterError(
            f"{source}: weights do not fit the recognised ResNet: {'; '.join(problems[:3])}"
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        )
    return state
