"""model.py for any net: a straight-line ``forward`` whose variables are Caffe's blobs.

Each layer type writes itself through the ``code`` hook of its registry entry
(``converter.layers.LayerCode``): a torch built-in where one computes exactly what Caffe
does, a small helper module (emitted into the file) where none does. Modules keep
``CaffeGraph``'s names (Caffe layer names made identifiers), so the generated module's
state dict is ``CaffeGraph``'s and the converted arrays fill it unchanged. An in-place
layer reassigns its blob's variable, as Caffe overwrites the blob; a blob sharing memory
with one written in place (Split, Flatten, Reshape tops) is reassigned with it.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Sequence

from converter.codegen.common import LOADER, fill, header, quote
from converter.errors import ConverterError, noun
from converter.layers import LayerCode, lookup
from converter.net import Net, batched_inputs

# Names the generated forward uses itself: no blob variable may take them.
_RESERVED = {"self", "torch", "nn", "F", "json", "math", "Path", "along", "FLT_MAX"}


def _missing_emitters(net: Net) -> list[str]:
    types = []
    for layer in net.layers:
        record = lookup(layer.type)
        if layer.type != "Input" and (record is None or record.code is None):
            if layer.type not in types:
                types.append(layer.type)
    return types


def check_codegen(net: Net) -> None:
    """Refuse (one line) a net with a layer type that has no code emitter."""
    missing = _missing_emitters(net)
    if missing:
        raise ConverterError(
            f"{net.source}: --format code cannot write {noun(len(missing), 'layer type')} "
            f"{', '.join(missing)} (no code emitter registered for "
            f"{noun(len(missing), 'it', 'them')}: register_layer(..., code=...))"
        )


WIDTH = 88  # ruff's default line length


def _statement(indent: str, statement: str, comment: str = "") -> list[str]:
    """One statement with an optional comment, as lines ruff format leaves alone: the
    comment goes above when the line would be too long, and a statement that is too long
    by itself (long Caffe names) is marked ``# fmt: skip`` rather than split."""
    line = indent + statement
    if comment and len(f"{line}  {comment}") <= WIDTH:
        return [f"{line}  {comment}"]
    lines = [indent + comment] if comment else []
    return lines + [line if len(line) <= WIDTH else f"{line}  # fmt: skip"]


def _listing(indent: str, start: str, items: Sequence[str], brackets: str = "") -> list[str]:
    """``start`` and the items, comma-separated (in ``brackets`` if given) on one line, or,
    where that is too long, in brackets ("()" if none) one item a line with a trailing
    comma, as ruff format leaves them."""
    opening, closing = brackets or "()"
    line = f"{indent}{start}{brackets[:1]}{', '.join(items)}{brackets[1:]}"
    if len(line) <= WIDTH:
        return [line]
    return [f"{indent}{start}{opening}", *(f"{indent}    {i}," for i in items), indent + closing]


def _method(name: str, inputs: Sequence[str], returns: str) -> list[str]:
    """A method's ``def`` line(s) taking the input tensors, wrapped as ruff format wraps."""
    params = ["self", *(f"{blob}: torch.Tensor" for blob in inputs)]
    line = f"    def {name}({', '.join(params)}) -> {returns}:"
    if len(line) <= WIDTH:
        return [line]
    inner = f"        {', '.join(params)}"
    if len(inner) <= WIDTH:
        return [f"    def {name}(", inner, f"    ) -> {returns}:"]
    return [f"    def {name}(", *(f"        {p}," for p in params), f"    ) -> {returns}:"]


class _Names:
    """Blob name -> a Python identifier, unique in the forward."""

    def __init__(self, taken: Sequence[str]):
        self.taken = set(_RESERVED) | set(taken)
        self.names: dict[str, str] = {}

    def __call__(self, blob: str) -> str:
        if blob not in self.names:
            base = re.sub(r"[^0-9A-Za-z_]", "_", blob) or "blob"
            if base[0].isdigit():
                base = "blob_" + base
            if keyword.iskeyword(base):
                base += "_"
            name, index = base, 1
            while name in self.taken:
                index += 1
                name = f"{base}_{index}"
            self.taken.add(name)
            self.names[blob] = name
        return self.names[blob]


# The names a helper defines at the top level of model.py (no blob variable may take them).
_DEFINED = re.compile(r"^(?:class |def )?([A-Za-z_][A-Za-z0-9_]*)\b(?=[ (:=])", re.MULTILINE)


def _layer_codes(net: Net) -> list[LayerCode | None]:
    """Each layer's code, from its type's ``code`` hook (None for an Input layer)."""
    blob_shapes: dict[str, tuple[int, ...]] = {}
    codes: list[LayerCode | None] = []
    for layer, layer_shapes in zip(net.layers, net.shapes()):
        code = None
        if layer.type != "Input":
            where = f"{net.source}: layer '{layer.name}' ({layer.type})"
            bottoms = [blob_shapes[b] for b in layer.bottoms]
            code = lookup(layer.type).code(layer, bottoms, where)
        codes.append(code)
        blob_shapes.update(zip(layer.tops, layer_shapes.top_shapes))
    return codes


# forward()'s first statement in a net whose inputs share the batch (``batched_inputs``):
# PyTorch would broadcast a batch of 1 against the others, where Caffe refuses the shapes.
CHECK_BATCH = '''
def check_batch(*inputs: tuple[str, torch.Tensor]) -> None:
    """ValueError unless the inputs, (blob name, tensor) pairs, share one batch size."""
    if any(x.shape[0] != inputs[0][1].shape[0] for _, x in inputs):
        sizes = ", ".join(f"{name} {x.shape[0]}" for name, x in inputs)
        raise ValueError(f"the net's inputs have different batch sizes ({sizes})")
'''


def _helpers(net: Net, codes: Sequence[LayerCode | None]) -> list[str]:
    """The helper definitions the layers' code needs, each once, constants first; with
    ``check_batch`` where the net's inputs share the batch."""
    helpers: list[str] = [CHECK_BATCH] if batched_inputs(net.input_shapes()) else []
    for code in filter(None, codes):
        helpers += [helper for helper in code.helpers if helper not in helpers]
    helpers.sort(key=lambda text: text.lstrip().startswith(("def ", "class ")))
    return helpers


def _blob_names(net: Net, helpers: Sequence[str]) -> _Names:
    """The variable of every blob in the generated forward: the inputs first, then each
    layer's tops in Caffe's order (the order the forward first assigns them), none taking
    a name a helper defines."""
    names = _Names([name for helper in helpers for name in _DEFINED.findall(helper)])
    for blob in net.input_shapes():
        names(blob)
    for layer in net.layers:
        for top in layer.tops:
            names(top)
    return names


def blob_variables(net: Net) -> dict[str, str]:
    """Blob name -> the local variable holding it in the ``forward`` that ``graph_source``
    writes for ``net`` (what ``verify`` reads a code folder's blobs from). Raises
    ConverterError when a layer type has no code emitter."""
    check_codegen(net)
    return dict(_blob_names(net, _helpers(net, _layer_codes(net))).names)


def graph_source(net: Net, model, prototxt: str, caffemodel: str, version: str) -> str:
    """The text of model.py for ``net``, whose ``CaffeGraph`` is ``model`` (module names,
    steps, output). Raises ConverterError when a layer type has no code emitter."""
    check_codegen(net)
    codes = _layer_codes(net)
    helpers = _helpers(net, codes)
    codes_helpers = [code.helpers for code in codes if code is not None]
    init: list[str] = []
    names = _blob_names(net, helpers)
    batched = [f"({quote(blob)}, {names(blob)})" for blob in batched_inputs(net.input_shapes())]
    body = _statement("        ", f"check_batch({', '.join(batched)})") if batched else []
    inputs = [names(blob) for blob in model.input_names]
    produced: set[str] = set(model.input_names)
    for layer, step, code in zip(net.layers, model.steps, codes):
        if code is None:  # Input
            continue
        attribute = f"self.{step.module}"
        if code.module is not None:
            named = "" if step.module == layer.name else f"# {quote(layer.name)}"
            init += _statement("        ", f"{attribute} = {code.module}", named)
        if step.each_bottom:  # one module, run on each bottom/top pair
            pairs = [([b], [t]) for b, t in zip(layer.bottoms, layer.tops)]
        else:
            pairs = [(list(layer.bottoms), list(layer.tops))]
        same = [names(t) for t in layer.tops] == [layer.name]  # the blob says the layer
        comment = f"# {layer.type}" if same else f"# {quote(layer.name)}: {layer.type}"
        for bottom_blobs, top_blobs in pairs:
            if not top_blobs:  # Silence: consumes its bottoms, computes nothing
                body.append(f"        {comment} (no output)")
                continue
            expr = code.call.format(*[names(b) for b in bottom_blobs], m=attribute)
            targets = ", ".join(names(t) for t in top_blobs)
            if expr == targets:  # an identity written in place (Dropout at test time)
                body.append(f"        {comment} (the identity at test time)")
                continue
            body += _statement("        ", f"{targets} = {expr}", comment)
        for top, shared in step.aliases:
            for other in shared:
                if other in produced:  # Caffe's blobs share memory: the write shows in both
                    alias = f"{names(other)} = {names(top)}.reshape({names(other)}.shape)"
                    body += _statement("        ", alias)
        produced.update(layer.tops)
    outputs = list(model.output_names)
    shapes_text = ", ".join(
        f"{name} ({', '.join(['N', *map(str, shape[1:])])})"
        for name, shape in model.input_shapes.items()
    )
    if len(outputs) == 1:
        returned = f"Output: blob {outputs[0]!r}."
    else:
        returned = (
            f"Outputs: a tuple of the {len(outputs)} blobs in output_names, in Caffe's order "
            "(by name), as Caffe's net.forward() returns them."
        )
    summary = fill(
        f"The Caffe net {prototxt} as a plain PyTorch module.\n\n"
        "forward() runs Caffe's layers in Caffe's order; each local variable is the Caffe blob "
        "of that name (made an identifier), reassigned where a layer writes it in place. "
        "Torch's own functions are used where they compute exactly what Caffe does"
        f"{'; the small classes above Net do the rest' if any(codes_helpers) else ''}.\n\n"
        f"Input: float32 {shapes_text}, in the net's training convention (see config.json). "
        f"{returned}"
    )
    net_class = [
        "class Net(nn.Module):",
        '    """The converted net; ``Net()`` builds it with uninitialised weights."""',
        "",
        "    # the blobs forward() returns, in Caffe's order",
        *(
            _listing("    ", "output_names = ", [quote(blob) for blob in outputs], "()")
            if len(outputs) > 1
            else [f"    output_names = ({quote(outputs[0])},)"]
        ),
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *(init or ["        pass"]),
        "",
    ]
    if len(outputs) == 1:
        net_class += [*_method("forward", inputs, "torch.Tensor"), *body]
        net_class.append(f"        return {names(outputs[0])}")
    else:  # every output blob, as Caffe's net.forward() gives them
        net_class += [
            *_method("forward", inputs, "tuple[torch.Tensor, ...]"),
            *body,
            *_listing("        ", "return ", [names(blob) for blob in outputs]),
        ]
    text_after_header = "\n".join(["\n".join(net_class)] + helpers)
    imports = ["import json", "from pathlib import Path", "", "import torch"]
    if "math." in text_after_header:
        imports.insert(1, "import math")
    if "F." in text_after_header:
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    parts = [
        header(prototxt, caffemodel, version, summary),
        "\n".join(imports) + "\n",
        *helpers,
        "\n" + "\n".join(net_class) + "\n",
        LOADER.format(model="Net"),
    ]
    return "\n".join(parts)
