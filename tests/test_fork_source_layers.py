"""Fork layers without a real-Caffe fixture: Axpy, Interp, ShuffleChannel, the depthwise
convolution spellings and the forks' BN, judged by the fork's own source (rules written
from it), by OpenCV's dnn where OpenCV computes the same thing, and by an equivalent net of
BVLC layers where OpenCV does not (Axpy); the torch module and the NumPy executor must
agree everywhere."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import rel_error
from converter import ConverterError, references
from converter.cli import main
from converter.executor import run_reference
from converter.generic import CaffeGraph
from converter.layers import lookup
from converter.net import Net, read_net, write_caffemodel
from converter.references import opencv_blobs

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { %s } } }\n'


def dims(*shape: int) -> str:
    return " ".join(f"dim: {d}" for d in shape)


def net_with_blobs(tmp_path, text: str, blobs=None, seed: int = 0, name: str = "net") -> Net:
    """``text`` as a prototxt, a caffemodel with ``blobs`` ({layer: [arrays]}) and random
    N(0, 1) weights for other layers with parameters; the net read back from both files."""
    prototxt, caffemodel = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    prototxt.write_text(text)
    net = read_net(prototxt)
    rng = np.random.default_rng(seed)
    for layer, shapes in zip(net.layers, net.shapes()):
        if blobs and layer.name in blobs:
            layer.blobs = [np.asarray(b, dtype=np.float32) for b in blobs[layer.name]]
        elif shapes.param_shapes:
            layer.blobs = [rng.normal(0, 1, s).astype(np.float32) for s in shapes.param_shapes]
    write_caffemodel(net, caffemodel)
    return read_net(prototxt, caffemodel)


def torch_blobs(net: Net, inputs: dict, dtype) -> dict[str, np.ndarray]:
    model = CaffeGraph.from_net(net).to(dtype)
    tensors = [torch.from_numpy(np.asarray(inputs[n])).to(dtype) for n in model.input_names]
    with torch.no_grad():
        return {k: v.numpy() for k, v in model.forward_blobs(*tensors).items()}


def assert_module_matches_executor(net: Net, inputs: dict) -> dict[str, np.ndarray]:
    """float64 module == float64 executor to 1e-12, float32 module to 1e-6, every blob."""
    reference = run_reference(net, inputs)
    for dtype, bar in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        ours = torch_blobs(net, inputs, dtype)
        for name, value in reference.items():
            assert rel_error(ours[name], value) <= bar, (name, dtype)
    return reference


def opencv_worst(net: Net, inputs: dict, reference: dict) -> float:
    cv = opencv_blobs(net.source, net.weights_source, inputs)
    return max(rel_error(cv[name], reference[name]) for name in reference)


# ----------------------------------------------------------------------------- Axpy

AXPY = (
    'layer { name: "data" type: "Input" top: "a" top: "x" top: "y"\n'
    "  input_param { shape { %s } shape { %s } shape { %s } } }\n"
)


@pytest.mark.parametrize("a_shape", [(2, 5, 1, 1), (2, 5)])
def test_axpy_equals_its_bvlc_equivalent(tmp_path, a_shape):
    """F = a * X + Y (hujie-frank/SENet axpy_layer.cpp) against Flatten(a), a two-bottom
    Scale of X by it at axis 0 and an Eltwise SUM with Y, through the module and the
    executor; OpenCV, which computes a * Y + X, cannot judge it."""
    x_shape = (2, 5, 4, 3)
    header = AXPY % (dims(*a_shape), dims(*x_shape), dims(*x_shape))
    axpy = net_with_blobs(
        tmp_path,
        header + 'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" '
        'top: "out" }\n',
        name="axpy",
    )
    bvlc = net_with_blobs(
        tmp_path,
        header + 'layer { name: "flat" type: "Flatten" bottom: "a" top: "flat" }\n'
        'layer { name: "ax" type: "Scale" bottom: "x" bottom: "flat" top: "ax" '
        "scale_param { axis: 0 } }\n"
        'layer { name: "out" type: "Eltwise" bottom: "ax" bottom: "y" top: "out" }\n',
        name="bvlc",
    )
    rng = np.random.default_rng(1)
    inputs = {
        "a": rng.normal(0, 1, a_shape).astype(np.float32),
        "x": rng.normal(0, 3, x_shape).astype(np.float32),
        "y": rng.normal(0, 3, x_shape).astype(np.float32),
    }
    ours = assert_module_matches_executor(axpy, inputs)
    equivalent = assert_module_matches_executor(bvlc, inputs)
    assert rel_error(ours["out"], equivalent["out"]) <= 1e-15
    for dtype in (torch.float32, torch.float64):
        assert rel_error(
            torch_blobs(axpy, inputs, dtype)["out"], torch_blobs(bvlc, inputs, dtype)["out"]
        ) <= (1e-6 if dtype == torch.float32 else 1e-15)
    # The swap OpenCV makes is a different result here, so the test would catch it.
    swapped = inputs["a"].reshape(2, 5, 1, 1) * inputs["y"] + inputs["x"]
    assert rel_error(swapped, ours["out"]) > 0.1


@pytest.mark.parametrize(
    "a_shape, x_shape, y_shape, message",
    [
        ((2, 5, 2, 1), (2, 5, 4, 3), (2, 5, 4, 3), "must be (N, C) or (N, C, 1, 1)"),
        ((2, 4), (2, 5, 4, 3), (2, 5, 4, 3), "must be (N, C) or (N, C, 1, 1)"),
        ((2, 5), (2, 5, 4, 3), (2, 5, 3, 4), "differ in shape"),
        ((2, 5), (2, 5, 4, 3, 2), (2, 5, 4, 3, 2), "2 to 4 axes"),
    ],
)
def test_axpy_shapes_the_fork_refuses(tmp_path, a_shape, x_shape, y_shape, message):
    (tmp_path / "n.prototxt").write_text(
        AXPY % (dims(*a_shape), dims(*x_shape), dims(*y_shape))
        + 'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "f" }\n'
    )
    with pytest.raises(ConverterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_net(tmp_path / "n.prototxt").shapes()


# ----------------------------------------------------------------------------- Interp


INTERP_OPENCV = [
    "zoom_factor: 3",
    "zoom_factor: 1",
    "height: 13 width: 5",
    "height: 61 width: 97",  # positions whose float32 rounding matters
    "height: 1 width: 4",
    "height: 7 width: 9",  # the input's own size: a copy
    "height: 3 width: 2",  # shrinking
]


def interp_net(tmp_path, specs: list[str], shape=(2, 3, 7, 9), name="interp") -> Net:
    text = INPUT % dims(*shape) + "".join(
        f'layer {{ name: "i{k}" type: "Interp" bottom: "data" top: "i{k}" '
        f"interp_param {{ {spec} }} }}\n"
        for k, spec in enumerate(specs)
    )
    return net_with_blobs(tmp_path, text, name=name)


def test_interp_matches_opencv(tmp_path):
    """OpenCV's Interp (resize_layer.cpp: bilinear, align_corners, float32 positions) runs
    the zoom_factor and height/width forms as the DeepLab fork does."""
    net = interp_net(tmp_path, INTERP_OPENCV)
    x = np.random.default_rng(2).normal(0, 3, (2, 3, 7, 9)).astype(np.float32)
    reference = assert_module_matches_executor(net, {"data": x})
    assert opencv_worst(net, {"data": x}, reference) <= 3e-7
    shapes = [reference[f"i{k}"].shape[2:] for k in range(len(INTERP_OPENCV))]
    assert shapes == [(19, 25), (7, 9), (13, 5), (61, 97), (1, 4), (7, 9), (3, 2)]
    np.testing.assert_array_equal(reference["i5"], x)


def test_interp_rule_by_hand():
    """caffe_cpu_interp2 on a 2x3 plane resized to 3x4: rows at 0, 0.5, 1; columns at
    0, 2/3, 4/3, 2 (float32), each blending its two neighbours."""
    from converter.layers.resize import InterpSpec
    from converter.modules.resize import Interp

    x = np.array([[0.0, 1.0, 4.0], [10.0, 20.0, 40.0]])
    spec = InterpSpec(None, None, 3, 4, 0, 0, False)
    out = Interp(spec, "<test>")(torch.from_numpy(x)[None, None]).numpy()[0, 0]
    cols = np.float32(2) / np.float32(3) * np.arange(4, dtype=np.float32)
    lo = cols.astype(int)
    frac = (cols - lo).astype(np.float64)
    hi = np.minimum(lo + 1, 2)
    rows = x[:, lo] * (1 - frac) + x[:, hi] * frac
    expected = np.stack([rows[0], (rows[0] + rows[1]) / 2, rows[1]])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    "spec, size",
    [
        ("shrink_factor: 2", (4, 5)),
        ("shrink_factor: 3 zoom_factor: 2", (5, 5)),  # 7 -> 3 -> 5, 9 -> 3 -> 5
        ("zoom_factor: 2 pad_beg: -1 pad_end: -2", (7, 11)),
        ("height: 5 width: 5 pad_beg: -2", (5, 5)),
        ('zoom_factor: 2 interp_type: "nearest_neighbor"', (13, 17)),
    ],
)
def test_interp_forms_opencv_does_not_run(tmp_path, spec, size):
    """shrink_factor, cropping pads and nearest_neighbor: sizes by the fork's Reshape
    (DeepLab v2 / PSPNet interp_layer.cpp), values module == executor, and the crop is
    the resize of the cropped input."""
    net = interp_net(tmp_path, [spec])
    x = np.random.default_rng(3).normal(0, 3, (2, 3, 7, 9)).astype(np.float32)
    out = assert_module_matches_executor(net, {"data": x})["i0"]
    assert out.shape[2:] == size
    if "pad_beg: -1 pad_end: -2" in spec:  # crop rows/cols [1, in - 2), then zoom 2
        crop = interp_net(tmp_path, ["zoom_factor: 2"], (2, 3, 4, 6), name="crop")
        cropped = run_reference(crop, {"data": x[:, :, 1:5, 1:7]})["i0"]
        np.testing.assert_array_equal(out, cropped)
    if "nearest" in spec:  # zoom 2 with aligned corners: every other output is an input
        np.testing.assert_array_equal(out[:, :, ::2, ::2], x)
        np.testing.assert_array_equal(out[:, :, 1::2, 1::2], x[:, :, 1:, 1:])  # rounds up


def test_interp_second_bottom_gives_the_size(tmp_path):
    text = (
        'layer { name: "data" type: "Input" top: "data" top: "like" input_param { '
        f"shape {{ {dims(1, 2, 5, 6)} }} shape {{ {dims(1, 4, 8, 3)} }} }} }}\n"
        'layer { name: "i" type: "Interp" bottom: "data" bottom: "like" top: "i" }\n'
    )
    net = net_with_blobs(tmp_path, text)
    rng = np.random.default_rng(4)
    inputs = {"data": rng.normal(0, 1, (1, 2, 5, 6)), "like": rng.normal(0, 1, (1, 4, 8, 3))}
    assert assert_module_matches_executor(net, inputs)["i"].shape == (1, 2, 8, 3)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("pad_beg: 1 zoom_factor: 2", "must not be positive"),
        ("zoom_factor: 0", "zoom_factor must be positive"),
        ("height: 4", "gives no output size"),
        ('zoom_factor: 2 interp_type: "bicubic"', "interp_type"),
        ("height: 4 width: 4 pad_end: -9", "sizes must be positive"),
    ],
)
def test_interp_settings_the_fork_refuses(tmp_path, spec, message):
    (tmp_path / "n.prototxt").write_text(
        INPUT % dims(1, 2, 5, 6)
        + f'layer {{ name: "i" type: "Interp" bottom: "data" top: "i" interp_param {{ {spec} }} }}'
    )
    with pytest.raises(ConverterError, match=message):
        read_net(tmp_path / "n.prototxt").shapes()


# ----------------------------------------------------------------------------- ShuffleChannel


def test_shuffle_channel_matches_opencv_and_the_fork_rule(tmp_path):
    """farmingyard/ShuffleNet shuffle_channel_layer.cpp: top channel j * group + i is
    bottom channel i * (C / group) + j."""
    text = INPUT % dims(2, 12, 3, 4) + "".join(
        f'layer {{ name: "s{g}" type: "ShuffleChannel" bottom: "data" top: "s{g}" '
        f"shuffle_channel_param {{ group: {g} }} }}\n"
        for g in (1, 2, 3, 4)
    )
    net = net_with_blobs(tmp_path, text)
    x = np.random.default_rng(5).normal(0, 1, (2, 12, 3, 4)).astype(np.float32)
    reference = assert_module_matches_executor(net, {"data": x})
    assert opencv_worst(net, {"data": x}, reference) == 0
    for g in (1, 2, 3, 4):
        per = 12 // g
        for i in range(g):
            for j in range(per):
                np.testing.assert_array_equal(reference[f"s{g}"][:, j * g + i], x[:, i * per + j])
    with torch.no_grad():  # torch's own channel shuffle is the same permutation
        torch_shuffle = torch.nn.ChannelShuffle(3)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(reference["s3"], torch_shuffle)


def test_shuffle_channel_group_must_divide_the_channels(tmp_path):
    (tmp_path / "n.prototxt").write_text(
        INPUT
        % dims(1, 6, 2, 2)
        + 'layer { name: "s" type: "ShuffleChannel" bottom: "data" top: "s" '
        "shuffle_channel_param { group: 4 } }"
    )
    with pytest.raises(ConverterError, match="group 4 does not divide the 6 channels"):
        read_net(tmp_path / "n.prototxt").shapes()


# ----------------------------------------------------------------------------- depthwise


DEPTHWISE = [
    "num_output: 6 group: 6 kernel_size: 3 pad: 1 stride: 2",
    "num_output: 12 group: 3 kernel_size: 3 dilation: 2",  # any group: it is Convolution
    "num_output: 6 group: 6 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 bias_term: false",
]


def depthwise_text(type_name: str, specs: list[str]) -> str:
    return INPUT % dims(2, 6, 7, 9) + "".join(
        f'layer {{ name: "c{k}" type: "{type_name}" bottom: "data" top: "c{k}" '
        f"convolution_param {{ {spec} }} }}\n"
        for k, spec in enumerate(specs)
    )


def test_depthwise_convolution_is_convolution(tmp_path):
    """yonghenglh6/DepthwiseConvolution subclasses ConvolutionLayer: the same net written
    with Convolution (which OpenCV runs; it does not know this type) computes the same."""
    x = np.random.default_rng(6).normal(0, 3, (2, 6, 7, 9)).astype(np.float32)
    fork = net_with_blobs(tmp_path, depthwise_text("DepthwiseConvolution", DEPTHWISE), name="fork")
    bvlc = net_with_blobs(tmp_path, depthwise_text("Convolution", DEPTHWISE), name="bvlc")
    ours = assert_module_matches_executor(fork, {"data": x})
    as_conv = run_reference(bvlc, {"data": x})
    for name in as_conv:
        np.testing.assert_array_equal(ours[name], as_conv[name])
    assert opencv_worst(bvlc, {"data": x}, ours) <= 1e-6
    assert lookup("DepthwiseConvolution") is lookup("Convolution")


def test_convolution_depthwise_is_one_filter_per_channel(tmp_path):
    """farmingyard/caffe-mobilenet conv_dw_layer.cpp ignores num_output and group: weight
    (C, 1, kh, kw), bias (C,), C outputs. OpenCV runs it as Convolution with the prototxt's
    group, which is the same when the prototxt says group = num_output = C."""
    specs = ["num_output: 6 group: 6 kernel_size: 3 pad: 2 dilation: 2", "kernel_size: 3"]
    x = np.random.default_rng(7).normal(0, 3, (2, 6, 7, 9)).astype(np.float32)
    fork = net_with_blobs(tmp_path, depthwise_text("ConvolutionDepthwise", specs), name="fork")
    assert [layer.blobs[0].shape for layer in fork.layers[1:]] == [(6, 1, 3, 3)] * 2
    ours = assert_module_matches_executor(fork, {"data": x})
    assert ours["c1"].shape == (2, 6, 5, 7)
    grouped = [s if "group" in s else f"{s} num_output: 6 group: 6" for s in specs]
    bvlc = net_with_blobs(tmp_path, depthwise_text("Convolution", grouped), name="bvlc")
    for layer, source in zip(bvlc.layers[1:], fork.layers[1:]):
        layer.blobs = source.blobs
    as_conv = run_reference(bvlc, {"data": x})
    for name in as_conv:
        np.testing.assert_array_equal(ours[name], as_conv[name])
    first = net_with_blobs(tmp_path, depthwise_text("ConvolutionDepthwise", specs[:1]), name="cv")
    reference = run_reference(first, {"data": x})
    assert opencv_worst(first, {"data": x}, reference) <= 1e-6


# ----------------------------------------------------------------------------- BN


def bn_text(bn_param: str, shape=(2, 4, 5, 6), in_place=False) -> str:
    top = "data" if in_place else "bn"
    return INPUT % dims(*shape) + (
        f'layer {{ name: "bn" type: "BN" bottom: "data" top: "{top}" bn_param {{ {bn_param} }} }}\n'
    )


def bn_blobs(count: int, channels: int = 4, axis: int = 1, seed: int = 8) -> list:
    rng = np.random.default_rng(seed)
    shape = tuple(channels if i == axis else 1 for i in range(4))
    values = [rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.5, shape)]
    values += [rng.normal(0, 1, shape), rng.uniform(0.5, 2, shape)][: count - 2]
    return [v.astype(np.float32) for v in values]


def bn_by_hand(x, blobs, statistics: str, eps: float, axis: int = 1) -> np.ndarray:
    """The forks' formulas, written per channel with loops over the channel index."""
    x = x.astype(np.float64)
    out = np.empty_like(x)
    scale, shift = (b.reshape(-1).astype(np.float64) for b in blobs[:2])
    for c in range(x.shape[axis]):
        plane = np.take(x, c, axis=axis)
        if statistics == "none":
            y = scale[c] * plane + shift[c]
        else:
            if statistics == "stored":
                mean, var = float(blobs[2].reshape(-1)[c]), float(blobs[3].reshape(-1)[c])
            else:  # SegNet: var = E[x^2] - E[x]^2; PSPNet: E[(x - mean)^2]; equal here
                mean, var = plane.mean(), (plane**2).mean() - plane.mean() ** 2
            y = (plane - mean) / math.sqrt(var + eps) * scale[c] + shift[c]
        index = [slice(None)] * x.ndim
        index[axis] = c
        out[tuple(index)] = y
    return out


BN_FORMS = [
    # (bn_param, blobs, statistics, eps): the fork each comes from is in bn_variant's docstring
    ("bn_mode: INFERENCE", 2, "none", None),  # SegNet / ENet inference nets
    ("bn_mode: LEARN", 2, "batch", 1e-9),  # SegNet / ENet, batch statistics in any phase
    ('scale_filler { type: "constant" value: 1 }', 2, "batch", 1e-9),  # SegNet's default
    ("", 2, "batch", 1e-9),
    ("moving_average: true decay: 0.05", 4, "stored", 1e-10),  # PSPNet (first version)
    ("moving_average: true var_eps: 0.001", 4, "stored", 1e-3),
    ('scale_filler { type: "constant" value: 1 }', 4, "batch", 1e-10),  # PSPNet, no average
    ("frozen: true momentum: 0.95", 4, "stored", 1e-5),  # PSPNet (later), yjxiong/caffe
    ('slope_filler { type: "constant" value: 1 } eps: 0.01', 4, "stored", 1e-2),
    ("eps: 1e-7 engine: CUDNN", 4, "stored", 1e-5),  # cuDNN raises eps to 1e-5
]


@pytest.mark.parametrize("bn_param, count, statistics, eps", BN_FORMS)
def test_bn_forms_by_the_forks_rules(tmp_path, bn_param, count, statistics, eps):
    blobs = bn_blobs(count)
    net = net_with_blobs(tmp_path, bn_text(bn_param, in_place=True), {"bn": blobs})
    x = np.random.default_rng(9).normal(1, 2, (2, 4, 5, 6)).astype(np.float32)
    reference = assert_module_matches_executor(net, {"data": x})
    expected = bn_by_hand(x, blobs, statistics, float(np.float32(eps or 0)))  # a float field
    assert rel_error(reference["data"], expected) <= 1e-12
    layer_shapes = net.shapes()[1]
    assert layer_shapes.param_shapes == [(1, 4, 1, 1)] * count


def test_bn_axis_2_of_the_first_pspnet(tmp_path):
    blobs = bn_blobs(4, channels=5, axis=2)
    text = bn_text("moving_average: true axis: 2", shape=(2, 3, 5, 6))
    net = net_with_blobs(tmp_path, text, {"bn": blobs})
    assert net.shapes()[1].param_shapes == [(1, 1, 5, 1)] * 4
    x = np.random.default_rng(10).normal(0, 2, (2, 3, 5, 6)).astype(np.float32)
    reference = assert_module_matches_executor(net, {"data": x})
    assert rel_error(reference["bn"], bn_by_hand(x, blobs, "stored", 1e-10, axis=2)) <= 1e-12


@pytest.mark.parametrize(
    "bn_param, count, message",
    [
        ("", 4, "no bn_param field that says which fork"),
        ("bn_mode: INFERENCE frozen: true", 2, "mixes fields of different forks"),
        ("moving_average: true slope_filler { type: 'constant' }", 4, "mixes fields"),
        ("moving_average: true axis: 3", 4, "axis must be 1 or 2"),
        ("", 3, "2 or 4 blobs"),
    ],
)
def test_bn_forms_that_say_nothing_or_too_much_are_refused(tmp_path, bn_param, count, message):
    net = read_net(write_text(tmp_path, bn_text(bn_param)))
    net.layers[1].blobs = bn_blobs(4)[:count] if count <= 4 else []
    with pytest.raises(ConverterError, match=message):
        net.shapes()


def write_text(tmp_path, text: str):
    path = tmp_path / "n.prototxt"
    path.write_text(text)
    return path


def test_bn_blob_count_must_match_what_the_prototxt_says(tmp_path):
    net = read_net(write_text(tmp_path, bn_text("bn_mode: INFERENCE")))
    net.layers[1].blobs = bn_blobs(4)
    write_caffemodel(net, tmp_path / "n.caffemodel")
    with pytest.raises(ConverterError, match="implies 2 blob"):
        read_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")


def test_bn_eps_decided_by_the_blob_count_survives_conversion(tmp_path):
    """A prototxt naming no fork: 2 blobs are SegNet's batch statistics (eps 1e-9), 4 blobs
    with a filler the first PSPNet's (eps 1e-10); the converted file keeps that eps."""
    import converter

    filler = 'scale_filler { type: "constant" value: 1 }'
    x = np.random.default_rng(11).normal(0, 1e-5, (2, 4, 5, 6))  # variances near eps
    for count, eps in ((2, 1e-9), (4, 1e-10)):
        net = net_with_blobs(tmp_path, bn_text(filler), {"bn": bn_blobs(count)}, name=f"bn{count}")
        out = tmp_path / f"bn{count}.safetensors"
        converter.convert(net.source, net.weights_source, out)
        model = converter.load(out, dtype=torch.float64)
        assert float(model.bn.eps) == pytest.approx(eps, rel=1e-6)
        with torch.no_grad():
            ours = model.forward_blobs(torch.from_numpy(x))["bn"].numpy()
        expected = bn_by_hand(x, net.layers[1].blobs, "batch", eps)
        assert rel_error(ours, expected) <= 1e-6
        assert rel_error(ours, bn_by_hand(x, net.layers[1].blobs, "batch", 1e-8)) > 1e-3


def test_fuse_bn_refuses_a_net_with_a_fork_bn(tmp_path):
    """--fuse-bn folds BatchNorm+Scale of recognised ResNets only; a conv + BN net is not
    one, so it is refused rather than converted unfolded."""
    import converter

    text = INPUT % dims(1, 3, 8, 8) + (
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        "convolution_param { num_output: 4 kernel_size: 3 bias_term: false } }\n"
        'layer { name: "bn" type: "BN" bottom: "conv" top: "conv" '
        "bn_param { frozen: true } }\n"
    )
    net = net_with_blobs(tmp_path, text, {"bn": bn_blobs(4)})
    with pytest.raises(ConverterError, match="--fuse-bn"):
        converter.convert(net.source, net.weights_source, tmp_path / "x.pt", fuse_bn=True)
    assert not (tmp_path / "x.pt").exists()


# ----------------------------------------------------------------------------- OpenCV


# Settings of these types that OpenCV 4.14 computes differently or not at all (measured
# here against the executor): verify --reference opencv refuses them before running.
OPENCV_DEVIATES = {
    "interp_shrink": (
        'layer { name: "i" type: "Interp" bottom: "data" top: "i" '
        "interp_param { shrink_factor: 2 zoom_factor: 3 } }\n",
        "'i' (Interp: shrink_factor",
    ),
    "interp_crop": (
        'layer { name: "i" type: "Interp" bottom: "data" top: "i" '
        "interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -1 } }\n",
        "'i' (Interp: pad_beg/pad_end",
    ),
    "interp_nearest": (
        'layer { name: "i" type: "Interp" bottom: "data" top: "i" '
        'interp_param { zoom_factor: 2 interp_type: "nearest_neighbor" } }\n',
        "'i' (Interp: a second bottom or interp_type",
    ),
    "depthwise_dilated": (
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 6 group: 6 kernel_size: 3 pad: 1 dilation: 2 } }\n",
        "'c' (Convolution: depthwise 3x3",
    ),
    "conv_pad_h_alone": (
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 pad_h: 1 } }\n",
        "'c' (Convolution: pad_h or pad_w given without the other",
    ),
    "conv_depthwise_without_group": (
        'layer { name: "c" type: "ConvolutionDepthwise" bottom: "data" top: "c" '
        "convolution_param { kernel_size: 3 pad: 1 } }\n",
        "'c' (ConvolutionDepthwise: num_output or group",
    ),
}


@pytest.mark.parametrize("name", OPENCV_DEVIATES)
def test_opencv_deviations_are_refused_and_real(name, capsys, tmp_path, monkeypatch):
    text, words = OPENCV_DEVIATES[name]
    net = net_with_blobs(tmp_path, INPUT % dims(1, 6, 7, 9) + text)
    code = main(["verify", net.source, net.weights_source, "--reference", "opencv"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (out, err)
    assert "OpenCV is known to differ" in err and words in err, err
    assert main(["verify", net.source, net.weights_source, "--reference", "numpy"]) == 0
    # Without the table OpenCV fails on the net, or computes another result.
    monkeypatch.setattr(references, "OPENCV_DEVIATIONS", ())
    x = np.random.default_rng(12).normal(0, 3, (1, 6, 7, 9)).astype(np.float32)
    expected = run_reference(net, {"data": x})
    try:
        cv = opencv_blobs(net.source, net.weights_source, {"data": x})
    except ConverterError:
        return
    name = net.layers[-1].tops[0]
    assert cv[name].shape != expected[name].shape or rel_error(cv[name], expected[name]) > 0.1


def test_opencv_runs_no_fork_bn_nor_depthwise_convolution(tmp_path):
    """OpenCV 4.14 has no BN and no DepthwiseConvolution: refused by name, not misread."""
    text = INPUT % dims(1, 4, 5, 6) + (
        'layer { name: "bn" type: "BN" bottom: "data" top: "bn" bn_param { frozen: true } }\n'
        'layer { name: "dw" type: "DepthwiseConvolution" bottom: "bn" top: "dw" '
        "convolution_param { num_output: 4 group: 4 kernel_size: 3 } }\n"
    )
    net = net_with_blobs(tmp_path, text, {"bn": bn_blobs(4)})
    with pytest.raises(ConverterError, match=r"does not support layer 'bn' \(BN\)"):
        opencv_blobs(net.source, net.weights_source, {"data": np.ones((1, 4, 5, 6))})


# ----------------------------------------------------------------------------- end to end

SEGMENTATION_HEAD = INPUT % dims(1, 3, 9, 9) + (
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
    "convolution_param { num_output: 8 kernel_size: 3 stride: 2 bias_term: false } }\n"
    'layer { name: "conv/bn" type: "BN" bottom: "conv" top: "conv" '
    "bn_param { frozen: true momentum: 0.95 } }\n"
    'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }\n'
    'layer { name: "shuffle" type: "ShuffleChannel" bottom: "conv" top: "shuffle" '
    "shuffle_channel_param { group: 2 } }\n"
    'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "shuffle" top: "dw" '
    "convolution_param { num_output: 8 group: 8 kernel_size: 3 pad: 1 } }\n"
    'layer { name: "dw/bn" type: "BN" bottom: "dw" top: "dw" bn_param { bn_mode: INFERENCE } }\n'
    'layer { name: "gap" type: "Pooling" bottom: "dw" top: "gap" '
    "pooling_param { pool: AVE global_pooling: true } }\n"
    'layer { name: "gate" type: "Sigmoid" bottom: "gap" top: "gate" }\n'
    'layer { name: "axpy" type: "Axpy" bottom: "gate" bottom: "dw" bottom: "shuffle" '
    'top: "fused" }\n'
    'layer { name: "pw" type: "DepthwiseConvolution" bottom: "fused" top: "pw" '
    "convolution_param { num_output: 8 group: 4 kernel_size: 1 } }\n"
    'layer { name: "up" type: "Interp" bottom: "pw" top: "up" '
    "interp_param { height: 9 width: 9 } }\n"
)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_fork_layers_convert_load_verify_and_inspect(tmp_path, capsys, suffix):
    import converter

    blobs = {"conv/bn": bn_blobs(4, channels=8), "dw/bn": bn_blobs(2, channels=8)}
    net = net_with_blobs(tmp_path, SEGMENTATION_HEAD, blobs)
    out = tmp_path / f"head{suffix}"
    assert main(["convert", net.source, net.weights_source, "-o", str(out), "--generic"]) == 0
    x = np.random.default_rng(13).normal(0, 50, (1, 3, 9, 9))
    expected = run_reference(net, {"data": x})
    model = converter.load(out, dtype=torch.float64)
    with torch.no_grad():
        ours = model.forward_blobs(torch.from_numpy(x))
    for name, value in expected.items():
        assert rel_error(ours[name].numpy(), value) <= 1e-12, name
    assert main(["verify", net.source, net.weights_source, "--reference", "numpy"]) == 0
    capsys.readouterr()
    assert main(["inspect", net.source, "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["layers"]}
    assert rows["up"]["top_shapes"] == [[1, 8, 9, 9]]
    assert rows["dw"]["param_shapes"] == [[8, 1, 3, 3], [8]]
    assert rows["conv/bn"]["param_shapes"] == [[1, 8, 1, 1]] * 4
