"""The one representation of a Caffe net that every later stage reads, and Caffe's shape rules.

A ``Net`` is an ordered list of ``Layer`` objects in Caffe's TEST phase. Each layer keeps
its upgraded ``LayerParameter`` (typed parameters with Caffe's defaults) and its blobs as
NumPy arrays. ``Net.shapes()`` runs Caffe's shape inference for a given input shape.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.io.caffemodel import StoredLayer, read_caffemodel, write_layers
from converter.io.prototxt import read_prototxt
from converter.layers import (  # noqa: F401  (geometry helpers: their old home was here)
    LayerShapes,
    PoolGeometry,
    Shape,
    canonical_axis,
    conv_geometry,
    lookup,
    pool_geometry,
    reshape_shape,
    slice_bounds,
)
from converter.layers.registry import unknown_layers_message
from converter.layers.shape import input_shapes as declared_input_shapes


@dataclass
class Layer:
    """One Caffe layer: ``param`` is its LayerParameter, ``blobs`` its learned arrays."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    param: caffe_pb2.LayerParameter
    blobs: list[np.ndarray] = field(default_factory=list)

    @property
    def in_place(self) -> bool:
        return bool(self.tops) and self.tops == self.bottoms[: len(self.tops)]


@dataclass
class Net:
    """A Caffe net in the TEST phase, with the blobs of a caffemodel when one was given."""

    name: str
    layers: list[Layer]
    source: str = "<net>"
    weights_source: str | None = None

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def input_shapes(self) -> dict[str, Shape]:
        """Blob name -> shape for every top of the net's Input layers."""
        shapes: dict[str, Shape] = {}
        for layer in self.layers:
            if layer.type == "Input":
                where = f"{self.source}: Input layer '{layer.name}'"
                shapes.update(zip(layer.tops, declared_input_shapes(layer, where)))
        return shapes

    def blob_names(self) -> list[str]:
        """Every blob name in the order a forward pass first produces it."""
        names: dict[str, None] = {}
        for layer in self.layers:
            names.update(dict.fromkeys(layer.tops))
        return list(names)

    def outputs(self) -> list[str]:
        """Blobs produced but not consumed later: what Caffe's ``net.forward()`` returns."""
        available: dict[str, None] = {}
        for layer in self.layers:
            for bottom in layer.bottoms:
                available.pop(bottom, None)
            available.update(dict.fromkeys(layer.tops))
        return list(available)

    def shapes(self, input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[LayerShapes]:
        """Caffe's shape inference, one entry per layer; ``input_shapes`` overrides inputs."""
        return infer_shapes(self, input_shapes)

    def blob_shapes(
        self, input_shapes: Mapping[str, Sequence[int]] | None = None
    ) -> dict[str, Shape]:
        """Final shape of every blob (after in-place layers) for the given input."""
        result: dict[str, Shape] = {}
        for layer, shapes in zip(self.layers, self.shapes(input_shapes)):
            result.update(zip(layer.tops, shapes.top_shapes))
        return result


# ----------------------------------------------------------------------------- reading


def read_net(prototxt: str | os.PathLike, caffemodel: str | os.PathLike | None = None) -> Net:
    """Read a net definition, and its weights when a caffemodel is given.

    Checks the pair the way Caffe does when it copies trained layers, only stricter: every
    layer that needs parameters must find them, with the shapes the prototxt implies.
    """
    with gc_paused():
        net = net_from_param(read_prototxt(prototxt), str(prototxt))
        if caffemodel is not None:
            attach_weights(net, read_caffemodel(caffemodel), str(caffemodel))
    return net


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a bounded burst of work.

    Reading and mapping a net make many small objects but no reference cycles; the
    allocations alone can trigger a full collection over everything imported (with torch,
    hundreds of thousands of objects), which costs more than reading a prototxt.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def net_from_param(param: caffe_pb2.NetParameter, source: str = "<net>") -> Net:
    """Build a Net (TEST phase, no weights) from an upgraded NetParameter."""
    layers = []
    seen_names: set[str] = set()
    for lp in param.layer:
        if not _included_in_test(lp, param.state):
            continue
        if lp.name in seen_names:
            raise ConverterError(f"{source}: layer name '{lp.name}' is used twice")
        seen_names.add(lp.name)
        layers.append(Layer(lp.name, lp.type, list(lp.bottom), list(lp.top), lp))
    if not layers:
        raise ConverterError(f"{source}: the net has no layers")
    net = Net(name=param.name, layers=layers, source=source)
    _check_wiring(net)
    return net


def _rule_met(rule: caffe_pb2.NetStateRule, state: caffe_pb2.NetState) -> bool:
    phase = caffe_pb2.TEST
    level = state.level
    stages = set(state.stage)
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def _included_in_test(lp: caffe_pb2.LayerParameter, state: caffe_pb2.NetState) -> bool:
    included = not lp.include
    for rule in lp.exclude:
        if _rule_met(rule, state):
            included = False
    for rule in lp.include:
        if _rule_met(rule, state):
            included = True
    return included


def _check_wiring(net: Net) -> None:
    available: set[str] = set()
    for layer in net.layers:
        for bottom in layer.bottoms:
            if bottom not in available:
                raise ConverterError(
                    f"{net.source}: layer '{layer.name}' reads blob '{bottom}', "
                    "which no earlier layer produces"
                )
        available.update(layer.tops)


def attach_weights(net: Net, stored: list[StoredLayer], weights_source: str) -> None:
    """Give each layer its stored blobs after checking names, counts and shapes."""
    by_name: dict[str, StoredLayer] = {}
    for item in stored:
        if item.name in by_name and item.blobs and by_name[item.name].blobs:
            raise ConverterError(f"{weights_source}: layer '{item.name}' is stored twice")
        if item.blobs or item.name not in by_name:
            by_name[item.name] = item
    try:
        expected_all = net.shapes()
    except ConverterError:
        expected_all = [LayerShapes([], None)] * len(net.layers)
    problems: list[str] = []
    for layer, shapes in zip(net.layers, expected_all):
        item = by_name.pop(layer.name, None)
        expected = shapes.param_shapes
        if item is None or not item.blobs:
            if expected:
                problems.append(
                    f"layer '{layer.name}' ({layer.type}) needs {len(expected)} blob(s) "
                    "but the caffemodel has none for it"
                )
            continue
        if expected is not None and len(item.blobs) != len(expected):
            problems.append(
                f"layer '{layer.name}' ({layer.type}): the prototxt implies "
                f"{len(expected)} blob(s) {_fmt(expected)}, the caffemodel has {len(item.blobs)} "
                f"{_fmt([b.shape for b in item.blobs])}"
            )
            continue
        blobs = []
        for index, (blob, legacy) in enumerate(zip(item.blobs, item.legacy_dims)):
            if expected is None:
                blobs.append(blob)
                continue
            want = tuple(expected[index])
            if tuple(blob.shape) == want:
                blobs.append(blob)
            elif legacy and _legacy_matches(blob.shape, want):
                blobs.append(blob.reshape(want))
            else:
                problems.append(
                    f"layer '{layer.name}' blob {index}: the prototxt implies shape {want}, "
                    f"the caffemodel has {tuple(blob.shape)}"
                )
        layer.blobs = blobs
    extra = [name for name, item in by_name.items() if item.blobs]
    if extra:
        listed = ", ".join(f"'{n}'" for n in extra[:10]) + (" ..." if len(extra) > 10 else "")
        problems.append(
            f"{len(extra)} layer(s) with weights are not in the prototxt {net.source}: {listed}"
        )
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConverterError(f"{weights_source}: does not match {net.source}: {problems[0]}{more}")
    net.weights_source = weights_source


def _legacy_matches(legacy: Sequence[int], want: Shape) -> bool:
    """Caffe's ShapeEquals for num/channels/height/width blobs: right-aligned, padded with 1."""
    return len(want) <= 4 and tuple(legacy) == (1,) * (4 - len(want)) + tuple(want)


def _fmt(shapes) -> str:
    return "[" + ", ".join(str(tuple(s)) for s in shapes) + "]"


# ----------------------------------------------------------------------------- shapes


def infer_shapes(
    net: Net, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> list[LayerShapes]:
    """Run Caffe's Reshape logic over the net, layer by layer, with each type's shape rule.

    ``input_shapes`` (blob name -> shape) overrides what the Input layers declare. Layer
    types without a registered rule raise one ConverterError naming every such layer.
    """
    unknown = [layer for layer in net.layers if lookup(layer.type) is None]
    if unknown:
        raise ConverterError(
            unknown_layers_message(net.source, unknown, "of a type this tool does not know")
        )
    blobs: dict[str, Shape] = {}
    overrides = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    result = []
    for layer in net.layers:
        where = f"{net.source}: layer '{layer.name}' ({layer.type})"
        shapes = lookup(layer.type).shape(layer, [blobs[b] for b in layer.bottoms], where)
        if layer.type == "Input":
            shapes.top_shapes = [overrides.get(t, s) for t, s in zip(layer.tops, shapes.top_shapes)]
        if len(shapes.top_shapes) != len(layer.tops):
            raise ConverterError(
                f"{where}: expected {len(shapes.top_shapes)} top(s), found {len(layer.tops)}"
            )
        for top, shape in zip(layer.tops, shapes.top_shapes):
            if any(d < 0 for d in shape):
                raise ConverterError(f"{where}: computed a negative size {shape} for '{top}'")
            blobs[top] = tuple(int(d) for d in shape)
        result.append(shapes)
    return result


def write_caffemodel(net: Net, path: str | os.PathLike) -> None:
    """Write ``net``'s layers and blobs as a binary caffemodel Caffe can load (atomically).

    Each layer is stored with its parameters, as Caffe's ``net.save`` does; blob data is
    streamed from the arrays without building protobuf messages for it.
    """

    def layers():
        for layer in net.layers:
            header = caffe_pb2.LayerParameter()
            header.CopyFrom(layer.param)
            del header.blobs[:]
            yield header.SerializeToString(), layer.blobs

    write_layers(path, net.name, layers())
