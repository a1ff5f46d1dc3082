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

import copy
import math
import os

import numpy as np
import torch
from torch import nn

from converter.api import blobs, build_model, load
from converter.errors import ConverterError
from converter.net import Net, read_net
from converter.parity import ParityReport, compare_blobs

FLOAT64_TOLERANCE = 1e-6
FLOAT32_TOLERANCE = 1e-3
ROUNDING_FACTOR = 8.0  # a float32 bar: this many times our own float32 rounding error


def _choose_input(
    net: Net,
    input: str | os.PathLike | np.ndarray | None,
    mean: str | None,
    scale: float | None,
    saved: dict[str, np.ndarray] | None,
) -> np.ndarray:
    from converter.preprocess import load_input, random_input

    shapes = net.input_shapes()
    if len(shapes) != 1:
        raise ConverterError(
            f"{net.source}: verify handles nets with one input; this one has {list(shapes)}"
        )
    name, shape = next(iter(shapes.items()))
    if isinstance(input, np.ndarray):
        return input.astype(np.float32, copy=False)
    if input is not None:
        return load_input(input, shape, mean=mean, scale=scale)
    if saved is not None:
        if name not in saved:
            raise ConverterError(
                f"the saved blobs hold no input blob '{name}'; give the input they were "
                "computed from (--input FILE.npy)"
            )
        return saved[name].astype(np.float32, copy=False)
    return random_input(shape)


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
) -> ParityReport:
    """Compare the conversion of the pair (or the ``converted`` file) with a reference.

    ``reference``: "auto", "numpy", "opencv", "caffe", or a ``.npz`` of saved Caffe blobs.
    ``tolerance`` (per blob, relative) defaults to 1e-6 against numpy (float64), else to
    ``max(1e-3, 8 x our float32 rounding error)``.
    """
    from converter import references

    reference = os.fspath(reference)
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConverterError(f"tolerance must be a finite number >= 0, not {tolerance}")
    net = read_net(prototxt, caffemodel)
    net.shapes()  # a net our shape rules reject never reaches OpenCV or Caffe: they may crash

    def model_in(dtype: torch.dtype) -> nn.Module:
        if converted is not None:
            model = load(converted, dtype=dtype)
            _check_converted_input(model, net, converted)
            return model
        return build_model(net, generic=generic, dtype=dtype)

    saved = None
    kind = reference
    if reference.endswith(".npz"):
        saved = references.saved_blobs(reference)
        kind = "saved"
    elif reference == "auto":
        kind = references.available_reference("auto")
    elif reference not in ("numpy", "opencv", "caffe"):
        raise ConverterError(
            f"unknown reference '{reference}': use auto, numpy, opencv, caffe or a .npz file"
        )
    input_name, declared = next(iter(net.input_shapes().items()))
    if input is None and saved is None:
        _check_memory(net, input_name, declared)  # before making the random input
    x = _choose_input(net, input, mean, scale, saved)
    _check_memory(net, input_name, x.shape)
    order = net.blob_names()

    ref, label, note = None, "", ""
    if kind == "saved":
        ref, label = saved, references.reference_label("saved", reference)
    elif kind in ("opencv", "caffe"):
        runner = references.opencv_blobs if kind == "opencv" else references.caffe_blobs
        try:
            ref = runner(prototxt, caffemodel, {input_name: x}, order)
            label = references.reference_label(kind)
        except ConverterError as exc:
            if reference != "auto":
                raise
            kind, note = "numpy", f" ({kind} could not run this net: {exc})"
    if kind == "numpy":
        from converter.executor import run_reference

        ref = run_reference(net, x, dtype=np.float64)
        model = model_in(torch.float64)
        ours = blobs(model, x.astype(np.float64))
        precision, default_tol = "float64", FLOAT64_TOLERANCE
        if getattr(getattr(model, "config", None), "fused_bn", False):
            # folded weights were rounded to float32 once: the float32 bar applies
            default_tol = FLOAT32_TOLERANCE
        label = references.reference_label("numpy") + note
    else:
        model = model_in(torch.float32)
        ours = blobs(model, x)
        precision, default_tol = "float32", FLOAT32_TOLERANCE
    # float64 arrays once, so that comparing twice (below) does not convert twice; only the
    # blobs the reference has (saved blobs are often a few)
    ours = {
        name: value.double().numpy()
        for name, value in ours.items()
        if name != input_name and name in ref
    }

    def compare(bar: float, name: str) -> ParityReport:
        return compare_blobs(
            ours, ref, order, bar, reference_name=name, precision=precision,
            output=model.output_name,
        )  # fmt: skip

    report = compare(tolerance if tolerance is not None else default_tol, label)
    if tolerance is None and precision == "float32" and not report.passed:
        # Raising the bar cannot turn a pass into a failure, so it is measured only when needed.
        exact = copy.deepcopy(model).to(torch.float64)  # the same weights, float64 arithmetic
        as64 = {k: v.numpy() for k, v in blobs(exact, x.astype(np.float64)).items() if k in ours}
        del exact
        # our float32 blobs against our float64 ones, measured as every comparison is
        rows = compare_blobs(ours, as64, order, math.inf).rows
        rounding = max((row.rel for row in rows if math.isfinite(row.rel)), default=0.0)
        if ROUNDING_FACTOR * rounding > default_tol:
            note = f" (tolerance: {ROUNDING_FACTOR:g} x our float32 rounding error {rounding:.1e})"
            report = compare(ROUNDING_FACTOR * rounding, label + note)
    return report
