"""Was a converted file made from this net and these weights?

``verify --converted`` compares a file with the net it is said to come from. A file of
another net would fail every blob, and a file of the same net with other weights would fail
too, though neither conversion is wrong: both are said for what they are (ConverterError,
exit 2 in the CLI) from the file's metadata, which records its sources and architecture.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converter.errors import ConverterError, counted
from converter.export import read_converted_header
from converter.net import Net


def check_converted_source(path: str | os.PathLike, net: Net) -> dict[str, str]:
    """Raise ConverterError naming both nets when ``path`` was not converted from ``net``.

    A conversion of ``net`` (with the options the file records: ``--generic``,
    ``--fuse-bn``) must give the file's architecture, the Caffe layer and blob names its
    config maps, and its tensor names and shapes. Settings that a conversion decides
    (strides, pooling rounding, eps) are not compared here: the numbers judge those, so
    that a wrong conversion fails the parity check instead of passing for another net.
    The sources' file names may differ (files get renamed). Returns the file's metadata.
    """
    shapes, metadata = read_converted_header(path)
    return _check_source(path, net, shapes, metadata)


def check_program_source(
    path: str | os.PathLike, net: Net, metadata: Mapping[str, str]
) -> dict[str, str]:
    """``check_converted_source`` for a pt2 or ONNX file, from the config and tensor shapes
    its metadata keeps (``program.program_metadata``). A file written before it kept them
    is judged by its input and output blob names. Returns the metadata."""
    metadata = dict(metadata)
    if "config" in metadata and "tensor_shapes" in metadata:
        stored = json.loads(metadata["tensor_shapes"])
        shapes = {name: tuple(shape) for name, shape in stored.items()}
        return _check_source(path, net, shapes, metadata)
    output, inputs = metadata.get("output_blob"), metadata.get("input_names")
    if output not in net.blob_names() or (
        inputs is not None and json.loads(inputs) != list(net.input_shapes())
    ):
        theirs = metadata.get("source_prototxt") or "another net"
        raise ConverterError(
            f"{path}: was converted from '{theirs}' (inputs {inputs}, output blob "
            f"'{output}'), which does not fit {net.source} (inputs "
            f"{list(net.input_shapes())}{'' if output in net.blob_names() else ', no such blob'}"
            "); verify it against the files it was converted from"
        )
    return metadata


def _check_source(
    path: str | os.PathLike,
    net: Net,
    shapes: Mapping[str, tuple[int, ...]],
    metadata: Mapping[str, str],
) -> dict[str, str]:
    from converter.conversion import plan_conversion

    metadata = dict(metadata)
    stored = json.loads(metadata["config"])
    generic = stored.get("architecture") == "generic"
    try:
        plan = plan_conversion(net, generic=generic, fuse_bn=bool(stored.get("fused_bn")))
    except ConverterError:  # e.g. the file is a fused ResNet and this net is no ResNet
        plan = None
    if (
        plan is not None
        and stored.get("architecture") == plan.config["architecture"]
        and caffe_names(stored) == caffe_names(plan.config)
        and shapes == plan.shapes
    ):
        return metadata
    ours = plan or plan_conversion(net, generic=False)
    sources = ("source_prototxt", "source_caffemodel")
    theirs = " + ".join(f"'{metadata[key]}'" for key in sources if metadata.get(key))
    raise ConverterError(
        f"{path}: was converted from {theirs or 'another net'} ({describe(stored, shapes)}), "
        f"not from {net.source} ({describe(ours.config, ours.shapes)}); verify it against the "
        "files it was converted from, or convert this net"
    )


def check_converted_weights(
    path: str | os.PathLike,
    metadata: Mapping[str, str],
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike,
) -> str:
    """After a failed comparison: was the file converted from these very files?

    With the caffemodel's sha256 in the metadata (``convert --hash``) other weights are
    certain: ConverterError. Without it, other source file names are only a hint, returned
    as a note for the report ("" when there is nothing to say).
    """
    recorded = metadata.get("source_caffemodel_sha256")
    if recorded:
        from converter.conversion import _sha256

        actual = _sha256(Path(caffemodel))
        if actual != recorded:
            raise ConverterError(
                f"{path}: was converted from a caffemodel with sha256 {recorded[:12]}..., "
                f"{caffemodel} has {actual[:12]}...: other weights, so the comparison says "
                "nothing about the conversion; verify it against the caffemodel it came from"
            )
    given = {"source_prototxt": prototxt, "source_caffemodel": caffemodel}
    other = [
        f"'{metadata[key]}' (not '{Path(source).name}')"
        for key, source in given.items()
        if metadata.get(key) and metadata[key] != Path(source).name
    ]
    if other and not recorded:
        return (
            f"{path} was converted from {' + '.join(other)}; if those hold another net or "
            "other weights, this failure says so, not that the conversion is wrong"
        )
    return ""


def describe(config: Mapping[str, Any], shapes: Mapping[str, Any]) -> str:
    """A net in a few words: "ResNet-50 (bottleneck blocks 3-4-6-3, 1000 classes), 320
    tensors" or "generic net 'lenet' of 9 layers, 8 tensors"."""
    tensors = counted(len(shapes), "tensor")
    if config.get("architecture") == "resnet":
        blocks = [stage["blocks"] for stage in config.get("stages", [])]
        per_block = 3 if config.get("block") == "bottleneck" else 2
        depth = per_block * sum(blocks) + 2
        return (
            f"ResNet-{depth} ({config.get('block')} blocks {'-'.join(map(str, blocks))}, "
            f"{config.get('num_classes')} classes), {tensors}"
        )
    name = re.match(r'name: "([^"]*)"', config.get("prototxt", ""))
    called = f" '{name.group(1)}'" if name and name.group(1) else ""
    layers = counted(len(config.get("module_names", {})), "layer")
    return f"generic net{called} of {layers}, {tensors}"


def caffe_names(config: Mapping[str, Any]) -> set[str]:
    """The Caffe layer and blob names a stored config maps onto modules: what identifies the
    net it was converted from (a wrong conversion of a net keeps its names)."""
    if config.get("architecture") == "resnet":
        layers = {name for names in config.get("caffe_layers", {}).values() for name in names}
        return layers | {blob for _, blob in config.get("blobs", [])}
    return set(config.get("module_names", {}))
