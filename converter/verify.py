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

import collections
import contextlib
import copy
import dataclasses
import functools
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import text_format
from torch import nn

from converter import caffe_pb2
from converter.api import build_model, stream_blobs
from converter.deploy import InputShapes
from converter.errors import ConverterError, counted
from converter.inputs import Inputs, as_dtype, choose_inputs, fill_shape, given_inputs
from converter.layers.registry import ExactPart, exact_blobs
from converter.net import Layer, Net, final_writes, net_definition, read_net, write_caffemodel
from converter.parity import (
    SATURATION,
    Comparison,
    ParityReport,
    compare_blobs,
    saturated_share,
)
from converter.preprocess import InputWarning, is_image
from converter.progress import bar

FLOAT64_TOLERANCE = 1e-6
FLOAT32_TOLERANCE = 1e-3
ROUNDING_FACTOR = 8.0  # a float32 bar: this many times our own float32 rounding error
SATURATED_SHARE = 0.9  # a softmax with this share of one-hot rows gets a note


def _check_saved_blobs(saved: Mapping[str, Any], net: Net, path: str) -> None:
    """Saved blobs must hold a blob the net computes: else they come from another net.
    ``saved``: {blob name: array, or its shape} (the names are what counts)."""
    names = net.blob_names()
    inputs = set(net.input_shapes())
    shared = [name for name in names if name in saved]
    if any(name not in inputs for name in shared):
        return
    theirs = ", ".join(list(saved)[:5]) + (", ..." if len(saved) > 5 else "")
    ours = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    held = (
        f"only the net's input {', '.join(map(repr, shared))}"
        if shared
        else "no blob name of the net"
    )
    raise ConverterError(
        f"{path}: holds {held}, nothing to compare ({counted(len(saved), 'blob')}: {theirs}; "
        f"{net.source} computes {ours}): were they saved from another net? Give the blobs "
        "of a Caffe run of this net (examples/dump_caffe_blobs.py)"
    )


REFERENCES = ("auto", "numpy", "opencv", "caffe")  # or a .npz of saved blobs


def check_options(
    net: Net,
    reference: str | os.PathLike = "auto",
    input: Inputs = None,
    mean: str | None = None,
    scale: float | None = None,
    tolerance: float | None = None,
) -> None:
    """Raise the ConverterError ``verify`` would raise for these options on ``net``, without
    running anything: ``convert --verify`` checks them before it writes its output. The
    checks are verify's own (``_check_tolerance``, ``_check_reference``, ``choose_inputs``);
    a reference asked for by name ("caffe", "opencv") must be importable, and a .npz
    reference must be one whose input blobs fit the net and that holds a blob it computes
    (``_check_saved_input_shapes``, ``_check_saved_blobs``, from the arrays' headers: the
    blobs themselves are read by the run)."""
    from converter import references
    from converter.io import sniff

    _check_tolerance(tolerance)
    reference = _check_reference(reference)
    if reference in ("caffe", "opencv"):  # asked for by name: it must be there
        references.check_available(reference)
    if reference.endswith(".npz"):
        kind = sniff.identify_path(reference) if Path(reference).exists() else None
        if not Path(reference).is_file() or kind not in ("npz", "zip"):
            references.saved_blobs(reference)  # says what is wrong with it
        shapes = references.saved_blob_shapes(reference)
        _check_saved_input_shapes(shapes, net, reference)
        _check_saved_blobs(shapes, net, reference)
    if input is not None or mean is not None or scale is not None:
        choose_inputs(net, input, mean, scale)


def _check_saved_input_shapes(
    saved: Mapping[str, Sequence[int]], net: Net, path: str | os.PathLike
) -> None:
    """A saved input blob must fit the input the net declares, as an ``--input`` array
    must (``preprocess.load_input``: any batch, the rest equal): else the blobs were saved
    from another net, and feeding their input would fail deep in the net or compare
    nothing. ``saved``: {blob name: shape}. ConverterError naming both shapes."""
    for name, shape in net.input_shapes().items():
        if name not in saved:
            continue
        theirs, ours = tuple(saved[name]), tuple(shape)
        if len(theirs) != len(ours) or theirs[1:] != ours[1:]:
            declared = "x".join(map(str, ("N", *ours[1:])))
            raise ConverterError(
                f"{path}: its input blob '{name}' is {'x'.join(map(str, theirs))}, but "
                f"{net.source} takes {declared} (any batch size N): were the blobs saved from "
                "another net? Give the blobs of a Caffe run of this net "
                "(examples/dump_caffe_blobs.py)"
            )


def _check_tolerance(tolerance: float | None) -> None:
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConverterError(f"tolerance must be a finite number >= 0, not {tolerance}")


def _check_reference(reference: str | os.PathLike) -> str:
    """``reference`` as a string: one of ``REFERENCES`` or a .npz path."""
    reference = os.fspath(reference)
    if reference not in REFERENCES and not reference.endswith(".npz"):
        choices = "use auto, numpy, opencv, caffe or a .npz file of blobs saved from Caffe"
        if Path(reference).exists():
            from converter.io import sniff

            kind = sniff.identify_path(reference)
            what = sniff.WHAT[kind] if kind else "not a .npz file"
            raise ConverterError(f"{reference}: --reference: is {what}; {choices}")
        raise ConverterError(f"unknown reference '{reference}': {choices}")
    return reference


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


def _check_memory(net: Net, shapes: Mapping[str, Sequence[int]]) -> None:
    """Refuse, with one line, inputs whose blobs cannot fit in memory (rather than be killed).

    Each side holds the blobs its next layers still need, in float64 at most (8 bytes a
    value), and up to ``RUN_AHEAD_BYTES`` of blobs wait to be compared.
    """
    sizes = {name: math.prod(s) for name, s in net.blob_shapes(shapes).items()}
    last_use = {name: index for index, layer in enumerate(net.layers) for name in layer.tops}
    for index, layer in enumerate(net.layers):
        for name in layer.bottoms:
            last_use[name] = max(last_use.get(name, index), index)
    live: set[str] = set()
    peak = 0
    for index, layer in enumerate(net.layers):
        live.update(layer.tops)
        peak = max(peak, sum(sizes[name] for name in live))
        live = {name for name in live if last_use[name] > index}
    need = 2 * 8 * peak + RUN_AHEAD_BYTES
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        given = ", ".join(f"{name} {tuple(shape)}" for name, shape in shapes.items())
        raise ConverterError(
            f"{net.source}: verifying with input {given} needs about "
            f"{need / 2**30:.1f} GiB for the blobs both sides hold at once, more than this "
            f"machine's memory ({have / 2**30:.1f} GiB); give a smaller input (--input FILE.npy)"
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
    input: Inputs = None,
    mean: str | None = None,
    scale: float | None = None,
    tolerance: float | None = None,
    generic: bool = False,
    converted: str | os.PathLike | None = None,
    input_shapes: InputShapes = None,
    progress: bool = False,
) -> ParityReport:
    """Compare the conversion of the pair (or the ``converted`` file) with a reference.

    ``reference``: "auto" (pycaffe, else OpenCV, else the NumPy executor: the report says
    which ran and why the others were skipped), "numpy", "opencv", "caffe" (these never
    fall back), or a ``.npz`` of saved Caffe blobs. ``tolerance`` (per blob, relative)
    defaults to 1e-6 against numpy (float64), else to 1e-3, raised to 8x our own float32
    rounding error where that is larger (the report says so). ``input``: a file (an image
    or a .npy) or an array for a net with one input, or {input blob: file or array} for any
    (inputs not given get random noise, ``converter.inputs``); ``mean``/``scale`` apply to
    image inputs only. ConverterError for bad input, including a ``converted`` file made
    from another net or (when its metadata holds the caffemodel's sha256) other weights, a
    ``.npz`` holding no blob of the net, or an input other than the one it was saved from.
    ``input_shapes``: see ``read_net``. ``progress`` draws a bar on stderr when it is a
    terminal and the run lasts over 2 s.

    Both forward passes run together and each blob is compared as soon as both sides have
    its final value, then let go of: memory holds the blobs in flight, not every blob.
    """
    from converter import references

    reference = _check_reference(reference)
    _check_tolerance(tolerance)
    net = read_net(prototxt, caffemodel, input_shapes, fill_shape=fill_shape(input))
    net.shapes()  # a net our shape rules reject never reaches OpenCV or Caffe: they may crash
    metadata = None
    if converted is not None:
        from converter.targets import converted_metadata

        metadata = converted_metadata(converted, net)

    def model_in(dtype: torch.dtype) -> nn.Module:
        if converted is not None:
            from converter.targets import load_converted

            model = load_converted(converted, dtype)
            _check_converted_input(model, net, converted)
            return model
        return build_model(net, generic=generic, dtype=dtype)

    saved = None
    if reference.endswith(".npz"):
        saved = references.saved_blobs(reference)
        _check_saved_input_shapes({n: a.shape for n, a in saved.items()}, net, reference)
        _check_saved_blobs(saved, net, reference)
        candidates, choice = [], "saved from a Caffe run, as asked"
    elif reference == "auto":
        candidates, choice = ["caffe", "opencv"], ""
    elif reference in ("opencv", "caffe"):
        candidates, choice = [reference], "as asked"
    else:  # numpy (_check_reference refused any other)
        candidates, choice = [], "as asked"
    if input is None and saved is None:
        _check_memory(net, net.input_shapes())  # before making the random input
    x, described = choose_inputs(
        net,
        input,
        mean,
        scale,
        saved,
        reference if saved else None,
        tolerance if tolerance is not None else FLOAT32_TOLERANCE,
    )
    for value in given_inputs(net, input).values():
        if not isinstance(value, np.ndarray) and is_image(value) and mean is None:
            warnings.warn(
                f"{value}: an image without --mean; the model most likely expects its training "
                "mean subtracted (Kaiming's ResNets: --mean ResNet_mean.binaryproto)",
                InputWarning,
                stacklevel=2,
            )
    _check_memory(net, {name: array.shape for name, array in x.items()})
    order = net.blob_names()

    ref, label, skipped = saved, "", []
    if saved is not None:
        label = references.reference_label("saved", reference)
    for kind in candidates:
        runner = references.caffe_blobs
        if kind == "opencv":  # in a child process: OpenCV can crash on a user's net
            runner = functools.partial(references.opencv_blobs, isolated=True)
        try:
            with _as_caffe_reads(net, prototxt, caffemodel) as (their_prototxt, their_weights):
                ref = runner(their_prototxt, their_weights, x, order)
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
        from converter.executor import iter_blobs

        model = model_in(torch.float64)
        reference_blobs = iter_blobs(net, x, dtype=np.float64)  # checks the layers first
        fixed = getattr(model, "fixed_dtype", None) == torch.float32  # a traced pt2 / ONNX
        x_ours = x if fixed else as_dtype(x, np.float64)
        default_tol = FLOAT32_TOLERANCE if fixed else FLOAT64_TOLERANCE
        if getattr(getattr(model, "config", None), "fused_bn", False):
            # folded weights were rounded to float32 once: the float32 bar applies
            default_tol = FLOAT32_TOLERANCE
        label = references.reference_label("numpy")
    else:
        model = model_in(torch.float32)
        reference_blobs, x_ours, default_tol = iter(ref.items()), x, FLOAT32_TOLERANCE
    inputs = set(net.input_shapes())
    # The inputs are compared with saved ones only: elsewhere both sides are given the same
    wanted = [
        name
        for name in order
        if (saved is not None or name not in inputs) and (ref is None or name in ref)
    ]
    softmax_axis = _softmax_outputs(net)
    # Indices, labels, masks, 0/1 outputs: equal or wrong, never "close"
    exact = exact_blobs(net.layers)
    compared = [name for name in order if name in wanted or name not in inputs]
    comparison = Comparison(compared, tolerance if tolerance is not None else default_tol)
    comparison.output, comparison.exact = model.output_name, exact
    # top-1/top-5 agreement: on class probabilities only (a Softmax over axis 1)
    comparison.classes = {name for name, axis in softmax_axis.items() if axis == 1}
    shares: dict[str, float] = {}
    # the layers whose tops ties can decide: their bottoms on the reference's side, and the
    # tops on ours, are kept (they are small) to judge a difference (_undecided)
    tie_layers = _tie_layers(net, set(wanted))
    tie_bottoms = {name for layer in tie_layers.values() for name in layer.bottoms}
    kept: dict[str, Any] = {}
    reference_blobs = _keeping(reference_blobs, tie_bottoms, kept)

    def compare(name: str, ours: torch.Tensor, theirs: np.ndarray) -> None:
        comparison.add(name, ours, theirs)
        if name in tie_layers:
            kept[name] = (ours, np.array(theirs, dtype=np.float64))
        if name in softmax_axis:
            shares[name] = saturated_share(theirs, softmax_axis[name] % max(theirs.ndim, 1))
        shown.update()

    # Both runs go together: each blob is compared as soon as both sides have its final
    # value, then let go of, so neither side ever holds every blob.
    with bar(len(wanted), f"verify against {label}", progress, unit="blob") as shown:
        _lockstep(
            lambda hand_over: stream_blobs(model, x_ours, hand_over),
            reference_blobs,
            compare,
            set(wanted),
        )
    del reference_blobs
    report = comparison.report(label)
    if tolerance is None and report.first_failure:
        report = _raised_tolerance(report, model, net, generic, x, order, exact, default_tol)
    report.rows = _undecided(report, tie_layers, kept, exact)
    kept.clear()
    report.reference_choice = choice
    report.deviation = _nonfinite_deviation(report, net)
    report.rows = _excused(report, net)
    report.input = described
    report.uninformative = _uninformative(report, shares, inputs)
    report.notes += _saturation_notes(report, described, inputs)
    if converted is not None and report.first_failure:
        from converter.provenance import check_converted_weights

        note = check_converted_weights(converted, metadata, prototxt, caffemodel)
        report.notes += [note] if note else []
    return report


def _raised_tolerance(
    report: ParityReport, model: nn.Module, net: Net, generic: bool, x, order, exact, default_tol
) -> ParityReport:
    """The report judged against 8x our own rounding error where that exceeds the default
    bar (raising it cannot turn a pass into a failure, so it is measured only when needed):
    our float32 rounding against a float32 reference, or, against the float64 executor, the
    rounding of weights stored in float32 (a code folder's)."""
    names = [row.name for row in report.rows]
    if report.precision == "float32":
        rounded, exact_model = model, None
        if getattr(model, "fixed_dtype", None) is not None:
            # A traced file runs in float32 only, so its rounding cannot be told apart from
            # a mapping error: our own float32 model of the net measures it.
            rounded = build_model(net, generic=generic, dtype=torch.float32)
        what = "our own float32 rounding error on this net"
    elif getattr(model, "weights_dtype", None) == torch.float32:
        exact_model = build_model(net, generic=generic, dtype=torch.float64)
        rounded = _weights_rounded(exact_model)
        what = (
            "the error of this net's weights rounded to float32, as the converted file stores them"
        )
    else:
        return report
    rounding = _rounding_error(rounded, x, names, order, exact, exact_model)
    if ROUNDING_FACTOR * rounding <= default_tol:
        return report
    raised = report.with_tolerance(ROUNDING_FACTOR * rounding)
    raised.tolerance_note = (
        f"tolerance raised {raised.tolerance / default_tol:.1f}x from {default_tol:g}: "
        f"{ROUNDING_FACTOR:g} x {what} ({rounding:.1e})"
    )
    if report.precision == "float32":
        raised.tolerance_note += f"; --reference numpy checks in float64 at {FLOAT64_TOLERANCE:g}"
    return raised


Blob = tuple[str, Any]

# Layer types whose top's rows or integers follow a ranking of float values (ties broken by
# position), and the executor function that ranks the reference's values as ours did.
TIE_RANKED = {"DetectionOutput": "detections_ranked_as"}


def _tie_layers(net: Net, compared: set[str]) -> dict[str, Layer]:
    """Compared top -> its layer, for the ``TIE_RANKED`` layers that give the top's final
    value."""
    final = final_writes(net)
    return {
        top: layer
        for index, layer in enumerate(net.layers)
        if layer.type in TIE_RANKED
        for top in layer.tops[:1]
        if top in compared and final.get(top) == index
    }


def _keeping(blobs: Iterator[Blob], names: set[str], kept: dict[str, Any]) -> Iterator[Blob]:
    """``blobs`` passed through, keeping a float64 copy of each one in ``names``."""
    for name, value in blobs:
        if name in names:
            kept[name] = np.array(value, dtype=np.float64)
        yield name, value


def _undecided(report: ParityReport, layers: dict[str, Layer], kept: dict[str, Any], exact) -> list:
    """The report's rows, those of a failing ``TIE_RANKED`` top marked ``undecided`` when
    the reference's own layer (the executor's), on the reference's own bottoms, gives the
    reference's top as they are and ours with the scores moved by no more than the
    tolerance allows (ties broken as ours broke them), each within the tolerance.

    Ties are what a saturated softmax makes in float32 (many scores exactly 1.0, ranked by
    position) while float64 still tells them apart; a wrong box, a wrong label on scores
    apart by more than that, or a reference top its bottoms do not give still fails. The
    tolerance is relative to the largest float of the top (scores and boxes), as the
    comparison's measure is.
    """
    from converter.executor import FORWARD, detection

    def agree(name: str, a: np.ndarray, b: np.ndarray | None) -> bool:
        if b is None:
            return False
        judged = compare_blobs({name: a}, {name: b}, [name], report.tolerance, exact=exact)
        return judged.rows[0].passed

    rows = []
    for row in report.rows:
        layer = layers.get(row.name)
        if row.passed or layer is None or not all(b in kept for b in layer.bottoms):
            rows.append(row)
            continue
        ours, theirs = kept[row.name]
        ours = ours.detach().double().numpy() if hasattr(ours, "detach") else np.asarray(ours)
        bottoms = [kept[name] for name in layer.bottoms]
        where = f"{layer.name} ({layer.type})"
        ranked = getattr(detection, TIE_RANKED[layer.type])
        box_tolerance = report.tolerance * _float_scale(theirs, exact.get(row.name))
        try:
            (as_is,) = FORWARD[layer.type](layer, bottoms, [], where)
            tied, window = ranked(layer, bottoms, ours, report.tolerance, box_tolerance)
        except ConverterError:  # bottoms the executor refuses (a prior with no width): no
            rows.append(row)  # judgement, the failure stands
            continue
        if agree(row.name, as_is, theirs) and agree(row.name, ours, tied):
            row = dataclasses.replace(
                row,
                undecided=(
                    f"the reference's scores tie to within {window:.1e}: its own "
                    f"{layer.type}, with those ties broken as ours broke them, gives ours"
                ),
            )
        rows.append(row)
    return rows


def _float_scale(values: np.ndarray, exact: ExactPart | None) -> float:
    """The largest magnitude among ``values`` less their integer part ``exact`` (the scale
    the comparison's relative measure divides by); 1.0 when there is none or it is 0."""
    if exact is not None and exact.axis is not None and values.ndim:
        values = np.delete(values, list(exact.index), axis=exact.axis % values.ndim)
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


# How far one side may run ahead of the other, in bytes of blobs waiting to be compared.
# Switching between the two runs costs more than it seems: after each op, torch's OpenMP
# workers and NumPy's BLAS threads spin a while, and on a 2-core machine the other run
# waits for them (alternating blob by blob made the bundled ResNet-152 check 4x slower).
# In steps of this size a full-width ResNet-152 at batch 8 alternates about ten times.
RUN_AHEAD_BYTES = 256 << 20


def _nbytes(value: Any) -> int:
    """Size of a NumPy array or torch tensor, in bytes."""
    if hasattr(value, "element_size"):
        return value.element_size() * value.nelement()
    return int(getattr(value, "nbytes", 0))


def _lockstep(
    run: Callable[[Callable[[str, Any], None]], None],
    reference: Iterator[Blob],
    compare: Callable[[str, Any, Any], None],
    wanted: set[str],
) -> None:
    """Drive ``run`` (our model: it hands each blob over as it becomes final) and, for
    each blob it hands over, advance ``reference`` until it has given the same blob, and on
    until ``RUN_AHEAD_BYTES`` of its blobs wait; then ``compare(name, ours, theirs)`` and
    let go of both. Reference blobs nobody compares are dropped at once."""
    waiting: dict[str, Any] = {}
    held = 0
    ended = False

    def hand_over(name: str, ours: Any) -> None:
        nonlocal ended, held
        if name not in wanted:
            return
        while not ended and (name not in waiting or held < RUN_AHEAD_BYTES):
            try:
                other, theirs = next(reference)
            except StopIteration:
                ended = True
                break
            if other in wanted:
                waiting[other] = theirs
                held += _nbytes(theirs)
        if name in waiting:
            theirs = waiting.pop(name)
            held -= _nbytes(theirs)
            compare(name, ours, theirs)

    run(hand_over)


def _rounding_error(
    rounded: nn.Module,
    x: np.ndarray,
    names: list[str],
    order,
    exact: dict[str, ExactPart],
    exact_model: nn.Module | None = None,
) -> float:
    """A rounding error of ours on this input: the blobs of ``rounded`` (run in its own
    dtype) against ``exact_model`` (default: ``rounded``'s weights in float64) run in
    float64, measured as every comparison is (largest over ``names``), leaving out every
    blob ``exact`` names, wholly or in part: a rounding that moves an index says nothing of
    the float values' error, and the floats beside one follow it (DetectionOutput's scores
    and boxes sit in the rows its labels and ranking chose: a reordered row moves them by
    whole boxes), so they would raise the bar for every blob past any error."""
    names = [name for name in names if name not in exact]
    as64 = copy.deepcopy(rounded).to(torch.float64) if exact_model is None else exact_model
    measured = Comparison(order, math.inf, exact=exact)
    with _taking_turns(lambda hand_over: stream_blobs(rounded, x, hand_over, names)) as low:
        _lockstep(
            lambda hand_over: stream_blobs(as64, _in_float64(x), hand_over, names),
            low,
            lambda name, ours64, ours_low: measured.add(name, ours_low, ours64),
            set(names),
        )
    rels = [row.rel for row in measured.rows.values() if math.isfinite(row.rel)]
    return max(rels, default=0.0)


def _in_float64(x: np.ndarray | Mapping[str, np.ndarray]):
    """The input (one array, or the arrays by input name) in float64."""
    return as_dtype(x, np.float64) if isinstance(x, Mapping) else x.astype(np.float64)


def _weights_rounded(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose floating tensors are rounded to float32 (and kept in the
    model's dtype): what a model stored in float32 holds."""
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.float())
    return rounded


@contextlib.contextmanager
def _taking_turns(run: Callable[[Callable[[str, Any], None]], None]):
    """What ``run`` hands over, as an iterator. ``run`` (a forward pass, which cannot be
    paused otherwise) works on another thread, but never at the same time as the reader:
    it fills up to ``RUN_AHEAD_BYTES``, then waits while the reader takes them."""
    turn = threading.Condition()
    state = {"worker": True, "done": False, "stop": False, "error": None, "held": 0}
    handed: collections.deque = collections.deque()

    def put(name: str, value: Any) -> None:
        with turn:
            handed.append((name, value))
            state["held"] += _nbytes(value)
            if state["held"] >= RUN_AHEAD_BYTES:
                state["worker"] = False
                turn.notify_all()
                turn.wait_for(lambda: state["worker"] or state["stop"])
            if state["stop"]:
                raise _Stopped

    def work() -> None:
        try:
            run(put)
        except _Stopped:
            pass
        except BaseException as exc:  # raised again in the reader
            state["error"] = exc
        with turn:
            state["done"], state["worker"] = True, False
            turn.notify_all()

    def read() -> Iterator[Blob]:
        while True:
            with turn:
                turn.wait_for(lambda: not state["worker"])
                if not handed:
                    if state["done"]:
                        if state["error"] is not None:
                            raise state["error"]
                        return
                    state["worker"] = True  # the worker's turn: it fills the queue again
                    turn.notify_all()
                    continue
                name, value = handed.popleft()
                state["held"] -= _nbytes(value)
            yield name, value

    worker = threading.Thread(target=work, name="caffe2torch-turns", daemon=True)
    worker.start()
    try:
        yield read()
    finally:
        with turn:
            state["stop"] = True
            turn.notify_all()
        worker.join()


class _Stopped(Exception):
    """The reader of ``_taking_turns`` has stopped: the worker ends its forward pass."""


def _softmax_outputs(net: Net) -> dict[str, int]:
    """Blob -> softmax axis (counted from 0), for each blob whose final value is a Softmax
    layer's output."""
    axis: dict[str, int] = {}
    shapes = net.blob_shapes()
    for layer in net.layers:
        for top in layer.tops:
            axis.pop(top, None)  # a later in-place layer changes the blob
            if layer.type == "Softmax":
                axis[top] = layer.param.softmax_param.axis % max(len(shapes[top]), 1)
    return axis


def _reason(exc: ConverterError, prototxt) -> str:
    """Why a reference could not run, without the file name and the advice to use another
    reference (the report says which one ran instead)."""
    text = str(exc).removeprefix(f"{prototxt}: ")
    return text.split("; use ")[0]


def _uninformative(
    report: ParityReport, shares: dict[str, float], inputs: set[str]
) -> dict[str, str]:
    """The compared blobs whose agreement cannot show an error on this input: a Softmax
    output whose rows are nearly all one-hot (any two nets agreeing on the argmax agree on
    it, whatever else they compute), and the net's inputs (fed, not computed)."""
    found = {}
    for row in report.rows:
        if row.name in inputs:
            found[row.name] = "an input of the net (fed to it, not computed)"
        elif row.shape == row.reference_shape and shares.get(row.name, 0.0) >= SATURATED_SHARE:
            found[row.name] = (
                f"a saturated softmax: {shares[row.name]:.0%} of its rows are one-hot to "
                f"within {SATURATION:g}"
            )
    return found


def _saturation_notes(
    report: ParityReport, described: dict[str, Any], inputs: set[str]
) -> list[str]:
    """A note for each saturated Softmax output among blobs that do carry the check (when
    none does, the verdict says so: INCONCLUSIVE). The advice to give realistic data goes
    with the default random input only."""
    if report.inconclusive:
        return []
    count = len(report.rows) - len(report.uninformative)
    others = (
        "the other blob compared carries"
        if count == 1
        else f"the other {counted(count, 'blob')} compared carry"
    )
    kinds = [one["kind"] for one in described.get("inputs", {"": described}).values()]
    random = "random" in kinds
    return [
        f"'{name}' is {what}{' (random noise often does that)' if random else ' on this input'}"
        f", so agreeing on it tells little ({others} the check)"
        + (
            "; run with --input and realistic data (an image with --mean, or a preprocessed .npy)"
            if random
            else ""
        )
        for name, what in report.uninformative.items()
        if name not in inputs
    ]


def _excused(report: ParityReport, net: Net) -> list:
    """The report's rows, with ``excused`` set (to ``report.deviation``) on the first failure
    and on each later failing blob computed from it whose only disagreement is the same:
    NaN/Inf on the same side, finite values within the tolerance (the reference's NaN after
    a ReLU of -inf flows on through the layers that read it). Any other failing row stays a
    failure, so it still makes the verdict FAIL."""
    first = report.first_failure
    if not report.deviation or first is None:
        return report.rows
    reference_side = first.nan_reference_only == first.nonfinite_mismatch
    after = {first.name}  # the blobs computed from the first failure, in network order
    writer = max((i for i, layer in enumerate(net.layers) if first.name in layer.tops), default=-1)
    for layer in net.layers[writer + 1 :]:
        if after & set(layer.bottoms):
            after |= set(layer.tops)

    def same_pattern(row) -> bool:
        nan_side = row.nan_reference_only if reference_side else row.nan_ours_only
        return (
            row.name in after
            and row.shape == row.reference_shape
            and not row.exact_mismatch
            and row.nonfinite_mismatch > 0
            and nan_side == row.nonfinite_mismatch
            and row.rel <= report.tolerance
        )

    return [
        dataclasses.replace(row, excused=report.deviation)
        if not row.passed and not row.undecided and same_pattern(row)
        else row
        for row in report.rows
    ]


def _nonfinite_deviation(report: ParityReport, net: Net) -> str:
    """Why the first failure is a documented difference of PyTorch's ops from Caffe's on
    NaN/Inf, not a wrong conversion ("" when it is not): the finite values agree and every
    disagreement is the one the layer writing the blob makes.

    - ReLU with negative_slope 0: Caffe computes max(x, 0) + 0 * min(x, 0), NaN for -inf
      (relu_layer.cpp); torch.relu gives 0. So the reference alone holds NaN there.
    - MAX pooling: Caffe starts from -FLT_MAX and takes a value only when it is greater
      (pooling_layer.cpp), so NaN never wins; torch's max pooling propagates it. So we
      alone hold NaN there.
    """
    first = report.first_failure
    if (
        first is None
        or first.shape != first.reference_shape
        or first.exact_mismatch
        or not first.nonfinite_mismatch
        or not first.rel <= report.tolerance
    ):
        return ""
    for layer in net.layers:
        if first.name not in layer.tops:
            continue
        if (
            layer.type == "ReLU"
            and layer.param.relu_param.negative_slope == 0
            and first.nan_reference_only == first.nonfinite_mismatch
        ):
            return (
                f"ReLU layer '{layer.name}' gives 0 for -inf in PyTorch, NaN in Caffe "
                "(max(x, 0) + 0 * min(x, 0), relu_layer.cpp)"
            )
        if (
            layer.type == "Pooling"
            and layer.param.pooling_param.pool == caffe_pb2.PoolingParameter.MAX
            and first.nan_ours_only == first.nonfinite_mismatch
        ):
            return (
                f"MAX Pooling layer '{layer.name}' propagates NaN in PyTorch; Caffe skips it "
                "(it keeps a value only if greater, from -FLT_MAX: pooling_layer.cpp)"
            )
    return ""
