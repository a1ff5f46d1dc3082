"""A readable (or JSON) table of a net's layers, shapes and parameters."""

from __future__ import annotations

import math

from converter.errors import ConverterError
from converter.net import LayerShapes, Net


def layer_table(net: Net) -> list[dict]:
    """One row per layer, in network order, in the form of the fixtures' ``case.json``.

    Parameter shapes are the stored blobs' shapes when weights are loaded, else what the
    prototxt implies (``None`` for a layer type whose parameters cannot be predicted).
    """
    try:
        shapes = net.shapes()
    except ConverterError:
        if any(layer.blobs for layer in net.layers):
            raise
        shapes = _partial_shapes(net)
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


def _partial_shapes(net: Net) -> list[LayerShapes]:
    """Shapes up to the first layer inference cannot handle; unknown after it."""
    result: list[LayerShapes] = []
    for count in range(len(net.layers), 0, -1):
        head = Net(net.name, net.layers[:count], net.source)
        try:
            result = head.shapes()
            break
        except ConverterError:
            continue
    unknown = [LayerShapes([], None)] * (len(net.layers) - len(result))
    return result + unknown


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
    weights = f", weights from {net.weights_source}" if net.weights_source else ""
    out.append("")
    out.append(
        f"{net.name or 'net'}: {len(rows)} layers, {total:,} parameters "
        f"({total * 4 / 2**20:.1f} MiB as float32){weights}"
    )
    return "\n".join(out)
