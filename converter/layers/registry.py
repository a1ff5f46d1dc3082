"""The registry of Caffe layer types: one ``LayerType`` record per type, made by ``register_layer``.

Caffe makes a layer type known with one ``REGISTER_LAYER_CLASS`` line beside the class that
holds its ``Reshape`` (shape rule) and ``Forward``. Here one ``register_layer`` call, in the
family module of ``converter/layers/`` (or in a user's code), gives a type:

- ``shape(layer, bottoms, where) -> LayerShapes``: Caffe's shape rule. ``bottoms`` are the
  bottom blobs' shapes (tuples of ints); the result holds the top shapes, one per top, and
  the shapes of the layer's parameter blobs (what the caffemodel must hold for it);
- ``module(layer, bottoms, where) -> torch.nn.Module``: the PyTorch module; its ``forward``
  takes one tensor per bottom and returns a tensor, or a tuple with one tensor per top;
- ``weights(layer, blobs, module, where) -> {key: array}``: the module's state-dict entries
  (keys relative to the module) from the layer's caffemodel blobs; by default the blobs fill
  the module's ``weight`` and ``bias``, in that order, reshaped to their shapes;
- flags: ``in_place`` (Caffe computes it correctly with ``top == bottom``), ``shares_memory``
  (its tops share the bottom's memory in Caffe, as Split, Flatten and Reshape do), and
  ``per_bottom`` (the module runs once per bottom, one top each, as Convolution does);
- ``reference``: the NumPy float64 forward of ``converter.executor``, kept in that package's
  own table (it shares no forward code with the torch module, to stay a cross-check);
- ``code(layer, bottoms, where) -> LayerCode``: how ``convert --format code`` writes the
  layer into a standalone model.py (see ``LayerCode``); a type without it refuses that
  format. The module it writes must have the state dict of the one ``module`` builds.
- ``exact(layer) -> {top index: ExactPart}``: the tops (or parts of them) whose values are
  integers by the layer's meaning (indices, labels, 0/1), which ``verify`` compares exactly
  instead of within a float tolerance.

``layer`` is a ``converter.net.Layer`` (``.name``, ``.type``, ``.bottoms``, ``.tops``,
``.param``: its ``caffe_pb2.LayerParameter``); ``where`` is the prefix for error messages
("file: layer 'name' (Type)"). Hooks report bad input by raising ``ConverterError``.

This module imports neither torch nor ``converter.net``: shape inference (``inspect``,
reading a net, converting a ResNet) must not pay for importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from converter.errors import ConverterError, counted

if TYPE_CHECKING:
    from torch import nn

    from converter.net import Layer

Shape = tuple[int, ...]


@dataclass
class LayerShapes:
    """Shapes Caffe gives one layer for a given input: its tops and its parameter blobs.

    ``param_shapes`` is None for a layer type whose parameters this tool cannot predict.
    ``at_most`` says the top shapes are the largest the forward pass can give, for a layer
    whose output size depends on the data (DetectionOutput's rows); a top may be smaller.
    """

    top_shapes: list[Shape]
    param_shapes: list[Shape] | None
    at_most: bool = False


@dataclass(frozen=True)
class LayerCode:
    """One layer as Python source, for the straight-line ``forward`` of a generated model.py.

    ``module``: the expression building the layer's module in ``__init__`` (assigned to
    ``self.<module name>``), or None for a layer with no state, written inline. ``call``:
    the expression computing its top (or a tuple of its tops) in ``forward``, where ``{m}``
    stands for the module and ``{0}``, ``{1}``, ... for the bottoms' variables. ``helpers``:
    module-level definitions (source text) the expressions use where torch has no exact
    equivalent; each is written once into the file, constants (not a ``def`` or ``class``)
    first. Expressions and helpers may use ``torch``, ``nn``, ``F``
    (``torch.nn.functional``) and ``math``.
    """

    call: str
    module: str | None = None
    helpers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExactPart:
    """The part of a top blob whose values are integers by its layer's meaning, which a
    comparison must find equal, not close: the whole blob (``axis`` None), or positions
    ``index`` along ``axis`` (DetectionOutput's image and label columns). ``what`` names
    the values in reports ("indices", "image ids and labels")."""

    what: str
    axis: int | None = None
    index: tuple[int, ...] = ()


ShapeRule = Callable[["Layer", list[Shape], str], LayerShapes]
ModuleBuilder = Callable[["Layer", list[Shape], str], "nn.Module"]
WeightMap = Callable[["Layer", list[np.ndarray], "nn.Module", str], dict[str, np.ndarray]]
Forward = Callable[["Layer", list[np.ndarray], list[np.ndarray], str], list[np.ndarray]]
CodeEmitter = Callable[["Layer", list[Shape], str], LayerCode]
ExactTops = Callable[["Layer"], dict[int, ExactPart]]


@dataclass(frozen=True)
class LayerType:
    """Everything the converter knows about one Caffe layer type (see the module docstring).

    ``module`` is None for a type whose shape rule is known but which no module runs yet.
    """

    name: str
    shape: ShapeRule
    module: ModuleBuilder | None = None
    weights: WeightMap | None = None
    aliases: tuple[str, ...] = ()
    in_place: bool = False
    shares_memory: bool | Callable[[Layer], bool] = False
    per_bottom: bool = False
    code: CodeEmitter | None = None
    exact: ExactTops | None = None

    def map_weights(
        self, layer: Layer, blobs: list[np.ndarray], module: nn.Module, where: str
    ) -> dict[str, np.ndarray]:
        """The module's state-dict entries from ``blobs`` (``weights``, or the default)."""
        return (self.weights or weight_and_bias)(layer, blobs, module, where)

    def tops_share_memory(self, layer: Layer) -> bool:
        if callable(self.shares_memory):
            return bool(self.shares_memory(layer))
        return self.shares_memory


_TYPES: dict[str, LayerType] = {}  # every name and alias -> its record


def register_layer(
    name: str,
    *,
    shape: ShapeRule,
    module: ModuleBuilder | None = None,
    weights: WeightMap | None = None,
    reference: Forward | None = None,
    aliases: Sequence[str] = (),
    in_place: bool = False,
    shares_memory: bool | Callable[[Layer], bool] = False,
    per_bottom: bool = False,
    code: CodeEmitter | None = None,
    exact: ExactTops | None = None,
    replace: bool = False,
) -> LayerType:
    """Make Caffe layer type ``name`` (and its ``aliases``) known to the converter.

    The built-in types are registered by this same function (``converter/layers/*.py``).
    The hooks are described in this module's docstring; ``reference`` (optional) is the
    NumPy forward ``(layer, bottoms, params, where) -> [top arrays]`` that ``verify
    --reference numpy`` runs, ``params`` being the layer's blobs in the executor's dtype;
    ``exact`` (optional) says which tops hold integers by meaning (``ExactPart``).
    A name that is taken raises ConverterError unless ``replace=True``.
    """
    names = (name, *aliases)
    taken = [n for n in names if n in _TYPES]
    if taken and not replace:
        raise ConverterError(
            f"layer type {', '.join(repr(n) for n in taken)} is already registered; "
            "pass replace=True to replace it"
        )
    for old in {id(_TYPES[n]): _TYPES[n] for n in taken}.values():
        _forget(old)  # every name of a replaced type, not only those given again
    record = LayerType(
        name,
        shape,
        module,
        weights,
        tuple(aliases),
        in_place,
        shares_memory,
        per_bottom,
        code,
        exact,
    )
    for n in names:
        _TYPES[n] = record
    if reference is not None:
        from converter.executor.registry import executes

        executes(*names, replace=replace)(reference)
    return record


def unregister_layer(name: str) -> None:
    """Forget layer type ``name`` (by its registered name), its aliases and its executor
    forward; a name that is not registered raises ConverterError."""
    record = _TYPES.get(name)
    if record is None or record.name != name:
        raise ConverterError(f"layer type '{name}' is not registered under that name")
    _forget(record)


def _forget(record: LayerType) -> None:
    from converter.executor.registry import FORWARD

    for n in (record.name, *record.aliases):
        if _TYPES.get(n) is record:
            del _TYPES[n]
        FORWARD.pop(n, None)


def exact_blobs(layers: Sequence[Layer]) -> dict[str, ExactPart]:
    """Blob name -> the part of its final value that is integer by meaning (``exact``
    hooks), for the layers in network order. The last layer writing a blob decides; the
    tops of a layer sharing its bottom's memory (Split, Flatten, Reshape) keep a wholly
    integer bottom's part, and an in-place write onto one of them writes them all, as it
    does in Caffe."""
    parts: dict[str, ExactPart] = {}
    memory: dict[str, set[str]] = {}  # blob -> the blobs sharing its memory, itself included
    for layer in layers:
        record = lookup(layer.type)
        given = record.exact(layer) if record is not None and record.exact else {}
        shared = bool(layer.bottoms) and record is not None and record.tops_share_memory(layer)
        for index, top in enumerate(layer.tops):
            part = given.get(index)
            if top in layer.bottoms:  # in place: written where every alias reads
                written = memory.get(top, {top})
            else:
                memory.get(top, set()).discard(top)  # the name now holds another blob
                memory[top] = {top}
                if shared:
                    bottom = layer.bottoms[0]
                    memory[top] = memory.setdefault(bottom, {bottom})
                    memory[top].add(top)
                    inherited = parts.get(bottom)
                    if part is None and inherited is not None and inherited.axis is None:
                        part = inherited
                written = {top}
            for name in written:
                if part is None:
                    parts.pop(name, None)
                else:
                    parts[name] = part
    return parts


def lookup(type_name: str) -> LayerType | None:
    """The record of a layer type (by name or alias), or None when it is not registered."""
    return _TYPES.get(type_name)


def registered_types() -> list[str]:
    """Every registered type name and alias, sorted."""
    return sorted(_TYPES)


def supported_layer_types() -> list[str]:
    """The Caffe layer types (names and aliases) the generic module can run, sorted."""
    return sorted(name for name, record in _TYPES.items() if record.module is not None)


# ----------------------------------------------------------------------------- helpers


def weight_and_bias(
    layer: Layer, blobs: list[np.ndarray], module: Any, where: str
) -> dict[str, np.ndarray]:
    """The default weight mapping: blob 0 -> ``weight``, blob 1 -> ``bias``, for those the
    module has (not None), each reshaped to the module's tensor shape."""
    targets = [
        (key, tensor)
        for key in ("weight", "bias")
        if (tensor := getattr(module, key, None)) is not None
    ]
    if len(targets) != len(blobs):
        raise ConverterError(
            f"{where}: expected {counted(len(targets), 'blob')}, the weights have {len(blobs)}"
        )
    arrays = {}
    for (key, target), blob in zip(targets, blobs):
        shape = tuple(target.shape)
        if blob.size != math.prod(shape):
            raise ConverterError(f"{where}: blob of shape {tuple(blob.shape)} does not fit {shape}")
        arrays[key] = blob.reshape(shape)
    return arrays


def canonical_axis(axis: int, ndim: int, where: str) -> int:
    """``axis`` in ``[0, ndim)``, counting a negative one from the end as Caffe does."""
    if not -ndim <= axis < ndim:
        raise ConverterError(f"{where}: axis {axis} is out of range for a {ndim}-D blob")
    return axis % ndim


def need_bottoms(bottoms: Sequence[Shape], count: int | tuple[int, int], where: str) -> None:
    """Refuse a layer with a number of bottoms outside ``count`` (one number, or low, high)."""
    low, high = (count, count) if isinstance(count, int) else count
    if not low <= len(bottoms) <= high:
        if low == high:
            wanted = counted(low, "bottom")
        elif high >= 1 << 20:  # no real limit
            wanted = f"at least {counted(low, 'bottom')}"
        else:
            wanted = f"{low} to {high} bottoms"
        raise ConverterError(f"{where}: expected {wanted}, found {len(bottoms)}")


def same_shape(layer: Layer, bottoms: list[Shape], where: str) -> LayerShapes:
    """The shape rule of an element-wise layer without parameters: one bottom, top alike."""
    need_bottoms(bottoms, 1, where)
    return LayerShapes([bottoms[0]], [])


def describe_layer(layer: Any) -> str:
    """ "'name' (Type)" for messages; a Python layer also names the module and class its
    ``python_param`` loads, which is the code a user would have to supply.

    ``layer``: any record of a layer, a net's ``Layer`` or a ``LayerParameter`` or V1
    ``V1LayerParameter`` as read from a prototxt (a LayerParameter's own ``param`` field is
    its repeated ParamSpec, not a LayerParameter)."""
    if isinstance(layer.type, int):  # a V1 layer's type is an enum value
        from converter import caffe_pb2

        kind = caffe_pb2.V1LayerParameter.LayerType
        name = kind.Name(layer.type) if layer.type in kind.values() else str(layer.type)
        return f"'{layer.name}' ({name})"
    if layer.type == "Python":
        held = getattr(layer, "param", None)  # a Layer holds its LayerParameter there
        param = held if hasattr(held, "python_param") else layer
        pp = getattr(param, "python_param", None)
        if pp is not None:
            return f"'{layer.name}' (Python: module '{pp.module}', layer '{pp.layer}')"
    return f"'{layer.name}' ({layer.type})"


REGISTER_HINT = (
    "converter.register_layer supplies a layer type's shape rule, PyTorch module and NumPy "
    "forward (README: 'Adding a layer type'); the command line imports a file that calls it "
    "with --layers FILE.py"
)


def unknown_layers_message(source: str, layers: Sequence[Layer], missing: str) -> str:
    """One line naming every layer in ``layers`` (all of the same problem: ``missing``, e.g.
    "of a type this tool does not know"), how many of each type, and where to turn."""
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
    types = ", ".join(f"{t} x{n}" if n > 1 else t for t, n in counts.items())
    listed = ", ".join(describe_layer(layer) for layer in layers)
    return (
        f"{source}: {counted(len(layers), 'layer')} {missing} ({types}): {listed}. {REGISTER_HINT}"
    )
