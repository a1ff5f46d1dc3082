"""Run a ``Net`` through the executor's forward functions, layer by layer, as Caffe does."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from converter.errors import ConverterError
from converter.executor.registry import FORWARD
from converter.layers import lookup
from converter.layers.norm import use_global_stats
from converter.layers.registry import unknown_layers_message
from converter.net import Layer, Net


def run_reference(
    net: Net, inputs: np.ndarray | Mapping[str, np.ndarray], dtype=np.float64
) -> dict[str, np.ndarray]:
    """Run ``net`` on ``inputs`` and return every blob as Caffe holds it after the forward.

    ``inputs`` is one array for a single-input net, or {input blob name: array}. Shapes
    may differ from the prototxt's (another batch size): everything follows the arrays.
    The result maps each name of ``net.blob_names()`` (in that order) to its final value,
    i.e. after the last in-place layer writing that blob. A layer type without a forward
    raises ConverterError naming every such layer, before anything is computed.
    """
    dtype = np.dtype(dtype)
    unknown = [layer for layer in net.layers if lookup(layer.type) is None]
    missing = "of a type this tool does not know"
    if not unknown:
        unknown = [x for x in net.layers if x.type != "Input" and _forward(x) is None]
        missing = "of a type without a NumPy forward in the executor"
    if unknown:
        raise ConverterError(unknown_layers_message(net.source, unknown, missing))
    values = _input_values(net, inputs, dtype)
    shapes = net.shapes({name: array.shape for name, array in values.items()})
    blobs: dict[str, np.ndarray] = {}
    for layer, layer_shapes in zip(net.layers, shapes):
        where = f"{net.source}: layer '{layer.name}' ({layer.type})"
        if layer.type == "Input":
            tops = [values[top] for top in layer.tops]
        else:
            params = _params(layer, layer_shapes.param_shapes, dtype, where)
            bottoms = [blobs[name] for name in layer.bottoms]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                tops = _forward(layer)(layer, bottoms, params, where)
        for top, value, expected in zip(layer.tops, tops, layer_shapes.top_shapes):
            if not _fits(value.shape, tuple(expected), layer_shapes.at_most):
                raise RuntimeError(
                    f"{where}: computed shape {value.shape} for '{top}', shape inference "
                    f"says {tuple(expected)} (internal inconsistency)"
                )
            blobs[top] = value.astype(dtype, copy=False)
    return {name: blobs[name] for name in net.blob_names()}


def _fits(shape: tuple[int, ...], expected: tuple[int, ...], at_most: bool) -> bool:
    """The computed shape is the inferred one (or, for a data-dependent top, within it)."""
    if not at_most:
        return shape == expected
    return len(shape) == len(expected) and all(a <= b for a, b in zip(shape, expected))


def _forward(layer: Layer):
    """The forward registered for the layer's type (an alias resolves to its type)."""
    record = lookup(layer.type)
    return FORWARD.get(layer.type) or (FORWARD.get(record.name) if record else None)


def _input_values(net: Net, inputs, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Map every Input top to a private copy of the caller's array, in ``dtype``."""
    names = [top for layer in net.layers if layer.type == "Input" for top in layer.tops]
    if not names:
        raise ConverterError(f"{net.source}: the net has no Input layer to feed")
    if not isinstance(inputs, Mapping):
        if len(names) != 1:
            raise ConverterError(
                f"{net.source}: the net has {len(names)} inputs ({', '.join(names)}); "
                "pass a dict {blob name: array}"
            )
        inputs = {names[0]: inputs}
    missing = [name for name in names if name not in inputs]
    extra = [name for name in inputs if name not in names]
    if missing or extra:
        raise ConverterError(
            f"{net.source}: inputs must be exactly the input blobs {names}; "
            f"missing {missing}, unknown {extra}"
        )
    return {name: np.array(inputs[name], dtype=dtype) for name in names}


def _params(layer: Layer, expected, dtype: np.dtype, where: str) -> list[np.ndarray]:
    """The layer's blobs in ``dtype``, after checking them against the implied shapes."""
    if layer.type == "BatchNorm" and not use_global_stats(layer) and not layer.blobs:
        return []  # batch statistics: the stored moving averages are not read
    expected = [tuple(shape) for shape in expected or []]
    found = [tuple(blob.shape) for blob in layer.blobs]
    if found != expected:
        raise ConverterError(
            f"{where}: needs {len(expected)} parameter blob(s) of shapes {expected}, "
            f"found {len(found)} of shapes {found}"
        )
    return [np.asarray(blob, dtype=dtype) for blob in layer.blobs]
