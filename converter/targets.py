"""Outputs other than a weight file: a code folder, pt2, ONNX, detectron2 and mmdet checkpoints.

Every format first checks that it can represent the net and refuses in one line
(ConverterError) before anything is written. What a user must know to use the output
(framework settings, measured differences, a batch size that stays fixed) goes to
``notes``, which the CLI prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from converter.conversion import Plan, file_metadata, output_names
from converter.errors import ConverterError
from converter.net import Net

TARGETS = ("code", "pt2", "onnx", "detectron2", "mmdet")
_STEM_POOL = (
    "Their stem max-pool is pad 1, floor mode; Caffe's is pad 0, ceil mode: the same size "
    "at 224 but every window shifted by one conv1 pixel, and the sizes differ when the "
    "input side mod 4 is 1 or 2. No weights can remove this."
)


def check_target(format: str, net: Net, plan: Plan) -> None:
    """Refuse (ConverterError) what ``format`` cannot write, before any work is done."""
    if format in ("detectron2", "mmdet"):
        _resnet_config(net, plan, format)
    if format == "onnx":
        from converter.program import ONNX_HINT

        for package in ("onnx", "onnxscript"):
            try:
                __import__(package)
            except ImportError:
                raise ConverterError(f"--format onnx needs {package}: {ONNX_HINT}") from None


def _resnet_config(net: Net, plan: Plan, format: str):
    from converter.checkpoints import framework_depth
    from converter.resnet import ResNetConfig, recognize

    if plan.config["architecture"] != "resnet":
        try:
            recognize(net)
            why = "--generic was asked for"
        except ConverterError as exc:
            why = str(exc).removeprefix(f"{net.source}: ")
        raise ConverterError(
            f"{net.source}: --format {format} needs a ResNet of Kaiming's form; {why}"
        )
    config = ResNetConfig.from_dict(plan.config)
    return config, framework_depth(config, format, net.source)


def write_target(
    format: str,
    net: Net,
    plan: Plan,
    output: str | os.PathLike,
    mean: str | None = None,
    input: str | os.PathLike | None = None,
    notes: Callable[[str], None] | None = None,
    scale: float | None = None,
) -> Path:
    """Write ``plan`` (the conversion of ``net``) as ``format`` to ``output``.

    ``mean`` (a mean file or "B,G,R") and ``scale`` are the input convention recorded
    (metadata, config.json, the framework settings; by default what a training net's
    transform_param says: ``preprocess.input_convention``); ``input`` (an image or .npy) is
    what the detectron2/mmdet stem difference is measured on (default: deterministic
    N(0, 50) noise).
    """
    from converter.preprocess import input_convention

    check_target(format, net, plan)
    tell = notes or (lambda text: None)
    convention = input_convention(net, mean, scale)
    metadata = file_metadata(plan, net, convention)
    if format == "code":
        from converter.codegen.folder import write_code_folder

        return write_code_folder(net, plan, output, convention)
    if format in ("pt2", "onnx"):
        return _write_program(format, net, plan, output, metadata, tell)
    return _write_checkpoint(format, net, plan, output, metadata, convention, input, tell)


def _write_program(format, net, plan, output, metadata, tell) -> Path:
    import torch

    from converter import program
    from converter.api import materialize

    model = materialize(plan, torch.float32, net.weights_source or net.source)
    shapes = net.input_shapes()
    note = lambda text: tell(f"note: {text}")  # noqa: E731
    traced = program.export_program(
        model,
        shapes,
        note,
        net.source,
        lambda: _instead(net, plan, onnx=False),
        lambda: _batch_fixing_layer(net),
    )
    meta = program.program_metadata(metadata, plan.shapes)
    if format == "pt2":
        return program.write_pt2(traced, meta, output)
    outputs = output_names(plan.config)
    layers = program.layer_descriptions(model)
    instead = lambda: _instead(net, plan, onnx=True)  # noqa: E731
    return program.write_onnx(traced, list(shapes), outputs, meta, output, layers, instead)


def _batch_fixing_layer(net: Net) -> str | None:
    """The first layer, in words, with a top that grows with the input batch but not along
    its first axis (a Reshape naming the batch size, say); None when our shape rules show
    none (or refuse another batch, without telling which layer)."""
    declared = net.input_shapes()
    other = {name: (int(shape[0]) + 1, *shape[1:]) for name, shape in declared.items()}
    try:
        before, after = net.shapes(declared), net.shapes(other)
    except ConverterError:
        return None
    follows = set(declared)  # blobs whose first dimension follows the batch
    for layer, old, new in zip(net.layers, before, after):
        pairs = list(zip(layer.tops, old.top_shapes, new.top_shapes))
        moved = {top for top, a, b in pairs if a[:1] != b[:1]}
        # a top that grows with the batch but not along its first axis; one that keeps its
        # size (PriorBox's anchors) does not depend on the batch at all
        if follows & set(layer.bottoms) and any(a[:1] == b[:1] and a != b for _, a, b in pairs):
            return f"layer '{layer.name}' ({layer.type})"
        follows = (follows - set(layer.tops)) | moved
    return None


def _instead(net: Net, plan: Plan, onnx: bool) -> str:
    """What writes a net that ONNX (``onnx``: the traced program is there) or pt2 cannot."""
    code = _code_writes(net, plan)
    if onnx:
        return "--format pt2 or --format code writes it" if code else "--format pt2 writes it"
    if code:
        return "--format code writes it (plain PyTorch)"
    return "the default safetensors output keeps it (converter.load runs it, its type registered)"


def _code_writes(net: Net, plan: Plan) -> bool:
    """Whether ``--format code`` can write the net (a refusal offers it instead): only a
    net whose every layer type has a code emitter can be."""
    from converter.codegen.folder import model_source

    try:
        model_source(net, plan)
    except ConverterError:
        return False
    return True


def _write_checkpoint(format, net, plan, output, metadata, convention, input, tell) -> Path:
    from converter import checkpoints

    config, depth = _resnet_config(net, plan, format)
    folded = checkpoints.folded_arrays(config, plan.arrays)
    keep = ("producer", "source_prototxt", "source_caffemodel", "input_convention")
    keep += ("input_mean", "input_mean_source", "input_scale")
    path = checkpoints.write_checkpoint(format, folded, {k: metadata[k] for k in keep}, output)
    settings = checkpoints.settings_text(format, config, depth, path, convention)
    folded_biases = config.conv_bias
    title = {"detectron2": "detectron2", "mmdet": "mmdet / mmpretrain"}[format]
    lines = [
        f"{title} settings for {path} (ResNet-{depth} with Caffe's semantics):",
        *("  " + line for line in settings.splitlines()),
    ]
    if folded_biases:
        lines.append(
            f"Folded exactly: the bias of {', '.join(folded_biases)} into the running_mean "
            "of the BatchNorm after it (running_mean - bias): nothing is dropped."
        )
    lines.append(_STEM_POOL)
    lines.append(_measured_stem_pool(net, plan, config, input))
    tell("\n".join(lines))
    return path


def _measured_stem_pool(net: Net, plan: Plan, config, input) -> str:
    """The stem-pool difference measured on this net, as one line."""
    import torch

    from converter.api import materialize
    from converter.checkpoints import stem_pool_difference
    from converter.preprocess import load_input, random_input

    shape = (1, *next(iter(net.input_shapes().values()))[1:])
    if input is not None:
        x = load_input(input, shape)
        what = f"input {Path(input).name}"
    else:
        x = random_input(shape)
        what = "N(0, 50) noise"
    model = materialize(plan, torch.float32, net.weights_source or net.source)
    with torch.no_grad():
        errors, caffe_size, their_size = stem_pool_difference(model, config, x)
    size = "x".join(map(str, x.shape[2:]))
    if not errors:
        return (
            f"Measured on this net ({what}, {size}): pool1 is {caffe_size} in Caffe but "
            f"{their_size} in the framework; every later blob differs in size."
        )
    measured = ", ".join(f"{name} {rel:.2e}" for name, rel in errors.items())
    return f"Measured on this net ({what}, {size}), max|theirs - caffe| / max|caffe|: {measured}."


def load_converted(path: str | os.PathLike, dtype):
    """A converted output as a module ``verify`` can run: a ``--format code`` folder, a
    ``.pt2`` or ``.onnx`` file (output blobs only, float32 only: ``fixed_dtype``), or a
    safetensors / ``.pt`` file (every blob, in ``dtype``)."""
    path = Path(path)
    if path.is_dir():
        from converter.codegen.folder import is_code_folder, load_code_folder

        if not is_code_folder(path):
            raise ConverterError(
                f"{path}: is a folder without model.py and config.json; expected a converted "
                "file or a --format code folder"
            )
        return load_code_folder(path).to(dtype)
    if _program_kind(path):
        from converter.program import load_program

        return load_program(path)
    from converter.api import load

    return load(path, dtype=dtype)


def converted_metadata(path: str | os.PathLike, net: Net) -> dict[str, str]:
    """The metadata of a converted output, after checking (``provenance``) that it was
    converted from ``net``: a code folder by its model.safetensors; a pt2 or ONNX file by
    the config and tensor shapes its metadata keeps (``program.program_metadata``)."""
    from converter.provenance import check_converted_source, check_program_source

    path = Path(path)
    if path.is_dir():
        return check_converted_source(path / "model.safetensors", net)
    if _program_kind(path):
        from converter.program import load_program

        return check_program_source(path, net, dict(load_program(path).metadata))
    return check_converted_source(path, net)


def _program_kind(path: Path) -> str | None:
    """ "pt2" or "onnx" when ``path`` holds a program (by content, whatever its name)."""
    from converter.io import sniff

    kind = sniff.identify_path(path) if path.is_file() else None
    return kind if kind in ("pt2", "onnx") else None
