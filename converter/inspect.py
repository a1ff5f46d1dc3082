"""A readable (or JSON) table of a net's layers, shapes and parameters."""

from __future__ import annotations

import math

from converter.errors import ConverterError
from converter.layers import lookup
from converter.layers.registry import describe_layer
from converter.net import LayerShapes, Net


def layer_table(net: Net) -> list[dict]:
    """One row per layer, in network order, in the form of the fixtures' ``case.json``.

    Parameter shapes are the stored blobs' shapes when weights are loaded, else what the
    prototxt implies (``None`` for a layer type whose parameters cannot be predicted).
    Without weights, or with layer types nobody registered, shapes stop at the first layer
    whose shape cannot be inferred (``shape_stop`` says which and why): the rows from it on
    have no top shapes. With weights and known types a shape error is raised.
    """
    try:
        shapes = net.shapes()
    except ConverterError:
        # With weights a shape error is a mismatch to report, unless types are unknown:
        # then the table shows what it can, and the module line names them.
        known = all(lookup(layer.type) is not None for layer in net.layers)
        if known and any(layer.blobs for layer in net.layers) and not net.open_inputs:
            raise
        shapes = _inferable_prefix(net)
        shapes += [LayerShapes([], None)] * (len(net.layers) - len(shapes))
    rows = []
    for layer, inferred in zip(net.layers, shapes):
        if layer.blobs:
            params = [list(b.shape) for b in layer.blobs]
        elif inferred.param_shapes is not None:
            params = [list(s) for s in inferred.param_shapes]
        else:
            params = None
        rows.append(
            {
                "name": layer.name,
                "type": layer.type,
                "bottoms": list(layer.bottoms),
                "tops": list(layer.tops),
                "top_shapes": [list(s) for s in inferred.top_shapes],
                "param_shapes": params,
            }
        )
    return rows


def _head(net: Net, count: int) -> Net:
    return Net(net.name, net.layers[:count], net.source, open_inputs=net.open_inputs)


def _inferable_prefix(net: Net) -> list[LayerShapes]:
    """The shapes of the longest run of leading layers Caffe's shape inference gets through
    (an unregistered type, or a shape rule's error, ends it; a longer run never passes once
    a shorter one fails, hence the bisection)."""
    try:
        return net.shapes()
    except ConverterError:
        pass
    good, bad = 0, len(net.layers)  # the first `good` layers infer, the first `bad` do not
    while bad - good > 1:
        middle = (good + bad) // 2
        try:
            _head(net, middle).shapes()
            good = middle
        except ConverterError:
            bad = middle
    return _head(net, good).shapes() if good else []


def shape_stop(net: Net) -> dict | None:
    """Where shape inference stops and why: ``{"layer": name, "type": type, "why": ...}``
    for the first layer whose shape cannot be inferred (its type has no shape rule, or its
    rule refused it), or None when every layer's shape is known."""
    count = len(_inferable_prefix(net))
    if count == len(net.layers):
        return None
    layer = net.layers[count]
    unknown_input = next((net.open_inputs[t] for t in layer.tops if t in net.open_inputs), None)
    if unknown_input is not None:
        why = unknown_input.removeprefix(f"{net.source}: ")
    elif lookup(layer.type) is None:
        why = f"no shape rule for {describe_layer(layer)}"
    else:
        try:
            _head(net, count + 1).shapes()
            why = "shape inference failed"  # not reached: the longer run failed above
        except ConverterError as exc:
            why = str(exc).removeprefix(f"{net.source}: ")
    return {"layer": layer.name, "type": layer.type, "why": why}


def totals(net: Net, rows: list[dict]) -> dict:
    """What the table adds up to, saying what the count covers.

    With a caffemodel the count is of its stored blobs. Without one it is what the prototxt
    implies; ``unknown`` names the layers whose parameters cannot be predicted then, and
    ``parameters`` is None (unknown) while any are, ``counted`` covering the others.
    ``shapes_stop`` is ``shape_stop(net)`` when shapes stop short of the last layer.
    """
    unknown = [] if net.weights_source else [r["name"] for r in rows if r["param_shapes"] is None]
    counted = sum(math.prod(s) for row in rows for s in row["param_shapes"] or [])
    stop = shape_stop(net) if any(r["tops"] and not r["top_shapes"] for r in rows) else None
    return {
        "layers": len(rows),
        "parameters": None if unknown else counted,
        "counted": counted,
        "unknown": unknown,
        "shapes_stop": stop,
        "parameters_from": "caffemodel" if net.weights_source else "prototxt",
        "float32_mib": round(counted * 4 / 2**20, 1),
        "weights": net.weights_source,
        "weights_format": net.weights_format,
        "source_dtype": net.weights_dtype,
    }


_NOT_RESNET = "not a ResNet of the form this converter handles: "  # recognize's message


def conversion_target(net: Net) -> dict:
    """Which module the net converts to: ``{"module": "CaffeResNet" | "generic" | None,
    "why": ...}``; ``why`` says why a net is not a ResNet of the form the ResNet converter
    handles, and for None which layer types no module supports, or what a conversion refuses
    (``plan_conversion``, the checks ``convert`` makes, run here: a layer Caffe would refuse,
    a blob written twice, missing weights, ...)."""
    from converter.conversion import plan_conversion
    from converter.layers.registry import supported_layer_types, unknown_layers_message
    from converter.resnet import recognize

    try:
        config = recognize(net)
    except ConverterError as exc:
        why = str(exc).removeprefix(f"{net.source}: ").removeprefix(_NOT_RESNET)
        if len(why) > 240:
            why = why[:237] + "..."
        config = None
    supported = set(supported_layer_types())
    missing = [layer for layer in net.layers if layer.type not in supported]
    if missing:
        # every such layer at once, a Python layer with the module it loads
        listed = unknown_layers_message(net.source, missing, "without a module")
        return {"module": None, "why": listed.removeprefix(f"{net.source}: ")}
    if net.open_inputs:  # the checks need the shapes
        return {"module": None, "why": "the input shape is needed first (--input-shape)"}
    try:
        plan_conversion(net, generic=False)
    except ConverterError as exc:  # what convert would refuse
        refused = str(exc).removeprefix(f"{net.source}: ")
        return {"module": None, "why": f"the net is refused: {refused}"}
    if config is not None:
        blocks = "-".join(str(stage.blocks) for stage in config.stages)
        return {"module": "CaffeResNet", "why": f"Kaiming's form, {config.block} blocks {blocks}"}
    return {"module": "generic", "why": why}


def weights_note(net: Net) -> str:
    """ " (hdf5, stored as float16, read as float32)": how the weights were stored, when not
    as plain float32 caffemodel blobs."""
    notes = []
    if net.weights_format and net.weights_format != "caffemodel":
        notes.append(net.weights_format)
    if net.weights_dtype and net.weights_dtype != "float32":
        widened = "float16" in net.weights_dtype
        notes.append(f"stored as {net.weights_dtype}" + (", read as float32" if widened else ""))
    return f" ({', '.join(notes)})" if notes else ""


def format_table(net: Net, rows: list[dict]) -> str:
    """The table a person reads: name, type, bottoms -> tops, output, params, counts."""
    header = ("layer", "type", "bottoms -> tops", "output shape", "parameters", "count")
    lines = [header]
    total = 0
    for row in rows:
        params = row["param_shapes"] or []
        count = sum(math.prod(s) for s in params)
        total += count
        lines.append(
            (
                row["name"],
                row["type"],
                f"{', '.join(row['bottoms']) or '-'} -> {', '.join(row['tops'])}",
                " ".join("x".join(map(str, s)) for s in row["top_shapes"]) or "?",
                " ".join("x".join(map(str, s)) or "scalar" for s in params)
                if row["param_shapes"] is not None
                else "?",
                f"{count:,}" if count else "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    out += ["", _totals_line(net, rows, totals(net, rows)), _module_line(conversion_target(net))]
    return "\n".join(out)


def _names(names: list[str], most: int = 5) -> str:
    shown = ", ".join(f"'{name}'" for name in names[:most])
    return shown + (", ..." if len(names) > most else "")


def _unknown_why(rows: list[dict], summed: dict) -> str:
    """Why the parameters of ``summed["unknown"]`` cannot be counted, layer by layer kind:
    shape inference stopped at one of them (its type has no rule, or its rule refused it),
    the ones after it have no input shape, the rest keep their blob shapes in the caffemodel."""
    stop = summed["shapes_stop"]
    reasons = []
    after = []
    if stop is not None:
        if stop["why"].startswith(("no shape rule", "data layer")):
            reasons.append(stop["why"])
        else:  # the module line gives the error
            reasons.append(f"shape inference stops at '{stop['layer']}' ({stop['type']}), refused")
        at = next(i for i, row in enumerate(rows) if row["name"] == stop["layer"])
        after = [r["name"] for r in rows[at + 1 :] if r["name"] in summed["unknown"]]
        if after:
            reasons.append(f"shapes are unknown from there on, so also for {_names(after)}")
    blob_shapes = [
        name
        for name in summed["unknown"]
        if name not in after and name != (stop or {}).get("layer")
    ]
    if blob_shapes:
        reasons.append(f"the caffemodel alone gives the blob shapes of {_names(blob_shapes)}")
    return "; ".join(reasons)


def _totals_line(net: Net, rows: list[dict], summed: dict) -> str:
    """ "ResNet-50: 229 layers, 25,610,269 parameters (97.7 MiB as float32), ..." """
    head = f"{net.name or 'net'}: {summed['layers']} layers, "
    if summed["unknown"]:
        return (
            f"{head}parameters: unknown without the caffemodel ({_unknown_why(rows, summed)}); "
            f"{summed['counted']:,} in the other layers"
        )
    count = f"{summed['parameters']:,} parameters ({summed['float32_mib']:.1f} MiB as float32)"
    if summed["weights"]:
        return f"{head}{count}, weights from {summed['weights']}{weights_note(net)}"
    return f"{head}{count}, as the prototxt implies (no caffemodel given)"


def _module_line(target: dict) -> str:
    if target["module"] == "CaffeResNet":
        return f"Converts to: CaffeResNet ({target['why']})"
    if target["module"] == "generic":
        return (
            "Converts to: the generic module (not a ResNet of the form the ResNet converter "
            "handles: "
            f"{target['why']})"
        )
    if target["why"].startswith("the net is refused: "):
        return f"Converts to: nothing ({target['why']})"
    return f"Converts to: nothing yet ({target['why']})"
