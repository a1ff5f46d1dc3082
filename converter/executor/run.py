"""Run a ``Net`` through the executor's forward functions, layer by layer, as Caffe does."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from converter.errors import ConverterError, counted
from converter.executor.registry import FORWARD
from converter.layers import lookup
from converter.layers.norm import use_global_stats
from converter.layers.registry import unknown_layers_message
from converter.net import Layer, Net, final_writes, in_place_tops, sharing_groups


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
    final = dict(iter_blobs(net, inputs, dtype))
    return {name: final[name] for name in net.blob_names()}


def iter_blobs(
    net: Net, inputs: np.ndarray | Mapping[str, np.ndarray], dtype=np.float64
) -> Iterator[tuple[str, np.ndarray]]:
    """``run_reference`` one blob at a time: yields (name, final value) as soon as the last
    layer writing the blob has run, and lets go of each blob once it is yielded and no
    later layer reads it, so that only the blobs still needed are held (not every blob).

    Blobs come in the order their last writer runs; errors are raised before the first.
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
    return _iter_blobs(net, values, shapes, dtype)


def _iter_blobs(net: Net, values, shapes, dtype: np.dtype) -> Iterator[tuple[str, np.ndarray]]:
    groups = sharing_groups(net)
    final = final_writes(net)
    let_go: dict[str, int] = dict(final)  # held until final and until last read
    for index, layer in enumerate(net.layers):
        for name in layer.bottoms:
            let_go[name] = max(let_go[name], index)
    final_at: dict[int, list[str]] = {}
    let_go_at: dict[int, list[str]] = {}
    for name, index in final.items():
        final_at.setdefault(index, []).append(name)
        let_go_at.setdefault(let_go[name], []).append(name)
    blobs: dict[str, np.ndarray] = {}
    for index, (layer, layer_shapes) in enumerate(zip(net.layers, shapes)):
        where = f"{net.source}: layer '{layer.name}' ({layer.type})"
        if layer.type == "Input":
            tops = [values.pop(top) for top in layer.tops]
        else:
            params = _params(layer, layer_shapes.param_shapes, dtype, where)
            bottoms = [blobs[name] for name in layer.bottoms]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                tops = _forward(layer)(layer, bottoms, params, where)
            del params, bottoms
        for top, value, expected in zip(layer.tops, tops, layer_shapes.top_shapes):
            if not _fits(value.shape, tuple(expected), layer_shapes.at_most):
                raise RuntimeError(
                    f"{where}: computed shape {value.shape} for '{top}', shape inference "
                    f"says {tuple(expected)} (internal inconsistency)"
                )
            blobs[top] = value.astype(dtype, copy=False)
        del tops
        # Writing in place into a blob that shares memory (a Flatten, Reshape or Split top
        # and its bottom) writes every blob of the group, as Caffe's ShareData makes it.
        for top in in_place_tops(layer):
            for other in groups.get(top, ()):
                if other != top and other in blobs:
                    blobs[other] = blobs[top].reshape(blobs[other].shape)
        for name in final_at.get(index, ()):
            yield name, blobs[name]
        for name in let_go_at.get(index, ()):
            del blobs[name]


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
            f"{where}: needs {counted(len(expected), 'parameter blob')} of shapes {expected}, "
            f"found {len(found)} of shapes {found}"
        )
    return [np.asarray(blob, dtype=dtype) for blob in layer.blobs]
