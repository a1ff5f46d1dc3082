"""Any Caffe net made of supported layers, as one ``torch.nn.Module`` with Caffe's exact semantics.

``CaffeGraph`` holds one submodule per Caffe layer and runs them in the net's order on a
dictionary of named blobs, the way Caffe's ``Net::Forward`` does: an in-place layer
(``top == bottom``) replaces the blob's value, so ``forward_blobs()`` returns what
``net.blobs[name]`` holds after Caffe's forward pass. Blobs that Caffe makes share memory
(Split, Flatten, Reshape, a one-input Concat, a one-output Slice) are kept in step when an
in-place layer later writes to one of them.

Module names are the Caffe layer names made into Python identifiers: every character
outside ``[A-Za-z0-9_]`` becomes ``_``, a leading digit gets a ``layer_`` prefix, and a name
that is taken (by an earlier layer or an ``nn.Module`` attribute) gets ``_2``, ``_3``, ...
``CaffeGraph.module_names`` maps each Caffe layer name to its module name; when layers share
a name (Caffe allows it), to the last one's, as Caffe's ``layer_by_name`` does.

State dict keys (``<m>`` is the module name; shapes are Caffe's blob shapes):

- Convolution / Deconvolution: ``<m>.weight`` (blob 0, the layout torch uses too),
  ``<m>.bias`` (blob 1, when ``bias_term``).
- InnerProduct: ``<m>.weight`` (blob 0: ``(N, K)``, or ``(K, N)`` with ``transpose``),
  ``<m>.bias``.
- BatchNorm: buffers ``<m>.running_mean`` and ``<m>.running_var``: blobs 0 and 1 already
  multiplied by Caffe's factor (``0`` if the stored scale factor is 0, else ``1 / factor``).
- Scale: ``<m>.weight`` (gamma, absent in the two-input form), ``<m>.bias`` (beta).
- Bias: ``<m>.bias``. PReLU: ``<m>.weight`` (``(C,)``, or ``()`` when channel-shared).
- Embed: ``<m>.weight`` (``(input_dim, num_output)``), ``<m>.bias``. Parameter:
  ``<m>.weight`` (the blob its top is).

Each layer type is one registration in ``converter/layers/`` (its shape rule, module builder
and weight mapping); this module only drives them.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from google.protobuf import text_format
from torch import nn

from converter.errors import ConverterError, InputsError, counted, noun
from converter.export import owned_tensors
from converter.io.prototxt import parse_prototxt
from converter.layers import LayerType, lookup, supported_layer_types
from converter.layers.registry import describe_layer, unknown_layers_message
from converter.net import (
    Layer,
    Net,
    batched_inputs,
    final_writes,
    net_definition,
    net_from_param,
    sharing_groups,
)

__all__ = ["CaffeGraph", "graph_arrays", "supported_layer_types"]


# ----------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class _Step:
    module: str
    layer: str  # the Caffe layer's name
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    each_bottom: bool  # the module runs once per bottom (a Convolution's bottom/top pairs)
    aliases: tuple[tuple[str, tuple[str, ...]], ...]  # in-place top -> blobs sharing its data


class CaffeGraph(nn.Module):
    """A Caffe net as a module: one submodule per layer, run in Caffe's order.

    Build it with ``from_net`` (structure and weights from a ``Net``) or ``from_config``
    (structure only, then ``load_state_dict``). ``forward(*inputs)`` takes one tensor per
    net input (``input_names`` order) and returns what Caffe's ``net.forward()`` returns:
    the output blob of a net with one output, else a tuple of every output blob in
    ``output_names`` order (Caffe's: by name). ``output_name`` is the output the net
    writes last (its only one, when it has one).
    """

    def __init__(self, net: Net, input_shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__()
        _check_supported(net)
        shapes = net.shapes(input_shapes)
        blob_shapes: dict[str, tuple[int, ...]] = {}
        self.input_names: list[str] = list(net.input_shapes())
        self.input_shapes = {
            name: tuple(int(d) for d in (input_shapes or {}).get(name, shape))
            for name, shape in net.input_shapes().items()
        }
        self._batched = batched_inputs(self.input_shapes)  # checked in _run
        self.output_names: list[str]
        self.output_names, self.output_name = _outputs(net)
        self.module_names: dict[str, str] = {}
        self._prototxt = _definition_text(net)
        # Set before the layers are added so that no module name can take these attributes.
        self._steps: list[_Step] = []
        self._blob_names = set(net.blob_names())
        self._release: dict[int, list[str]] = {}
        groups = sharing_groups(net)
        steps = []
        produced: set[str] = set()
        for layer, layer_shapes in zip(net.layers, shapes):
            where = f"{net.source}: layer '{layer.name}' ({layer.type})"
            record = _record(layer)
            in_place = _check_tops(layer, record, produced, where)
            bottom_shapes = [blob_shapes[b] for b in layer.bottoms]
            module = record.module(layer, bottom_shapes, where)
            name = self._unique_name(layer.name)
            self.module_names[layer.name] = name
            self.add_module(name, module)
            aliases = tuple(
                (top, tuple(b for b in groups.get(top, ()) if b != top)) for top in in_place
            )
            steps.append(
                _Step(
                    name,
                    layer.name,
                    layer.type,
                    tuple(layer.bottoms),
                    tuple(layer.tops),
                    record.per_bottom and len(layer.bottoms) > 1,
                    tuple(a for a in aliases if a[1]),
                )
            )
            produced.update(layer.tops)
            blob_shapes.update(zip(layer.tops, layer_shapes.top_shapes))
        self._steps = steps
        self._release = _release_points(steps)
        self._stream_points = _stream_points(steps, final_writes(net))
        self.eval()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_net(cls, net: Net) -> CaffeGraph:
        """Structure from ``net``'s layers; weights from their blobs where present."""
        model = cls(net)
        model.load_state_dict(owned_tensors(graph_arrays(model, net)), strict=False)
        return model

    @classmethod
    def from_config(cls, config: Mapping, source: str = "<config>") -> CaffeGraph:
        """Rebuild the structure from ``caffe_config()``; weights come from ``load_state_dict``.

        ``source`` (the converted file) starts error messages. A layer type nobody has
        registered in this process (a user's own, registered at conversion) is named, with
        how to register it.
        """
        if config.get("architecture") != "generic":
            raise ConverterError(
                f"{source}: expected architecture 'generic', found {config.get('architecture')!r}"
            )
        if not isinstance(config.get("prototxt"), str):
            raise ConverterError(f"{source}: the 'prototxt' entry (the net definition) is missing")
        param = parse_prototxt(config["prototxt"], source)
        missing = [layer for layer in param.layer if lookup(layer.type) is None]
        if missing:
            listed = ", ".join(describe_layer(layer) for layer in missing)
            types = sorted({layer.type for layer in missing})
            raise ConverterError(
                f"{source}: holds a net with {noun(len(types), 'a layer type', 'layer types')} "
                f"not registered in this process ({', '.join(types)}: {listed}); register "
                f"{noun(len(types), 'it', 'them')} before loading, as at conversion: import "
                "the code that calls converter.register_layer (on the command line: --layers "
                "FILE.py)"
            )
        return cls(net_from_param(param, source), config.get("input_shapes"))

    def caffe_config(self) -> dict:
        """JSON-serialisable description from which ``from_config`` rebuilds this module."""
        return {
            "architecture": "generic",
            "prototxt": self._prototxt,
            "input_shapes": {name: list(shape) for name, shape in self.input_shapes.items()},
            "input_names": list(self.input_names),
            "output_name": self.output_name,
            "output_names": list(self.output_names),
            "module_names": dict(self.module_names),
        }

    @property
    def steps(self) -> tuple[_Step, ...]:
        """The layers in Caffe's order: module name, Caffe layer name, type, bottoms, tops,
        whether the module runs once per bottom, and for each in-place top the other blobs
        sharing its data (what ``--format code`` writes out as a straight-line forward)."""
        return tuple(self._steps)

    def _unique_name(self, caffe_name: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", caffe_name) or "layer"
        if base[0].isdigit():
            base = "layer_" + base
        taken = set(self._modules) | set(dir(self)) | {"training"}
        name, index = base, 1
        while name in taken or keyword.iskeyword(name):
            index += 1
            name = f"{base}_{index}"
        return name

    # ------------------------------------------------------------------ running

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """What Caffe's ``net.forward()`` gives: the output blob, or with several outputs a
        tuple of them in ``output_names`` order."""
        blobs = self._run(inputs, set(self.output_names))
        if len(self.output_names) == 1:
            return blobs[self.output_name]
        return tuple(blobs[name] for name in self.output_names)

    def forward_blobs(
        self,
        *inputs: torch.Tensor,
        names: Sequence[str] | None = None,
        on_final: Callable[[str, torch.Tensor], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every blob (or those in ``names``) as Caffe holds it after the forward pass.

        With ``on_final``, each blob is handed to ``on_final(name, value)`` as soon as it
        holds its final value (after the last layer writing it, or writing a blob that
        shares its memory) and is not kept: only the blobs later layers need are held, and
        the result is empty.
        """
        if names is not None:
            unknown = [n for n in names if n not in self._blob_names]
            if unknown:
                raise KeyError(f"no {noun(len(unknown), 'blob')} named {unknown} in this net")
        if on_final is not None:
            wanted = self._blob_names if names is None else set(names)
            self._run(inputs, set(), lambda n, v: on_final(n, v) if n in wanted else None)
            return {}
        blobs = self._run(inputs, None if names is None else set(names))
        return blobs if names is None else {n: blobs[n] for n in names}

    def _run(
        self,
        inputs: Sequence[torch.Tensor],
        keep: set[str] | None,
        on_final: Callable[[str, torch.Tensor], None] | None = None,
    ) -> dict:
        if len(inputs) != len(self.input_names):
            raise InputsError(
                f"the net takes {counted(len(self.input_names), 'input')} {self.input_names}, "
                f"got {len(inputs)}"
            )
        given = dict(zip(self.input_names, inputs))
        if self._batched:
            check_batch({name: given[name] for name in self._batched})
        blobs: dict[str, torch.Tensor] = {}
        for index, step in enumerate(self._steps):
            module = self._modules[step.module]
            if step.type == "Input":
                outs = module(*[given[t] for t in step.tops])
            elif step.each_bottom:
                outs = [module(blobs[b]) for b in step.bottoms]
            else:
                outs = module(*[blobs[b] for b in step.bottoms])
            if isinstance(outs, torch.Tensor):
                outs = (outs,)
            blobs.update(zip(step.tops, outs))
            for top, shared in step.aliases:
                for other in shared:
                    if other in blobs:
                        blobs[other] = blobs[top].reshape(blobs[other].shape)
            if on_final is not None:  # streaming: hand over final values, hold only what is needed
                final_at, release_at = self._stream_points
                for name in final_at.get(index, ()):
                    on_final(name, blobs[name])
                for name in release_at.get(index, ()):
                    del blobs[name]
            elif keep is not None:
                for name in self._release.get(index, ()):
                    if name not in keep:
                        del blobs[name]
        return blobs


def check_batch(inputs: Mapping[str, torch.Tensor]) -> None:
    """ConverterError, naming each input's batch size, unless ``inputs`` (those that
    ``batched_inputs`` names) all have one size on axis 0: PyTorch would broadcast a
    batch of 1 against the others, where Caffe's Eltwise and Concat refuse the shapes."""
    first = next(iter(inputs.values())).shape[:1]
    if any(x.shape[:1] != first for x in inputs.values()):
        sizes = ", ".join(f"{n} {x.shape[0] if x.shape else 'none'}" for n, x in inputs.items())
        raise ConverterError(
            f"the net's inputs have different batch sizes ({sizes}); give every input the "
            "same batch size (axis 0): Caffe combines them sample by sample"
        )


def _outputs(net: Net) -> tuple[list[str], str]:
    """(The blobs ``forward`` returns, in Caffe's order; the one written last).

    Caffe's outputs (``Net.outputs``) without the net's inputs that no layer reads (Caffe
    would hand them back unchanged). Where every blob is consumed (a Silence at the end),
    the last blob written stands in.
    """
    inputs = set(net.input_shapes())
    produced = [blob for blob in net.outputs_by_production() if blob not in inputs]
    if not produced:
        produced = [top for layer in net.layers for top in layer.tops][-1:]
    return sorted(produced), produced[-1]


def _release_points(steps: list[_Step]) -> dict[int, list[str]]:
    """Layer index -> blobs that no later layer reads or writes (freed early by ``forward``)."""
    last: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.bottoms + step.tops:
            last[name] = index
    by_index: dict[int, list[str]] = {}
    for name, index in last.items():
        by_index.setdefault(index, []).append(name)
    return by_index


def _stream_points(
    steps: list[_Step], final: Mapping[str, int]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """(step index -> blobs whose value is final after it, step index -> blobs to let go
    after it) for ``forward_blobs(on_final=...)``; ``final`` is ``net.final_writes``. A blob
    is held until it is final, since an in-place write to a blob sharing its memory still
    changes it, and until the last step reading it."""
    touched: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.bottoms + step.tops:
            touched[name] = index
    final_at: dict[int, list[str]] = {}
    release_at: dict[int, list[str]] = {}
    for name, index in final.items():
        final_at.setdefault(index, []).append(name)
        release_at.setdefault(max(index, touched[name]), []).append(name)
    return final_at, release_at


def _record(layer: Layer) -> LayerType:
    record = lookup(layer.type)
    assert record is not None and record.module is not None, "checked by _check_supported"
    return record


def _check_supported(net: Net) -> None:
    """Every layer's type must have a module: one error naming all the layers that lack one."""
    unknown = [layer for layer in net.layers if lookup(layer.type) is None]
    if unknown:
        missing = "of a type this tool does not know"
    else:
        unknown = [layer for layer in net.layers if lookup(layer.type).module is None]
        missing = "of a type registered without a PyTorch module"
    if unknown:
        raise ConverterError(unknown_layers_message(net.source, unknown, missing))


def _check_tops(layer: Layer, record: LayerType, produced: set[str], where: str) -> list[str]:
    """The tops this layer writes in place; refuses what Caffe refuses or computes wrongly."""
    in_place = []
    for index, top in enumerate(layer.tops):
        if index < len(layer.bottoms) and layer.bottoms[index] == top:
            in_place.append(top)
        elif top in produced or top in layer.tops[:index]:
            raise ConverterError(f"{where}: top blob '{top}' is produced by multiple sources")
    if in_place and not record.in_place:
        in_place_types = sorted(n for n in supported_layer_types() if lookup(n).in_place)
        raise ConverterError(
            f"{where}: computing in place (top '{in_place[0]}' == bottom) is not supported "
            f"for this type; in-place types: {', '.join(in_place_types)}"
        )
    return in_place


def _definition_text(net: Net) -> str:
    """The TEST-phase net as prototxt text, without blobs or include/exclude rules."""
    return text_format.MessageToString(net_definition(net))


def graph_arrays(model: CaffeGraph, net: Net) -> dict[str, np.ndarray]:
    """The state dict of ``model`` (built from ``net``) as arrays taken from the net's blobs.

    Raw blobs stay float32 views of the caffemodel (nothing is copied); BatchNorm statistics
    are divided by the stored scale factor in float64, so a float64 model carries them
    exactly and a float32 one rounds them once.
    """
    arrays: dict[str, np.ndarray] = {}
    for layer, step in zip(net.layers, model._steps):  # by position: layer names may repeat
        if not layer.blobs:
            continue
        name = step.module
        module = model.get_submodule(name)
        where = f"{net.weights_source or net.source}: layer '{layer.name}' ({layer.type})"
        mapped = _record(layer).map_weights(layer, layer.blobs, module, where)
        arrays.update((f"{name}.{key}", array) for key, array in mapped.items())
    return arrays
