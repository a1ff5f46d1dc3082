"""Run the converted model and a reference on the same input; compare every blob.

Against the NumPy executor the model runs in float64, so rounding noise (~1e-12) cannot
hide a mapping error and a tight tolerance holds at any depth. Against float32 references
(real Caffe, OpenCV, saved Caffe blobs) the float32 model is compared with a looser bar:
two float32 implementations of a deep net legitimately differ by a few 1e-4, and by more
in deep nets whose activations grow. The default bar is therefore 1e-3, raised where needed
to 8x our own float32 rounding error (our float32 model against our float64 model, the same
rule that set the golden fixtures' tolerances from Caffe's float32 error).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import text_format
from torch import nn

from converter.api import blobs, build_model, load
from converter.deploy import InputShapes
from converter.errors import ConverterError
from converter.net import Net, net_definition, read_net, write_caffemodel
from converter.parity import SATURATION, ParityReport, compare_blobs, saturated_share
from converter.preprocess import InputWarning

FLOAT64_TOLERANCE = 1e-6
FLOAT32_TOLERANCE = 1e-3
ROUNDING_FACTOR = 8.0  # a float32 bar: this many times our own float32 rounding error
SATURATED_SHARE = 0.9  # a softmax with this share of one-hot rows gets a note


def _choose_input(
    net: Net,
    input: str | os.PathLike | np.ndarray | None,
    mean: str | None,
    scale: float | None,
    saved: dict[str, np.ndarray] | None,
    saved_path: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The input both sides run on, and its description for the report (``input``)."""
    from converter.preprocess import is_image, load_input, random_input

    shapes = net.input_shapes()
    if len(shapes) != 1:
        raise ConverterError(
            f"{net.source}: verify handles nets with one input; this one has {list(shapes)}"
        )
    name, shape = next(iter(shapes.items()))
    image = not isinstance(input, np.ndarray) and input is not None and is_image(input)
    if (mean is not None or scale is not None) and not image:
        given = "random noise" if input is None else "an array used as is"
        raise ConverterError(
            f"--mean and --scale apply to an image input (--input photo.jpg); the input here "
            f"is {given}, so they would be ignored: drop them or give an image"
        )
    if isinstance(input, np.ndarray):
        x, kind, file, source = input.astype(np.float32, copy=False), "array", None, "an array"
    elif input is not None:
        x, kind, file = load_input(input, shape, mean=mean, scale=scale), "file", str(input)
        source = (
            f"image {input} (resized, center-cropped, BGR 0-255)"
            if image
            else f"{input} (preprocessed, used as is)"
        )
        kind = "image" if image else "file"
    elif saved is not None:
        if name not in saved:
            raise ConverterError(
                f"the saved blobs hold no input blob '{name}'; give the input they were "
                "computed from (--input FILE.npy)"
            )
        x, kind, file = saved[name].astype(np.float32, copy=False), "saved", saved_path
        source = f"input blob '{name}' of {Path(saved_path).name if saved_path else 'the .npz'}"
    else:
        x, kind, file = random_input(shape), "random", None
        source = "random N(0, 50) noise, seed 0 (give --input for real data)"
    described = {
        "kind": kind,
        "file": file,
        "source": source,
        "shape": list(x.shape),
        "mean": None if mean is None else str(mean),
        "scale": scale,
    }
    return x, described


def _check_converted_input(model: nn.Module, net: Net, converted: str | os.PathLike) -> None:
    """A converted file of another net would fail deep inside torch: say so up front."""
    config = model.caffe_config()
    if "input_shapes" in config:
        theirs = [tuple(shape) for shape in config["input_shapes"].values()]
    else:
        theirs = [tuple(config.get("input_shape", ()))]
    ours = [tuple(shape) for shape in net.input_shapes().values()]
    if [shape[1:] for shape in theirs] != [shape[1:] for shape in ours]:
        raise ConverterError(
            f"{converted}: was converted from a net with input {theirs}, but {net.source} "
            f"has input {ours}; was it converted from this net?"
        )


def _check_memory(net: Net, input_name: str, shape: tuple[int, ...]) -> None:
    """Refuse, with one line, an input whose blobs cannot fit in memory (rather than be killed).

    Both sides keep every blob in float64 until the comparison: about 16 bytes per value.
    """
    values = sum(math.prod(s) for s in net.blob_shapes({input_name: shape}).values())
    need = 16 * values
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise ConverterError(
            f"{net.source}: verifying with input {tuple(shape)} needs about "
            f"{need / 2**30:.1f} GiB for the blobs of both sides, more than this machine's memory ("
            f"{have / 2**30:.1f} GiB); give a smaller input (--input FILE.npy)"
        )


@contextlib.contextmanager
def _as_caffe_reads(
    net: Net, prototxt: str | os.PathLike, caffemodel: str | os.PathLike
) -> Iterator[tuple[str | os.PathLike, str | os.PathLike]]:
    """The files an external runtime (pycaffe, OpenCV) is given: the user's own when it
    reads them as we did, else a deploy prototxt and a float caffemodel of the net as read
    (a training net made deploy, HDF5, half-precision or compressed weights, ...)."""
    plain = net.weights_format == "caffemodel" and "float16" not in (net.weights_dtype or "")
    if not net.changes and plain:
        yield prototxt, caffemodel
        return
    with tempfile.TemporaryDirectory(prefix="caffe2torch-") as folder:
        deploy = Path(folder) / "deploy.prototxt"
        deploy.write_text(text_format.MessageToString(net_definition(net)))
        weights = Path(folder) / "weights.caffemodel"
        write_caffemodel(net, weights)
        yield deploy, weights


def verify(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike,
    reference: str | os.PathLike = "auto",
    input: str | os.PathLike | np.ndarray | None = None,
    mean: str | None = None,
    scale: float | None = None,
    tolerance: float | None = None,
    generic: bool = False,
    converted: str | os.PathLike | None = None,
    input_shapes: InputShapes = None,
) -> ParityReport:
    """Compare the conversion of the pair (or the ``converted`` file) with a reference.

    ``reference``: "auto" (pycaffe, else OpenCV, else the NumPy executor: the report says
    which ran and why the others were skipped), "numpy", "opencv", "caffe" (these never
    fall back), or a ``.npz`` of saved Caffe blobs. ``tolerance`` (per blob, relative)
    defaults to 1e-6 against numpy (float64), else to 1e-3, raised to 8x our own float32
    rounding error where that is larger (the report says so). ``mean``/``scale`` apply to an
    image ``input`` only. ConverterError for bad input, including a ``converted`` file made
    from another net or (when its metadata holds the caffemodel's sha256) other weights.
    ``input_shapes``: see ``read_net``.
    """
    from converter import references

    reference = os.fspath(reference)
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConverterError(f"tolerance must be a finite number >= 0, not {tolerance}")
    net = read_net(prototxt, caffemodel, input_shapes)
    net.shapes()  # a net our shape rules reject never reaches OpenCV or Caffe: they may crash
    metadata = None
    if converted is not None:
        from converter.provenance import check_converted_source

        metadata = check_converted_source(converted, net)

    def model_in(dtype: torch.dtype) -> nn.Module:
        if converted is not None:
            model = load(converted, dtype=dtype)
            _check_converted_input(model, net, converted)
            return model
        return build_model(net, generic=generic, dtype=dtype)

    saved = None
    if reference.endswith(".npz"):
        saved = references.saved_blobs(reference)
        candidates, choice = [], "saved from a Caffe run, as asked"
    elif reference == "auto":
        candidates, choice = ["caffe", "opencv"], ""
    elif reference in ("opencv", "caffe"):
        candidates, choice = [reference], "as asked"
    elif reference == "numpy":
        candidates, choice = [], "as asked"
    else:
        raise ConverterError(
            f"unknown reference '{reference}': use auto, numpy, opencv, caffe or a .npz file"
        )
    input_name, declared = next(iter(net.input_shapes().items()))
    if input is None and saved is None:
        _check_memory(net, input_name, declared)  # before making the random input
    x, described = _choose_input(net, input, mean, scale, saved, reference if saved else None)
    if described["kind"] == "image" and mean is None:
        warnings.warn(
            f"{input}: an image without --mean; the model most likely expects its training "
            "mean subtracted (Kaiming's ResNets: --mean ResNet_mean.binaryproto)",
            InputWarning,
            stacklevel=2,
        )
    _check_memory(net, input_name, x.shape)
    order = net.blob_names()

    ref, label, skipped = saved, "", []
    if saved is not None:
        label = references.reference_label("saved", reference)
    for kind in candidates:
        runner = references.opencv_blobs if kind == "opencv" else references.caffe_blobs
        try:
            with _as_caffe_reads(net, prototxt, caffemodel) as (their_prototxt, their_weights):
                ref = runner(their_prototxt, their_weights, {input_name: x}, order)
        except ConverterError as exc:
            if reference != "auto":
                raise
            skipped.append(f"{kind} skipped: {_reason(exc, prototxt)}")
            continue
        label = references.reference_label(kind)
        break
    if reference == "auto":  # why this one: the ones before it in the order, skipped
        choice = "; ".join(
            ["chosen by --reference auto (caffe, else opencv, else numpy)", *skipped]
        )
    if ref is None:  # numpy, asked for or the last resort of auto
        from converter.executor import run_reference

        ref = run_reference(net, x, dtype=np.float64)
        model = model_in(torch.float64)
        ours = blobs(model, x.astype(np.float64))
        default_tol = FLOAT64_TOLERANCE
        if getattr(getattr(model, "config", None), "fused_bn", False):
            # folded weights were rounded to float32 once: the float32 bar applies
            default_tol = FLOAT32_TOLERANCE
        label = references.reference_label("numpy")
    else:
        model = model_in(torch.float32)
        ours = blobs(model, x)
        default_tol = FLOAT32_TOLERANCE
    # What ran, read from the values themselves: the label cannot claim another precision.
    precision = str(next(iter(ours.values())).dtype).removeprefix("torch.") if ours else "?"
    # float64 arrays once, so that comparing twice (below) does not convert twice; only the
    # blobs the reference has (saved blobs are often a few)
    ours = {
        name: value.double().numpy()
        for name, value in ours.items()
        if name != input_name and name in ref
    }

    def compare(bar: float) -> ParityReport:
        return compare_blobs(
            ours, ref, order, bar, reference_name=label, precision=precision,
            output=model.output_name,
        )  # fmt: skip

    report = compare(tolerance if tolerance is not None else default_tol)
    if tolerance is None and precision == "float32" and not report.passed:
        # Raising the bar cannot turn a pass into a failure, so it is measured only when needed.
        exact = copy.deepcopy(model).to(torch.float64)  # the same weights, float64 arithmetic
        as64 = {k: v.numpy() for k, v in blobs(exact, x.astype(np.float64)).items() if k in ours}
        del exact
        # our float32 blobs against our float64 ones, measured as every comparison is
        rows = compare_blobs(ours, as64, order, math.inf).rows
        rounding = max((row.rel for row in rows if math.isfinite(row.rel)), default=0.0)
        if ROUNDING_FACTOR * rounding > default_tol:
            report = compare(ROUNDING_FACTOR * rounding)
            report.tolerance_note = (
                f"tolerance raised {report.tolerance / default_tol:.1f}x from {default_tol:g}: "
                f"{ROUNDING_FACTOR:g} x our own float32 rounding error on this net "
                f"({rounding:.1e}); --reference numpy checks in float64 at "
                f"{FLOAT64_TOLERANCE:g}"
            )
    report.reference_choice = choice
    report.input = described
    report.notes += _saturation_notes(net, report, ref, described)
    if converted is not None and not report.passed:
        from converter.provenance import check_converted_weights

        note = check_converted_weights(converted, metadata, prototxt, caffemodel)
        report.notes += [note] if note else []
    return report


def _reason(exc: ConverterError, prototxt) -> str:
    """Why a reference could not run, without the file name and the advice to use another
    reference (the report says which one ran instead)."""
    text = str(exc).removeprefix(f"{prototxt}: ")
    return text.split("; use ")[0]


def _saturation_notes(
    net: Net, report: ParityReport, ref: dict[str, np.ndarray], described: dict[str, Any]
) -> list[str]:
    """A note for each compared Softmax output whose rows are nearly all one-hot."""
    softmax_axis = {}
    for layer in net.layers:
        for top in layer.tops:
            softmax_axis.pop(top, None)  # a later in-place layer changes the blob
            if layer.type == "Softmax":
                softmax_axis[top] = layer.param.softmax_param.axis
    notes = []
    for row in report.rows:
        if row.name not in softmax_axis or row.shape != row.reference_shape:
            continue
        values = np.asarray(ref[row.name])
        axis = softmax_axis[row.name] % max(values.ndim, 1)
        share = saturated_share(values, axis)
        if share >= SATURATED_SHARE:
            random = " (random noise often does that)" if described["kind"] == "random" else ""
            notes.append(
                f"'{row.name}' is a saturated softmax: {share:.0%} of its rows are one-hot to "
                f"within {SATURATION:g}{random}, so agreeing on it tells little; run with "
                "--input and realistic data (an image with --mean, or a preprocessed .npy)"
            )
    return notes
