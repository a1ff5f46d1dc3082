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
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from converter.errors import ConverterError
from converter.net import Net, read_net

REFERENCE_KINDS = ("auto", "caffe", "opencv", "numpy")


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


def available_reference(kind: str = "auto") -> str:
    """Resolve a reference kind: "auto" picks caffe, then opencv, then numpy.

    An explicit "caffe" or "opencv" that cannot be imported raises ConverterError saying why.
    """
    if kind not in REFERENCE_KINDS:
        raise ConverterError(
            f"unknown reference '{kind}': expected one of {', '.join(REFERENCE_KINDS)} "
            "or a blobs .npz file"
        )
    if kind == "caffe":
        _import_caffe()
    elif kind == "opencv":
        _import_cv2()
    if kind != "auto":
        return kind
    for candidate, probe in (("caffe", _import_caffe), ("opencv", _import_cv2)):
        try:
            probe()
        except ConverterError:
            continue
        return candidate
    return "numpy"


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


def _opencv_limitations(net: Net) -> list[str]:
    """Layers OpenCV 4.x refuses or, worse, computes differently from Caffe without a word."""
    problems = []
    for layer in net.layers:
        if layer.type == "Bias":
            problems.append(f"'{layer.name}' (Bias: no such layer in OpenCV)")
        elif layer.type == "InnerProduct" and layer.param.inner_product_param.transpose:
            problems.append(f"'{layer.name}' (InnerProduct transpose: true: OpenCV ignores it)")
        elif layer.type == "BatchNorm":
            bn = layer.param.batch_norm_param
            if bn.HasField("use_global_stats") and not bn.use_global_stats:
                problems.append(
                    f"'{layer.name}' (BatchNorm use_global_stats: false: OpenCV has no batch "
                    "statistics)"
                )
    return problems


def _unsupported_message(cv2_message: str, net: Net, prototxt) -> str:
    """Name the layers OpenCV refused, from its 'Can't create layer "x" of type "T"' error."""
    types = set(re.findall(r'of type "([^"]+)"', cv2_message))
    names = [f"'{layer.name}' ({layer.type})" for layer in net.layers if layer.type in types]
    detail = cv2_message.strip().splitlines()[-1] if cv2_message.strip() else cv2_message
    if names:
        return f"{prototxt}: OpenCV's Caffe importer does not support layer {', '.join(names)}"
    return f"{prototxt}: OpenCV cannot run this net: {detail}"


def opencv_blobs(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike,
    inputs: Mapping[str, np.ndarray],
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Run the net with OpenCV's dnn module and return Caffe's blobs (all when names is None).

    OpenCV names outputs by layer, not by blob, and normally fuses BatchNorm/Scale/ReLU into
    the convolution. Fusion is switched off so each layer stays addressable, and a blob maps
    to the output of the last layer writing it: for conv1 -> bn_conv1 -> scale_conv1 ->
    conv1_relu, all in place on 'conv1', Caffe's final 'conv1' is the output of 'conv1_relu'.
    Input blobs are returned as given (Caffe does not change them).
    """
    cv2 = _import_cv2()
    graph = read_net(prototxt)
    problems = _opencv_limitations(graph)
    if problems:
        raise ConverterError(
            f"{prototxt}: OpenCV cannot reproduce Caffe on layer {', '.join(problems)}; "
            "use the numpy or caffe reference instead"
        )
    producers = _final_producers(graph)
    wanted = graph.blob_names() if names is None else list(names)
    unknown = [name for name in wanted if name not in producers]
    if unknown:
        raise ConverterError(f"{prototxt}: the net has no blob {', '.join(unknown)}")
    net_inputs = [name for name, (i, _) in producers.items() if graph.layers[i].type == "Input"]
    for name in inputs:
        if name not in net_inputs:
            raise ConverterError(f"{prototxt}: '{name}' is not an input blob of the net")
    missing = [name for name in net_inputs if name not in inputs]
    if missing:
        raise ConverterError(f"{prototxt}: no value given for input blob {', '.join(missing)}")

    log_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # errors come as cv2.error
    try:
        return _run_opencv(cv2, graph, producers, prototxt, caffemodel, inputs, wanted)
    finally:
        cv2.utils.logging.setLogLevel(log_level)


def _run_opencv(cv2, graph, producers, prototxt, caffemodel, inputs, wanted):
    """Read the net into OpenCV, fetch every needed layer's outputs in one forward call."""
    try:
        cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    except cv2.error as exc:
        raise ConverterError(_unsupported_message(str(exc), graph, prototxt)) from None
    cv_net.enableFusion(False)
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    result: dict[str, np.ndarray] = {}
    layer_names: list[str] = []  # OpenCV layers to fetch, each once, in network order
    for name in wanted:
        layer = graph.layers[producers[name][0]]
        if layer.type == "Input":
            result[name] = np.array(inputs[name], dtype=np.float32)
        elif layer.name not in layer_names:
            if cv_net.getLayerId(layer.name) < 0:
                raise ConverterError(
                    f"{prototxt}: OpenCV did not keep layer '{layer.name}' ({layer.type}), "
                    f"so blob '{name}' cannot be read from it"
                )
            layer_names.append(layer.name)

    for name, array in inputs.items():
        cv_net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
    try:
        outputs = cv_net.forwardAndRetrieve(layer_names) if layer_names else []
    except cv2.error as exc:
        raise ConverterError(_unsupported_message(str(exc), graph, prototxt)) from None
    by_layer = dict(zip(layer_names, outputs))
    for name in wanted:
        layer_index, top_index = producers[name]
        layer = graph.layers[layer_index]
        if layer.type == "Input":
            continue
        layer_outputs = by_layer[layer.name]
        if top_index >= len(layer_outputs):
            raise ConverterError(
                f"{prototxt}: OpenCV's layer '{layer.name}' has {len(layer_outputs)} outputs, "
                f"blob '{name}' is top {top_index}"
            )
        result[name] = np.array(layer_outputs[top_index], dtype=np.float32)
    return {name: result[name] for name in wanted}


# ----------------------------------------------------------------------------- saved blobs


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
