"""Where Caffe's own blob values come from when checking a converted model.

Three independent sources of "what Caffe computes" for a (prototxt, caffemodel, input):

- ``caffe_blobs``: pycaffe itself, when ``import caffe`` works (the ground truth);
- ``opencv_blobs``: OpenCV's dnn Caffe importer, an independent float32 implementation that
  needs no Caffe build (``pip install 'caffe2torch[opencv]'``);
- ``saved_blobs``: a ``.npz`` written where Caffe is installed (``examples/dump_caffe_blobs.py``).

Every function returns float32 arrays keyed by Caffe blob name, holding the value a blob has
at the end of the forward pass, i.e. after the last in-place layer that writes to it.
The NumPy executor (``converter.executor``) is the fallback when none of these is at hand.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from google.protobuf import text_format

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.io.prototxt import read_text
from converter.layers.conv import conv_channels, conv_geometry
from converter.layers.pool import pool_geometry
from converter.net import Layer, Net, in_place_tops, read_net, sharing_groups

# ----------------------------------------------------------------------------- availability


def _import_caffe() -> ModuleType:
    """pycaffe, quiet (glog level 2); ConverterError when it cannot be imported."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        return importlib.import_module("caffe")
    except Exception as exc:  # a broken Caffe build raises more than ImportError
        raise ConverterError(
            f"pycaffe is not available (import caffe failed: {exc}); use --reference opencv, "
            "numpy, or a blobs .npz written by examples/dump_caffe_blobs.py"
        ) from None


def _import_cv2() -> ModuleType:
    """OpenCV 4.x with the dnn Caffe importer; ConverterError otherwise."""
    try:
        cv2 = importlib.import_module("cv2")
    except Exception as exc:
        raise ConverterError(
            f"OpenCV is not available (import cv2 failed: {exc}); install it with "
            "pip install 'caffe2torch[opencv]'"
        ) from None
    version = getattr(cv2, "__version__", "0")
    match = re.match(r"\d+", version)
    major = int(match.group()) if match else 0
    if major >= 5:
        raise ConverterError(
            f"OpenCV {version} is installed; the OpenCV reference needs OpenCV 4 "
            "(pip install 'opencv-python-headless<5')"
        )
    if not hasattr(getattr(cv2, "dnn", None), "readNetFromCaffe"):
        raise ConverterError(
            f"OpenCV {version} has no dnn.readNetFromCaffe; install opencv-python-headless<5"
        )
    return cv2


def check_available(kind: str) -> None:
    """ConverterError, saying what to do, when the ``kind`` reference ("caffe" or "opencv")
    cannot run here: checked before ``convert --verify`` writes anything."""
    (_import_caffe if kind == "caffe" else _import_cv2)()


def reference_label(kind: str, path: str | os.PathLike | None = None) -> str:
    """The name a parity report shows for a reference: "caffe", "opencv 4.14.0", ..."""
    if kind == "opencv":
        return f"opencv {_import_cv2().__version__}"
    if kind == "numpy":
        return "numpy float64"
    if kind == "saved":
        return f"saved blobs {Path(path).name if path else ''}".rstrip()
    return kind


# ----------------------------------------------------------------------------- pycaffe


def caffe_blobs(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike,
    inputs: Mapping[str, np.ndarray],
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Run real Caffe (CPU, TEST phase) and copy the requested blobs (all when names is None)."""
    caffe = _import_caffe()
    caffe.set_mode_cpu()
    net = caffe.Net(str(prototxt), str(caffemodel), caffe.TEST)
    for name, array in inputs.items():
        if name not in net.blobs:
            raise ConverterError(f"{prototxt}: Caffe's net has no input blob '{name}'")
        array = np.asarray(array, dtype=np.float32)
        net.blobs[name].reshape(*array.shape)
        net.blobs[name].data[...] = array
    net.reshape()
    net.forward()
    wanted = list(net.blobs.keys()) if names is None else list(names)
    missing = [name for name in wanted if name not in net.blobs]
    if missing:
        raise ConverterError(f"{prototxt}: Caffe's net has no blob {', '.join(missing)}")
    return {name: np.array(net.blobs[name].data, dtype=np.float32) for name in wanted}


# ----------------------------------------------------------------------------- OpenCV


def _final_producers(net: Net) -> dict[str, tuple[int, int]]:
    """Blob -> (layer index, top index) of the LAST layer writing it: Caffe's final value."""
    producers: dict[str, tuple[int, int]] = {}
    for index, layer in enumerate(net.layers):
        for top_index, top in enumerate(layer.tops):
            producers[top] = (index, top_index)
    return producers


@dataclass(frozen=True)
class Deviation:
    """A layer setting that OpenCV's Caffe importer runs differently from Caffe, or not at all.

    ``applies(layer, bottom_shapes, written)`` says whether ``layer`` has that setting;
    ``written`` is the layer's parameter as the prototxt spells it (before this tool
    translated any fork field), since OpenCV reads the prototxt text itself.
    """

    layer_type: str
    what: str  # how OpenCV differs, in words a message can show
    applies: Callable[[Layer, list[tuple[int, ...]], caffe_pb2.LayerParameter], bool]


def _always(layer, bottoms, written) -> bool:
    return True


def _ip_transpose(layer, bottoms, written) -> bool:
    return layer.param.inner_product_param.transpose


def _batch_statistics(layer, bottoms, written) -> bool:
    bn = layer.param.batch_norm_param
    return bn.HasField("use_global_stats") and not bn.use_global_stats


def _deconv_dilation(layer, bottoms, written) -> bool:
    return any(d > 1 for d in layer.param.convolution_param.dilation)


def _round_mode_written(layer, bottoms, written) -> bool:
    return written.pooling_param.HasField("round_mode")


def _max_pool_empty_window(layer, bottoms, written) -> bool:
    """MAX pooling whose last window starts at or past the input's end: with pad 0 and
    ceil rounding Caffe keeps that window (``pool_geometry``) and writes -FLT_MAX there."""
    pp = layer.param.pooling_param
    if pp.pool != pp.MAX or not bottoms or len(bottoms[0]) != 4:
        return False
    height, width = bottoms[0][2:]
    geo = pool_geometry(pp, height, width, layer.name)
    return any(
        (out - 1) * stride - pad >= size
        for out, stride, pad, size in zip(geo.output, geo.stride, geo.pad, (height, width))
    )


def _log_parameters(layer, bottoms, written) -> bool:
    lp = layer.param.log_param
    return lp.base != -1 or lp.scale != 1 or lp.shift != 0


def _one_pad_of_two(layer, bottoms, written) -> bool:
    cp = layer.param.convolution_param
    return cp.HasField("pad_h") != cp.HasField("pad_w")


def _depthwise_dilated_3x3(layer, bottoms, written) -> bool:
    """A depthwise 3x3 convolution, stride 1, with a pad below its dilation on some axis:
    OpenCV 4.14's depthwise kernel gets these wrong (errors of 0.7-0.9 of the output)."""
    cp = layer.param.convolution_param
    if not bottoms or len(bottoms[0]) != 4 or cp.axis not in (1, -3):
        return False
    channels = bottoms[0][1]
    if conv_channels(layer, channels) != (channels, channels):
        return False
    kernel, stride, pad, dilation = conv_geometry(cp, 2, layer.name)
    return kernel == [3, 3] and stride == [1, 1] and any(0 < p < d for p, d in zip(pad, dilation))


def _depthwise_settings(layer, bottoms, written) -> bool:
    cp = layer.param.convolution_param
    channels = bottoms[0][1] if bottoms and len(bottoms[0]) > 1 else None
    return cp.num_output != channels or cp.group != channels


def _interp_shrink(layer, bottoms, written) -> bool:
    return layer.param.interp_param.HasField("shrink_factor")


def _interp_crop(layer, bottoms, written) -> bool:
    ip = layer.param.interp_param
    return ip.pad_beg != 0 or ip.pad_end != 0


def _interp_other_forms(layer, bottoms, written) -> bool:
    return len(layer.bottoms) > 1 or layer.param.interp_param.interp_type != "bilinear"


def _mask_top(layer, bottoms, written) -> bool:
    return len(layer.tops) > 1


def _relu6_parameters(layer, bottoms, written) -> bool:
    rp = layer.param.relu6_param
    return rp.negative_slope != 0 or rp.threshold != 6


def _partial_order(layer, bottoms, written) -> bool:
    """A Permute order naming fewer axes than the input has (OpenCV takes it for the whole
    order), other than a leading identity, which both leave as it is."""
    order = list(layer.param.permute_param.order)
    return order != list(range(len(order))) and (not bottoms or len(order) < len(bottoms[0]))


def _prior_image_size(layer, bottoms, written) -> bool:
    pp = layer.param.prior_box_param
    return any(pp.HasField(name) for name in ("img_size", "img_h", "img_w"))


def _prior_fractional_sizes(layer, bottoms, written) -> bool:
    pp = layer.param.prior_box_param
    return any(size != int(size) for size in (*pp.min_size, *pp.max_size))


def _mvn_eps(layer, bottoms, written) -> bool:
    mp = layer.param.mvn_param
    return mp.normalize_variance and mp.eps != caffe_pb2.MVNParameter().eps


def _inserted_axis(layer, bottoms, written) -> bool:
    return layer.param.reshape_param.num_axes == 0


def _swish_beta(layer, bottoms, written) -> bool:
    return layer.param.swish_param.beta != 1


# Caffe types OpenCV 4.x's importer cannot create ("Can't create layer"): measured with 4.11
# (the bvlc_layers fixture's opencv_check) and 4.14.
_NOT_IN_OPENCV = (
    "ArgMax", "BatchReindex", "Bias", "Clip", "Embed", "Parameter", "Python", "Reduction", "SPP",
    "Threshold",
)  # fmt: skip

# Measured with OpenCV 4.5-4.14 (DNN_BACKEND_OPENCV, CPU, fusion off) against real Caffe's
# blobs or the NumPy executor; the Log, MVN, Reshape and Tile entries are the bvlc_layers
# fixture's opencv_check.
OPENCV_DEVIATIONS: tuple[Deviation, ...] = (
    *(Deviation(t, "no such layer in OpenCV", _always) for t in _NOT_IN_OPENCV),
    Deviation("Tile", "OpenCV's importer cannot read tile_param (repeats missing)", _always),
    Deviation(
        "Axpy",
        "OpenCV computes a * Y + X where Caffe's Axpy (bottoms a, X, Y) is a * X + Y",
        _always,
    ),
    Deviation("InnerProduct", "transpose: true, which OpenCV ignores", _ip_transpose),
    Deviation(
        "BatchNorm",
        "use_global_stats: false; OpenCV has no batch statistics",
        _batch_statistics,
    ),
    Deviation(
        "Deconvolution",
        "dilation > 1, which OpenCV leaves out of the output size (11x13 where Caffe's is 13x15)",
        _deconv_dilation,
    ),
    Deviation(
        "Pooling",
        "round_mode, a field OpenCV's importer does not know: it loses the kernel size "
        "(assertion kernel[i] > 0)",
        _round_mode_written,
    ),
    Deviation(
        "Pooling",
        "MAX over a last window that lies past the input (ceil rounding, pad 0): Caffe "
        "writes -FLT_MAX there, OpenCV 0",
        _max_pool_empty_window,
    ),
    Deviation(
        "Log",
        "base, scale or shift set, which OpenCV's Log does not apply as Caffe does",
        _log_parameters,
    ),
    # Measured with OpenCV 4.14 against the NumPy executor (tests/test_fork_source_layers.py).
    Deviation(
        "Convolution",
        "pad_h or pad_w given without the other, which OpenCV then ignores (Caffe pads the "
        "given axis, the other by 0)",
        _one_pad_of_two,
    ),
    Deviation(
        "Convolution",
        "depthwise 3x3, stride 1, dilation above the pad, which OpenCV's depthwise kernel "
        "computes wrongly",
        _depthwise_dilated_3x3,
    ),
    Deviation(
        "ConvolutionDepthwise",
        "depthwise 3x3, stride 1, dilation above the pad, which OpenCV's depthwise kernel "
        "computes wrongly",
        _depthwise_dilated_3x3,
    ),
    Deviation(
        "ConvolutionDepthwise",
        "num_output or group other than the channels: OpenCV runs a Convolution with them, "
        "the fork one filter per channel",
        _depthwise_settings,
    ),
    Deviation(
        "Interp",
        "shrink_factor, which OpenCV ignores (another output size, or none)",
        _interp_shrink,
    ),
    Deviation(
        "Interp",
        "pad_beg/pad_end, which OpenCV ignores (it resizes the uncropped input)",
        _interp_crop,
    ),
    Deviation(
        "Interp",
        "a second bottom or interp_type nearest_neighbor, which OpenCV's Interp does not run",
        _interp_other_forms,
    ),
    # Fork layers and forms, measured on the fork_layers fixture (its opencv_check).
    *(
        Deviation(name, "no such layer in OpenCV", _always)
        for name in ("BilinearInterpolate", "MaxUnPool", "Pad", "PixelShuffle", "Unsqueeze")
    ),
    Deviation("Upsample", "no such layer in OpenCV (neither the nearest nor SegNet's)", _always),
    Deviation("Pooling", "a second top (the MAX mask), which OpenCV does not give", _mask_top),
    Deviation("Resize", "OpenCV's Resize is another layer (it wants an interpolation)", _always),
    Deviation(
        "DetectionOutput",
        "OpenCV orders rows by score, not by label, pads them to keep_top_k, refuses a net "
        "without keep_top_k and corrupts its memory with keep_top_k -1",
        _always,
    ),
    Deviation("ReLU6", "relu6_param, which OpenCV ignores", _relu6_parameters),
    Deviation("Permute", "a partial order, which OpenCV refuses", _partial_order),
    Deviation("PriorBox", "img_size/img_h/img_w, which OpenCV ignores", _prior_image_size),
    Deviation(
        "PriorBox",
        "a fractional min_size/max_size: Caffe truncates it to int, OpenCV does not",
        _prior_fractional_sizes,
    ),
    Deviation(
        "MVN",
        "eps other than 1e-9, which OpenCV adds to the variance where Caffe adds it to the "
        "standard deviation",
        _mvn_eps,
    ),
    Deviation("Reshape", "num_axes: 0 (an inserted axis), on which OpenCV fails", _inserted_axis),
    Deviation("Swish", "beta other than 1, which OpenCV ignores", _swish_beta),
)


def _written_params(prototxt: str | os.PathLike) -> dict[str, caffe_pb2.LayerParameter]:
    """Layer name -> its parameter as the prototxt spells it, for the layers where that can
    differ from the net this tool reads: a fork's ``ceil_mode``, read as ``round_mode``."""
    text = read_text(prototxt)
    if "round_mode" not in text:  # the one field the table needs as written; parsing is slow
        return {}
    raw = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, raw, allow_unknown_field=True)
    except text_format.ParseError:
        return {}
    return {layer.name: layer for layer in [*raw.layer, *raw.layers]}


def opencv_deviations(
    net: Net,
    prototxt: str | os.PathLike,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[str]:
    """Every layer of ``net`` that OpenCV is known to run differently from Caffe (or to
    refuse), as "'name' (Type: how)"; ``OPENCV_DEVIATIONS`` lists the known settings."""
    written = _written_params(prototxt)
    unwritten = caffe_pb2.LayerParameter()
    groups = sharing_groups(net)
    shapes: dict[str, tuple[int, ...]] = {}
    found = []
    for layer, layer_shapes in zip(net.layers, net.shapes(input_shapes)):
        bottoms = [shapes[name] for name in layer.bottoms if name in shapes]
        raw = written.get(layer.name, unwritten)
        for deviation in OPENCV_DEVIATIONS:
            if deviation.layer_type == layer.type and deviation.applies(layer, bottoms, raw):
                found.append(f"'{layer.name}' ({layer.type}: {deviation.what})")
        # Measured: OpenCV writes the in-place top alone; Caffe, every blob sharing it.
        for top in in_place_tops(layer):
            others = [name for name in groups.get(top, ()) if name != top]
            if others:
                found.append(
                    f"'{layer.name}' ({layer.type} in place on '{top}', whose memory "
                    f"{', '.join(map(repr, others))} share in Caffe (Flatten, Reshape, Split): "
                    "Caffe's write changes them too, OpenCV's does not)"
                )
        shapes.update(zip(layer.tops, map(tuple, layer_shapes.top_shapes)))
    return found


def _opencv_error_message(cv2_message: str, net: Net, prototxt) -> str:
    """Say in our terms why OpenCV refused the net, from its error text."""
    types = set(re.findall(r'of type "([^"]+)"', cv2_message))
    names = [f"'{layer.name}' ({layer.type})" for layer in net.layers if layer.type in types]
    detail = cv2_message.strip().splitlines()[-1] if cv2_message.strip() else cv2_message
    if names:
        return f"{prototxt}: OpenCV's Caffe importer does not support layer {', '.join(names)}"
    clash = re.search(r'Layer "([^"]+)" already into net', cv2_message)
    if clash:
        name = clash.group(1)
        convs = [
            f"'{layer.name}'"
            for layer in net.layers
            if layer.type == "Convolution" and name in layer.tops
        ]
        if convs:
            return (
                f"{prototxt}: OpenCV cannot import this net: its Caffe importer names each "
                f"Convolution after its top blob, and Convolution {', '.join(convs)} writes "
                f"'{name}', which is also the name of another layer; use --reference numpy "
                "(or rename that blob in a copy of the prototxt to check with OpenCV)"
            )
    return f"{prototxt}: OpenCV cannot run this net: {detail}"


def opencv_blobs(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike,
    inputs: Mapping[str, np.ndarray],
    names: Sequence[str] | None = None,
    *,
    isolated: bool = False,
) -> dict[str, np.ndarray]:
    """Run the net with OpenCV's dnn module and return Caffe's blobs (all when names is None).

    ``isolated`` runs OpenCV in a child process (``verify`` does, on any user's net): a
    crash there becomes a ConverterError naming the signal instead of ending this process
    without a word, or corrupting its memory before it ends. Measured with OpenCV 4.14:
    DetectionOutput with ``keep_top_k: -1`` (Caffe's "no limit") writes past a buffer
    (valgrind: invalid writes in cv2) and the process dies later, SIGSEGV at exit. The
    arrays pass through a temporary folder; starting the child costs about 0.7 s.

    What OpenCV 4.x does, measured (4.5-4.14), and how each blob is read despite it:

    - It names outputs by layer, not by blob: a blob maps to the output of the last layer
      writing it (for conv1 -> bn_conv1 -> scale_conv1 -> conv1_relu, all in place on
      'conv1', Caffe's final 'conv1' is the output of 'conv1_relu').
    - It fuses BatchNorm/Scale/ReLU into the convolution; fusion is switched off so each
      layer stays addressable.
    - Its importer registers every Convolution under the name of its top blob (one OpenCV
      layer per bottom/top pair); other layers keep their names.
    - Asked for several layers in one forward call, it keeps only the first output of each
      alive: the 2nd..nth tops of a multi-top layer (Slice, Split) come back overwritten.
      Those layers are fetched each in a forward call of their own, which ends at them.
    - Where it is known to compute something else than Caffe (``OPENCV_DEVIATIONS``), the
      net is refused before running, naming the layers: ConverterError.

    Input blobs are returned as given (Caffe does not change them).
    """
    cv2 = _import_cv2()
    graph = read_net(prototxt)
    for name in inputs:
        if name not in graph.input_shapes():
            raise ConverterError(f"{prototxt}: '{name}' is not an input blob of the net")
    missing = [name for name in graph.input_shapes() if name not in inputs]
    if missing:
        raise ConverterError(f"{prototxt}: no value given for input blob {', '.join(missing)}")
    shapes = {name: np.shape(array) for name, array in inputs.items()}
    problems = opencv_deviations(graph, prototxt, shapes)
    if problems:
        raise ConverterError(
            f"{prototxt}: OpenCV is known to differ from Caffe on layer {', '.join(problems)}, "
            "so it cannot be the reference for this net; use --reference numpy, caffe or a "
            ".npz of blobs saved from Caffe"
        )
    producers = _final_producers(graph)
    wanted = graph.blob_names() if names is None else list(names)
    unknown = [name for name in wanted if name not in producers]
    if unknown:
        raise ConverterError(f"{prototxt}: the net has no blob {', '.join(unknown)}")

    if isolated:
        return _opencv_in_child(prototxt, caffemodel, inputs, wanted)
    return _run_opencv_quietly(cv2, graph, producers, prototxt, caffemodel, inputs, wanted)


def _run_opencv_quietly(cv2, graph, producers, prototxt, caffemodel, inputs, wanted):
    log_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # errors come as cv2.error
    try:
        return _run_opencv(cv2, graph, producers, prototxt, caffemodel, inputs, wanted)
    finally:
        cv2.utils.logging.setLogLevel(log_level)


def _opencv_in_child(prototxt, caffemodel, inputs: Mapping[str, np.ndarray], wanted: list[str]):
    """``_run_opencv`` in a child process of this Python, the arrays passing through files
    in a temporary folder; a signal or a failure there becomes a ConverterError."""
    with tempfile.TemporaryDirectory(prefix="caffe2torch-opencv-") as name:
        folder = Path(name)
        np.savez(folder / "inputs.npz", *inputs.values())
        job = {
            "prototxt": str(prototxt),
            "caffemodel": str(caffemodel),
            "inputs": list(inputs),
            "wanted": list(wanted),
        }
        (folder / "job.json").write_text(json.dumps(job))
        package_parent = str(Path(__file__).resolve().parent.parent)  # this very converter
        code = (
            f"import sys; sys.path.insert(0, {package_parent!r}); "
            f"from converter.references import opencv_child; opencv_child({name!r})"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, errors="replace"
        )
        if done.returncode == 0:
            with np.load(folder / "blobs.npz") as data:
                return {blob: data[f"arr_{n}"] for n, blob in enumerate(wanted)}
        error = folder / "error.txt"
        if done.returncode == 2 and error.exists():
            raise ConverterError(error.read_text())
    said = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "")
    said = f": {said.strip()}" if said else ""
    if done.returncode < 0:
        how = signal.Signals(-done.returncode).name
        raise ConverterError(
            f"{prototxt}: OpenCV crashed running this net ({how}{said}); a fault of OpenCV's "
            "on this net, not of the conversion: use --reference numpy"
        )
    raise ConverterError(
        f"{prototxt}: OpenCV's run failed (exit status {done.returncode}{said}); use "
        "--reference numpy"
    )


def opencv_child(folder: str) -> None:
    """The child process of ``opencv_blobs(isolated=True)``: runs the job in ``folder``
    (``job.json``, ``inputs.npz``) and leaves the blobs (``blobs.npz``) or, for bad input,
    the message (``error.txt``, exit status 2). The parent has already checked the net, so
    a net with layer types only the parent registered still reaches OpenCV."""
    path = Path(folder)
    job = json.loads((path / "job.json").read_text())
    try:
        cv2 = _import_cv2()
        graph = read_net(job["prototxt"])
        with np.load(path / "inputs.npz") as data:
            inputs = {blob: data[f"arr_{n}"] for n, blob in enumerate(job["inputs"])}
        producers = _final_producers(graph)
        blobs = _run_opencv_quietly(
            cv2, graph, producers, job["prototxt"], job["caffemodel"], inputs, job["wanted"]
        )
    except ConverterError as exc:
        (path / "error.txt").write_text(str(exc))
        sys.exit(2)
    np.savez(path / "blobs.npz", *(blobs[blob] for blob in job["wanted"]))


def _opencv_output(cv_net, layer: Layer, top_index: int) -> tuple[str, int, int]:
    """(OpenCV layer name, output index, its number of outputs) for ``layer``'s top
    ``top_index``."""
    if layer.type == "Convolution":  # registered under its top's name, one layer per top
        top = layer.tops[top_index]
        layer_id = cv_net.getLayerId(top)
        if layer_id >= 0 and cv_net.getLayer(layer_id).type == "Convolution":
            return top, 0, 1
    return layer.name, top_index, len(layer.tops)


def _run_opencv(cv2, graph, producers, prototxt, caffemodel, inputs, wanted):
    """Read the net into OpenCV and fetch every wanted blob's final value."""
    try:
        cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    except cv2.error as exc:
        raise ConverterError(_opencv_error_message(str(exc), graph, prototxt)) from None
    cv_net.enableFusion(False)
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    where: dict[str, tuple[str, int]] = {}  # blob -> (OpenCV layer, output index)
    multi: list[str] = []  # OpenCV layers with several outputs
    for name in wanted:
        layer = graph.layers[producers[name][0]]
        if layer.type == "Input":
            continue
        cv_name, output, count = _opencv_output(cv_net, layer, producers[name][1])
        if cv_net.getLayerId(cv_name) < 0:
            raise ConverterError(
                f"{prototxt}: OpenCV did not keep layer '{layer.name}' ({layer.type}), "
                f"so blob '{name}' cannot be read from it"
            )
        where[name] = (cv_name, output)
        if count > 1 and cv_name not in multi:
            multi.append(cv_name)
    # One call for every single-output layer, then one call per multi-output layer.
    together = list(dict.fromkeys(n for n, _ in where.values() if n not in multi))
    calls = ([together] if together else []) + [[cv_name] for cv_name in multi]

    for name, array in inputs.items():
        cv_net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
    outputs: dict[str, list[np.ndarray]] = {}
    for call in calls:
        try:
            fetched = cv_net.forwardAndRetrieve(call)
        except cv2.error as exc:
            raise ConverterError(_opencv_error_message(str(exc), graph, prototxt)) from None
        outputs.update(zip(call, ([np.array(a, dtype=np.float32) for a in o] for o in fetched)))

    result: dict[str, np.ndarray] = {}
    for name in wanted:
        if name not in where:  # an input blob
            result[name] = np.array(inputs[name], dtype=np.float32)
            continue
        cv_name, output = where[name]
        if output >= len(outputs[cv_name]):
            raise ConverterError(
                f"{prototxt}: OpenCV's layer '{cv_name}' has {len(outputs[cv_name])} outputs, "
                f"blob '{name}' is output {output}"
            )
        result[name] = outputs[cv_name][output]
    return result


# ----------------------------------------------------------------------------- saved blobs


def saved_blob_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """{blob name: shape} of a .npz of blobs, from each array's header alone (no data is
    read: the blobs of a deep net at a large batch take gigabytes); a member whose header
    cannot be read is left out (``saved_blobs`` says what is wrong with it)."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as handle:
                    reader = readers.get(np.lib.format.read_magic(handle))
                    if reader is not None:
                        shapes[member[: -len(".npy")]] = tuple(reader(handle)[0])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return shapes
    return shapes


def saved_blobs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Blobs saved as a .npz keyed by blob name (e.g. by examples/dump_caffe_blobs.py)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ConverterError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConverterError(f"{path}: not a readable .npz of blobs ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ConverterError(f"{path}: expected a .npz of blobs, found a single array")
    try:
        with data:
            blobs = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConverterError(f"{path}: not a readable .npz of blobs ({exc})") from None
    if not blobs:
        raise ConverterError(f"{path}: the .npz holds no blobs")
    for name, array in blobs.items():
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ConverterError(f"{path}: blob '{name}' has dtype {array.dtype}, not numbers")
    return blobs
