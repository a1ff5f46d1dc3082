"""The one representation of a Caffe net that every later stage reads, and Caffe's shape rules.

A ``Net`` is an ordered list of ``Layer`` objects in Caffe's TEST phase. Each layer keeps
its upgraded ``LayerParameter`` (typed parameters with Caffe's defaults) and its blobs as
NumPy arrays. ``Net.shapes()`` runs Caffe's shape inference for a given input shape.
"""

from __future__ import annotations

import contextlib
import gc
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from converter import caffe_pb2
from converter.deploy import DeployNetWarning, InputShapes, to_deploy
from converter.errors import ConverterError, counted
from converter.io import sniff
from converter.io.caffemodel import StoredLayer, read_weight_file, write_layers
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
    """A Caffe net in the TEST phase, with the blobs of a caffemodel when one was given.

    ``changes``: how reading turned the file into a deploy net (empty for a deploy file
    read as it is). ``weights_format``: the form the weights came in ("caffemodel",
    "gzip-compressed caffemodel", "hdf5", ...); ``weights_dtype``: the stored precision of the
    blobs the net uses ("float32", "float16", or e.g. "float16+float32" when mixed).
    """

    name: str
    layers: list[Layer]
    source: str = "<net>"
    weights_source: str | None = None
    changes: list[str] = field(default_factory=list)
    weights_format: str | None = None
    weights_dtype: str | None = None
    # input blob -> why its shape is unknown (``read_net(open_shapes=True)``): shapes stop
    # at its layer
    open_inputs: dict[str, str] = field(default_factory=dict)

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
        """Blobs produced but not consumed later (inputs no layer reads included): what
        Caffe's ``net.forward()`` returns, in Caffe's order, which is by name: ``Net::Init``
        (net.cpp) keeps them in a ``std::set<string>`` and lists them as it iterates."""
        return sorted(self.outputs_by_production())

    def outputs_by_production(self) -> list[str]:
        """``outputs()`` in the order the forward pass last writes them (the last one is
        the net's final output)."""
        available: dict[str, None] = {}
        for layer in self.layers:
            for bottom in layer.bottoms:
                available.pop(bottom, None)
            available.update(dict.fromkeys(layer.tops))  # in place: popped just above
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


def read_net(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike | None = None,
    input_shapes: InputShapes = None,
    fill_shape: Sequence[int] | None = None,
    open_shapes: bool = False,
) -> Net:
    """Read a net definition, and its weights when a caffemodel is given.

    Checks the pair the way Caffe does when it copies trained layers, only stricter: every
    layer that needs parameters must find them, with the shapes the prototxt implies.
    A training net (train_val) is read as the deploy net Caffe runs (``converter.deploy``);
    ``input_shapes`` (``{input blob: shape}``, or one shape for a one-input net) gives the
    shapes the file cannot say, or replaces declared ones; ``fill_shape`` (the shape of the
    input array verify runs on) gives what the file cannot say where it fits and
    ``input_shapes`` does not (``converter.deploy.to_deploy``). The weights may be a binary
    caffemodel (float, double or half precision, or compressed) or Caffe's HDF5 weights.
    ``open_shapes`` (``inspect``): a data layer whose shape neither completes stays an
    Input without a shape (``Net.open_inputs`` says why; ``Net.shapes`` raises there) rather
    than a ConverterError.
    """
    with gc_paused():
        if caffemodel is not None:
            sniff.check_pair(prototxt, caffemodel)
        param = read_prototxt(prototxt)
        net = net_from_param(param, str(prototxt), input_shapes, fill_shape, open_shapes)
        if caffemodel is not None:
            weights = read_weight_file(caffemodel)
            last = weights.format == "hdf5"
            attach_weights(
                net, weights.layers, str(caffemodel), same_name="last" if last else "first"
            )
            net.weights_format = weights.format
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


def net_from_param(
    param: caffe_pb2.NetParameter,
    source: str = "<net>",
    input_shapes: InputShapes = None,
    fill_shape: Sequence[int] | None = None,
    open_shapes: bool = False,
) -> Net:
    """Build a Net (TEST phase, no weights) from an upgraded NetParameter.

    Layers of the TEST phase are kept (Caffe's include/exclude rules); a training net
    becomes the deploy net Caffe runs, with one DeployNetWarning saying what changed
    (``converter.deploy.to_deploy``, which also applies ``input_shapes`` and
    ``fill_shape``; ``open_shapes``: a data layer's shape neither completes is left
    open, ``Net.open_inputs`` saying why, instead of raising). Layer names may
    repeat, as Caffe allows; ``attach_weights`` says which of them receive stored blobs.
    """
    kept = [lp for lp in param.layer if _included_in_test(lp, param.state)]
    left_out = len(param.layer) - len(kept)
    unfilled: dict[str, str] | None = {} if open_shapes else None
    deploy, changes = to_deploy(kept, source, input_shapes, left_out, fill_shape, unfilled)
    if changes:
        warnings.warn(f"{source}: {'; '.join(changes)}", DeployNetWarning, stacklevel=2)
    layers = [Layer(lp.name, lp.type, list(lp.bottom), list(lp.top), lp) for lp in deploy]
    if not layers:
        raise ConverterError(f"{source}: the net has no layers")
    net = Net(
        name=param.name, layers=layers, source=source, changes=changes, open_inputs=unfilled or {}
    )
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


class IgnoredLayersWarning(UserWarning):
    """The caffemodel holds trained layers the prototxt does not use; Caffe ignores them too."""


def attach_weights(
    net: Net, stored: list[StoredLayer], weights_source: str, same_name: str = "first"
) -> None:
    """Give each layer its stored blobs after checking names, counts and shapes.

    Caffe copies trained blobs by layer name (``Net::CopyTrainedLayersFrom``, net.cpp). A
    stored layer whose name the net lacks is ignored (Caffe logs "Ignoring source layer";
    here one IgnoredLayersWarning names them all). When several net layers share a name,
    one of them receives the stored blobs: from a binary caffemodel the FIRST (Caffe
    searches ``layer_names_`` from the start), from HDF5 weights the LAST
    (``CopyTrainedLayersFromHDF5`` looks the name up in ``layer_names_index_``, where a later
    layer overwrites an earlier one); ``same_name`` is "first" or "last" accordingly. The
    other layers of that name receive nothing, so one that needs parameters is an error
    (Caffe would run it with its filler's values). A layer with parameters but no stored
    blobs is an error, as is a stored blob of another shape.
    """
    by_name: dict[str, StoredLayer] = {}
    for item in stored:
        if item.name in by_name and item.blobs and by_name[item.name].blobs:
            raise ConverterError(f"{weights_source}: layer '{item.name}' is stored twice")
        if item.blobs or item.name not in by_name:
            by_name[item.name] = item
    receiver: dict[str, int] = {}
    for index, layer in enumerate(net.layers):
        if same_name == "last" or layer.name not in receiver:
            receiver[layer.name] = index
    try:
        expected_all = net.shapes()
    except ConverterError:
        expected_all = [LayerShapes([], None)] * len(net.layers)
    problems: list[str] = []
    dtypes: set[str] = set()
    for position, (layer, shapes) in enumerate(zip(net.layers, expected_all)):
        named = by_name.get(layer.name)
        item = named if receiver[layer.name] == position else None
        expected = shapes.param_shapes
        if item is None or not item.blobs:
            if expected:
                elsewhere = named is not None and named.blobs and item is None
                problems.append(
                    f"layer '{layer.name}' ({layer.type}) needs {counted(len(expected), 'blob')} "
                    "but the caffemodel has none for it"
                    + (" (another layer of that name receives them)" if elsewhere else "")
                )
            continue
        if expected is not None and len(item.blobs) != len(expected):
            problems.append(
                f"layer '{layer.name}' ({layer.type}): the prototxt implies "
                f"{counted(len(expected), 'blob')} {_fmt(expected)}, the caffemodel has "
                f"{len(item.blobs)} {_fmt([b.shape for b in item.blobs])}"
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
        dtypes.update(item.dtypes)
    if problems:
        more = f" (and {counted(len(problems) - 1, 'more problem')})" if len(problems) > 1 else ""
        raise ConverterError(f"{weights_source}: does not match {net.source}: {problems[0]}{more}")
    ignored = [name for name, item in by_name.items() if item.blobs and name not in receiver]
    if ignored:
        listed = ", ".join(f"'{n}'" for n in ignored[:10]) + (" ..." if len(ignored) > 10 else "")
        warnings.warn(
            f"{weights_source}: ignoring {counted(len(ignored), 'trained layer')} that "
            f"{net.source} does not use, as Caffe does: {listed}",
            IgnoredLayersWarning,
            stacklevel=3,
        )
    net.weights_source = weights_source
    net.weights_dtype = "+".join(sorted(dtypes)) if dtypes else None


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
        unknown_input = next((net.open_inputs[t] for t in layer.tops if t in net.open_inputs), 0)
        if unknown_input:
            raise ConverterError(unknown_input)
        shapes = lookup(layer.type).shape(layer, [blobs[b] for b in layer.bottoms], where)
        if layer.type == "Input":
            shapes.top_shapes = [overrides.get(t, s) for t, s in zip(layer.tops, shapes.top_shapes)]
        if len(shapes.top_shapes) != len(layer.tops):
            raise ConverterError(
                f"{where}: expected {counted(len(shapes.top_shapes), 'top')}, "
                f"found {len(layer.tops)}"
            )
        for top, shape in zip(layer.tops, shapes.top_shapes):
            if any(d < 0 for d in shape):
                raise ConverterError(f"{where}: computed a negative size {shape} for '{top}'")
            blobs[top] = tuple(int(d) for d in shape)
        result.append(shapes)
    return result


def net_definition(net: Net) -> caffe_pb2.NetParameter:
    """The net as Caffe would read it, without blobs or include/exclude rules: a deploy
    NetParameter (for a training net, the deploy net it was read as)."""
    param = caffe_pb2.NetParameter(name=net.name)
    for layer in net.layers:
        lp = param.layer.add()
        lp.CopyFrom(layer.param)
        del lp.blobs[:]
        lp.ClearField("include")
        lp.ClearField("exclude")
    return param


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


# ----------------------------------------------------------------------------- blob memory


def sharing_groups(net: Net) -> dict[str, tuple[str, ...]]:
    """Blob name -> every blob sharing its memory in Caffe, itself included: a Flatten,
    Reshape or Split top shares its bottom's data (``ShareData`` in those layers' Reshape;
    the registry's ``shares_memory`` flag), and so on along chains. Blobs that share with
    no other are absent."""
    group_of: dict[str, set[str]] = {}

    def join(a: str, b: str) -> None:
        merged = group_of.get(a, {a}) | group_of.get(b, {b})
        for name in merged:
            group_of[name] = merged

    for layer in net.layers:
        record = lookup(layer.type)
        if record is not None and record.tops_share_memory(layer) and layer.bottoms:
            for top in layer.tops:
                join(layer.bottoms[0], top)
    return {name: tuple(sorted(group)) for name, group in group_of.items()}


def in_place_tops(layer: Layer) -> list[str]:
    """The tops a layer writes in place (top i == bottom i, as Caffe pairs them)."""
    return [
        top
        for index, top in enumerate(layer.tops)
        if index < len(layer.bottoms) and layer.bottoms[index] == top
    ]


def batched_inputs(input_shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """The inputs that must be given one batch size (axis 0): all of them, when a net has
    several and declares them all with the same first size (a net's inputs are combined
    sample by sample: Caffe's Eltwise and Concat check their bottoms' shapes, and the
    exported program shares one batch dimension among them); none otherwise."""
    shapes = list(input_shapes.values())
    if len(shapes) < 2 or any(len(s) == 0 or s[0] != shapes[0][0] for s in shapes):
        return []
    return list(input_shapes)


def final_writes(net: Net) -> dict[str, int]:
    """Blob -> index of the layer after which the blob holds its final value (what Caffe's
    ``net.blobs[name]`` shows after the forward pass): the last layer writing it, or
    writing in place a blob of its sharing group (``sharing_groups``), which changes it too.
    Blobs are listed in the order a forward pass first produces them."""
    groups = sharing_groups(net)
    final: dict[str, int] = {}
    for index, layer in enumerate(net.layers):
        for top in layer.tops:
            final[top] = index
        for top in in_place_tops(layer):
            for other in groups.get(top, ()):
                final[other] = index
    return final
