"""Run the converted model and a reference on the same input; compare every blob.

Against the NumPy executor the model runs in float64, so rounding noise (~1e-12) cannot
hide a mapping error and a tight tolerance holds at any depth. Against float32 references
(real Caffe, OpenCV, saved Caffe blobs) the float32 model is compared with a looser bar:
two float32 implementations of a deep net legitimately differ by a few 1e-4.
"""

from __future__ import annotations

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
    if saved is not None and name in saved:
        return saved[name].astype(np.float32, copy=False)
    return random_input(shape)


def verify(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike,
    reference: str = "auto",
    input: str | os.PathLike | np.ndarray | None = None,
    mean: str | None = None,
    scale: float | None = None,
    tolerance: float | None = None,
    generic: bool = False,
    converted: str | os.PathLike | None = None,
) -> ParityReport:
    """Compare the conversion of the pair (or the ``converted`` file) with a reference.

    ``reference``: "auto", "numpy", "opencv", "caffe", or a ``.npz`` of saved Caffe blobs.
    """
    from converter import references

    net = read_net(prototxt, caffemodel)
    net.shapes()  # a net our shape rules reject never reaches OpenCV or Caffe: they may crash

    def model_in(dtype: torch.dtype) -> nn.Module:
        if converted is not None:
            return load(converted, dtype=dtype)
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
    x = _choose_input(net, input, mean, scale, saved)
    input_name = next(iter(net.input_shapes()))
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
        from converter.reference import run_reference

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
    ours = {name: value for name, value in ours.items() if name != input_name}
    return compare_blobs(
        ours,
        ref,
        order,
        tolerance if tolerance is not None else default_tol,
        reference_name=label,
        precision=precision,
        output=model.output_name,
    )
