"""The generic module against real Caffe's blobs and against independent hand computations."""

from __future__ import annotations

import copy
import json
import keyword
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import (
    EDGE_CASES,
    LEGACY,
    RESNET_CASES,
    load_case,
    random_blobs,
    rel_error,
    shared_case,
    shared_cases,
)
from converter import ConverterError, read_net, write_caffemodel
from converter.generic import CaffeGraph, supported_layer_types
from converter.io.prototxt import parse_prototxt
from converter.net import net_from_param

FLT_MAX = float(np.finfo(np.float32).max)


def net_from_text(text: str, source: str = "<test>"):
    return net_from_param(parse_prototxt(text, source), source)


def run_blobs(model: CaffeGraph, *inputs: np.ndarray, dtype=torch.float32) -> dict:
    with torch.no_grad():
        tensors = [torch.from_numpy(np.asarray(x)).to(dtype) for x in inputs]
        return {k: v.numpy() for k, v in model.forward_blobs(*tensors).items()}


def assert_matches_caffe(model: CaffeGraph, inputs, blobs: dict, tolerance: float, dtype):
    ours = run_blobs(model, inputs, dtype=dtype)
    assert blobs, "the case saves no blobs"
    errors = {name: rel_error(ours[name], ref) for name, ref in blobs.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance, (worst, errors[worst], tolerance)
    with torch.no_grad():
        out = model(torch.from_numpy(inputs).to(dtype))
    # forward returns every output blob (a tuple where there are several), as net.forward()
    outs = out if len(model.output_names) > 1 else (out,)
    assert len(outs) == len(model.output_names)
    for name, value in zip(model.output_names, outs):
        np.testing.assert_array_equal(value.numpy(), ours[name], err_msg=name)


# ----------------------------------------------------------------------------- real Caffe


@pytest.mark.parametrize("name", EDGE_CASES + RESNET_CASES)
def test_bundled_case_matches_caffe(name):
    case = load_case(name)
    model = CaffeGraph.from_net(read_net(case.prototxt, case.caffemodel))
    assert_matches_caffe(model, case.input, case.blobs, case.tolerance, torch.float32)


@pytest.mark.parametrize("name", EDGE_CASES + ["resnet18_w8"])
def test_float64_matches_caffe(name):
    case = load_case(name)
    model = CaffeGraph.from_net(read_net(case.prototxt, case.caffemodel)).double()
    assert_matches_caffe(model, case.input, case.blobs, case.tolerance, torch.float64)


@pytest.mark.parametrize(
    "prototxt, caffemodel",
    [
        ("v1.prototxt", "v1.caffemodel"),
        ("v1.prototxt", "v1net_modern.caffemodel"),
        ("v1net_modern.prototxt", "v1.caffemodel"),
    ],
)
def test_v1_net_matches_caffe(prototxt, caffemodel):
    info = load_case("legacy_formats")
    model = CaffeGraph.from_net(read_net(LEGACY / prototxt, LEGACY / caffemodel))
    with np.load(LEGACY / "blobs_v1.npz") as data:
        blobs = dict(data)
    assert model.output_name == "prob"
    # conv1 is saved after the in-place relu1, pool1 is the ceil-mode 5x6 output.
    assert_matches_caffe(
        model, np.load(LEGACY / "input_v1.npy"), blobs, info.tolerance, torch.float32
    )


def test_legacy_blobdims_caffemodel_matches_caffe():
    case = load_case("resnet18_w8")
    model = CaffeGraph.from_net(read_net(case.prototxt, LEGACY / "legacy_blobdims.caffemodel"))
    assert_matches_caffe(model, case.input, case.blobs, case.tolerance, torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", shared_cases())
def test_shared_case_matches_caffe(name):
    case = shared_case(name)
    model = CaffeGraph.from_net(read_net(case.prototxt, case.caffemodel))
    assert_matches_caffe(model, case.input, case.blobs, case.tolerance, torch.float32)


def test_without_the_shared_fixtures_the_skip_names_the_folder(monkeypatch, tmp_path):
    """The reason read "/tmp/shared/fixtures/<no ../shared/fixtures> is not beside this
    checkout": the placeholder case name joined to the folder."""
    import conftest

    missing = tmp_path / "shared" / "fixtures"
    monkeypatch.setattr(conftest, "SHARED_FIXTURES", missing)
    assert conftest.shared_cases() == [conftest.NO_SHARED]
    with pytest.raises(pytest.skip.Exception) as skipped:
        conftest.shared_case(conftest.NO_SHARED)
    assert str(skipped.value).startswith(f"{missing} is not beside this checkout (or set ")
    missing.mkdir(parents=True)
    with pytest.raises(pytest.skip.Exception, match="has no case resnet18_w8$"):
        conftest.shared_case("resnet18_w8")


# ----------------------------------------------------------------------------- pooling


def caffe_pool(x, method, kernel, stride, pad, round_floor=False):
    """Caffe's PoolingLayer::Reshape and Forward_cpu, transcribed loop for loop."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    n, c, height, width = x.shape
    rounding = math.floor if round_floor else math.ceil
    out_h = int(rounding((height + 2 * ph - kh) / sh)) + 1
    out_w = int(rounding((width + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (out_h - 1) * sh >= height + ph:
            out_h -= 1
        if (out_w - 1) * sw >= width + pw:
            out_w -= 1
    top = np.zeros((n, c, out_h, out_w), dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            hstart, wstart = i * sh - ph, j * sw - pw
            if method == "MAX":
                hend, wend = min(hstart + kh, height), min(wstart + kw, width)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                value = np.full((n, c), -FLT_MAX, dtype=x.dtype)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        value = np.where(x[:, :, h, w] > value, x[:, :, h, w], value)
            else:
                hend, wend = min(hstart + kh, height + ph), min(wstart + kw, width + pw)
                pool_size = (hend - hstart) * (wend - wstart)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                hend, wend = min(hend, height), min(wend, width)
                value = np.zeros((n, c), dtype=x.dtype)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        value = value + x[:, :, h, w]
                with np.errstate(invalid="ignore", divide="ignore"):
                    value = value / x.dtype.type(pool_size)
            top[:, :, i, j] = value
    return top


POOL_GEOMETRIES = [
    # (H, W, kernel, stride, pad): the first three have windows that start past the input
    ((6, 7), (2, 2), (3, 3), (0, 0)),  # extra row and column of empty windows: -FLT_MAX, NaN
    ((6, 6), (1, 1), (4, 4), (0, 0)),  # windows start beyond the input: AVE gives -0 there
    ((6, 9), (2, 3), (3, 2), (0, 0)),  # empty rows only
    ((7, 9), (3, 3), (2, 2), (2, 2)),  # pad > kernel / 2: torch refuses, Caffe allows
    ((18, 23), (3, 2), (2, 3), (1, 0)),  # the rectangular case: the clip on both axes
    ((9, 10), (3, 3), (2, 2), (1, 1)),
    ((5, 5), (5, 5), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("round_floor", [False, True])
@pytest.mark.parametrize("size, kernel, stride, pad", POOL_GEOMETRIES)
def test_pooling_matches_caffe_loops(method, round_floor, size, kernel, stride, pad):
    text = f"""
    layer {{ name: "data" type: "Input" top: "data"
             input_param {{ shape {{ dim: 2 dim: 3 dim: {size[0]} dim: {size[1]} }} }} }}
    layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"
             pooling_param {{ pool: {method} kernel_h: {kernel[0]} kernel_w: {kernel[1]}
                              stride_h: {stride[0]} stride_w: {stride[1]}
                              pad_h: {pad[0]} pad_w: {pad[1]}
                              round_mode: {"FLOOR" if round_floor else "CEIL"} }} }}
    """
    x = np.random.default_rng(7).normal(0, 50, (2, 3, *size))
    for dtype in (torch.float64, torch.float32):
        model = CaffeGraph.from_net(net_from_text(text)).to(dtype)
        with torch.no_grad():
            ours = model(torch.from_numpy(x).to(dtype)).double().numpy()
        want = caffe_pool(x.astype(dtype_np(dtype)), method, kernel, stride, pad, round_floor)
        assert ours.shape == want.shape
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(want))
        np.testing.assert_array_equal(ours == -FLT_MAX, want == -FLT_MAX)
        np.testing.assert_array_equal(np.signbit(ours[want == 0]), np.signbit(want[want == 0]))
        np.testing.assert_allclose(ours, want, rtol=1e-6 if dtype == torch.float32 else 1e-13)


def dtype_np(dtype):
    return np.float64 if dtype == torch.float64 else np.float32


def test_pooling_empty_window_values_by_hand():
    # k2 s3 pad 0 on a 6-row input: Caffe's rows start at 0, 3 and 6; the last is empty.
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 6 dim: 2 } } }
    layer { name: "max" type: "Pooling" bottom: "data" top: "max"
            pooling_param { pool: MAX kernel_h: 2 kernel_w: 2 stride_h: 3 stride_w: 2 } }
    layer { name: "ave" type: "Pooling" bottom: "data" top: "ave"
            pooling_param { pool: AVE kernel_h: 2 kernel_w: 2 stride_h: 3 stride_w: 2 } }
    """  # noqa: E501
    model = CaffeGraph.from_net(net_from_text(text))
    x = torch.arange(12, dtype=torch.float32).reshape(1, 1, 6, 2)
    blobs = model.forward_blobs(x)
    assert blobs["max"].flatten().tolist() == [3.0, 9.0, -FLT_MAX]
    ave = blobs["ave"].flatten()
    assert ave[:2].tolist() == [1.5, 7.5] and math.isnan(ave[2])


# ----------------------------------------------------------------------------- pre-activation

PREACT_RESNET = """
name: "preact-resnet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "a_bn" type: "BatchNorm" bottom: "conv1" top: "a_pre" }
layer { name: "a_scale" type: "Scale" bottom: "a_pre" top: "a_pre" scale_param { bias_term: true } }
layer { name: "a_relu" type: "ReLU" bottom: "a_pre" top: "a_pre" }
layer { name: "a_conv1" type: "Convolution" bottom: "a_pre" top: "a_c1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "a_bn1" type: "BatchNorm" bottom: "a_c1" top: "a_c1" }
layer { name: "a_scale1" type: "Scale" bottom: "a_c1" top: "a_c1" scale_param { bias_term: true } }
layer { name: "a_relu1" type: "ReLU" bottom: "a_c1" top: "a_c1" }
layer { name: "a_conv2" type: "Convolution" bottom: "a_c1" top: "a_c2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "a_sum" type: "Eltwise" bottom: "conv1" bottom: "a_c2" top: "a_out" }
layer { name: "b_bn" type: "BatchNorm" bottom: "a_out" top: "b_pre" }
layer { name: "b_scale" type: "Scale" bottom: "b_pre" top: "b_pre" scale_param { bias_term: true } }
layer { name: "b_relu" type: "ReLU" bottom: "b_pre" top: "b_pre" }
layer { name: "b_proj" type: "Convolution" bottom: "b_pre" top: "b_proj"
        convolution_param { num_output: 16 kernel_size: 1 stride: 2 bias_term: false } }
layer { name: "b_conv1" type: "Convolution" bottom: "b_pre" top: "b_c1"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 stride: 2 bias_term: false } }
layer { name: "b_bn1" type: "BatchNorm" bottom: "b_c1" top: "b_c1" }
layer { name: "b_scale1" type: "Scale" bottom: "b_c1" top: "b_c1" scale_param { bias_term: true } }
layer { name: "b_relu1" type: "ReLU" bottom: "b_c1" top: "b_c1" }
layer { name: "b_conv2" type: "Convolution" bottom: "b_c1" top: "b_c2"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "b_sum" type: "Eltwise" bottom: "b_proj" bottom: "b_c2" top: "b_out" }
layer { name: "post_bn" type: "BatchNorm" bottom: "b_out" top: "post" }
layer { name: "post_scale" type: "Scale" bottom: "post" top: "post" scale_param { bias_term: true } }
layer { name: "post_relu" type: "ReLU" bottom: "post" top: "post" }
layer { name: "pool" type: "Pooling" bottom: "post" top: "pool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""  # noqa: E501


def preact_reference(net, x: np.ndarray) -> dict[str, np.ndarray]:
    """The pre-activation ResNet computed directly in float64 from the raw Caffe blobs."""
    w = {
        layer.name: [torch.from_numpy(b.astype(np.float64)) for b in layer.blobs]
        for layer in net.layers
    }

    def bn_scale_relu(t, bn, scale):
        mean, var, s = w[bn]
        factor = 0.0 if s.item() == 0 else 1.0 / s.item()
        view = (1, -1, 1, 1)
        t = (t - (mean * factor).view(view)) / torch.sqrt(var * factor + 1e-5).view(view)
        return F.relu(t * w[scale][0].view(view) + w[scale][1].view(view))

    def conv(t, name, stride=1):
        weight = w[name][0]
        return F.conv2d(t, weight, stride=stride, padding=weight.shape[-1] // 2)

    out = {}
    conv1 = conv(torch.from_numpy(x), "conv1")
    pre = bn_scale_relu(conv1, "a_bn", "a_scale")
    residual = conv(bn_scale_relu(conv(pre, "a_conv1"), "a_bn1", "a_scale1"), "a_conv2")
    out["a_out"] = conv1 + residual
    pre = bn_scale_relu(out["a_out"], "b_bn", "b_scale")
    shortcut = conv(pre, "b_proj", stride=2)
    residual = conv(bn_scale_relu(conv(pre, "b_conv1", 2), "b_bn1", "b_scale1"), "b_conv2")
    out["b_out"] = shortcut + residual
    out["pool"] = bn_scale_relu(out["b_out"], "post_bn", "post_scale").mean(
        dim=(2, 3), keepdim=True
    )
    out["fc"] = F.linear(out["pool"].flatten(1), *w["fc"])
    out["prob"] = torch.softmax(out["fc"], dim=1)
    return {k: v.numpy() for k, v in out.items()}


def test_preactivation_resnet_matches_float64_computation(tmp_path):
    prototxt = tmp_path / "preact.prototxt"
    prototxt.write_text(PREACT_RESNET)
    net = read_net(prototxt)
    random_blobs(net, np.random.default_rng(11))
    write_caffemodel(net, tmp_path / "preact.caffemodel")
    net = read_net(prototxt, tmp_path / "preact.caffemodel")
    x = np.random.default_rng(12).normal(0, 50, (2, 3, 16, 16))
    ref = preact_reference(net, x)
    model = CaffeGraph.from_net(net)
    assert model.output_name == "prob"
    ours32 = run_blobs(model, x.astype(np.float32))
    ours64 = run_blobs(model.double(), x, dtype=torch.float64)
    for name, value in ref.items():
        assert rel_error(ours32[name], value) < 1e-5, name
        assert rel_error(ours64[name], value) < 1e-12, name
    # The projection must read the pre-activated input, the identity shortcut the raw one.
    assert rel_error(ours64["a_pre"], ours64["conv1"]) > 0.1


# ----------------------------------------------------------------------------- other layers

MISC_NET = """
name: "misc"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 dim: 5 dim: 4 } } }
layer { name: "factor" type: "Input" top: "factor" input_param { shape { dim: 6 dim: 5 } } }
layer { name: "power" type: "Power" bottom: "data" top: "power"
        power_param { power: 2 scale: 0.5 shift: 1.5 } }
layer { name: "power_const" type: "Power" bottom: "data" top: "power_const"
        power_param { power: 3 scale: 0 shift: 2 } }
layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn"
        lrn_param { local_size: 3 alpha: 0.01 beta: 0.75 k: 2 } }
layer { name: "lrn_within" type: "LRN" bottom: "data" top: "lrn_within"
        lrn_param { local_size: 3 alpha: 0.01 beta: 0.75 norm_region: WITHIN_CHANNEL } }
layer { name: "slice" type: "Slice" bottom: "data" top: "s0" top: "s1" top: "s2"
        slice_param { axis: 1 slice_point: 1 slice_point: 4 } }
layer { name: "halves" type: "Slice" bottom: "data" top: "h0" top: "h1" slice_param { axis: -1 } }
layer { name: "reshape" type: "Reshape" bottom: "data" top: "reshape"
        reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }
layer { name: "flatten" type: "Flatten" bottom: "data" top: "flatten" flatten_param { axis: 1 end_axis: 2 } }
layer { name: "scale2" type: "Scale" bottom: "data" bottom: "factor" top: "scale2"
        scale_param { bias_term: true } }
layer { name: "bias2" type: "Bias" bottom: "data" bottom: "factor" top: "bias2" }
layer { name: "softmax2" type: "Softmax" bottom: "data" top: "softmax2" softmax_param { axis: 2 } }
layer { name: "ip_axis2" type: "InnerProduct" bottom: "data" top: "ip_axis2"
        inner_product_param { num_output: 3 axis: 2 } }
layer { name: "concat2" type: "Concat" bottom: "s0" bottom: "s2" top: "concat2" concat_param { axis: 1 } }
layer { name: "split" type: "Split" bottom: "h1" top: "x1" top: "x2" }
layer { name: "eltwise" type: "Eltwise" bottom: "x1" bottom: "x2" bottom: "h0" top: "eltwise"
        eltwise_param { coeff: 0.5 coeff: 2 coeff: -1 } }
layer { name: "sigmoid" type: "Sigmoid" bottom: "eltwise" top: "eltwise" }
"""  # noqa: E501


def test_other_layers_match_hand_formulas():
    net = net_from_text(MISC_NET)
    rng = np.random.default_rng(5)
    net.layer("scale2").blobs = [rng.normal(0, 1, (6, 5)).astype(np.float32)]
    net.layer("ip_axis2").blobs = [rng.normal(0, 1, s).astype(np.float32) for s in [(3, 20), (3,)]]
    model = CaffeGraph.from_net(net).double()
    assert model.input_names == ["data", "factor"]
    assert model.output_name == "eltwise"
    x = rng.normal(0, 1, (2, 6, 5, 4))
    f = rng.normal(0, 1, (6, 5))
    got = run_blobs(model, x, f, dtype=torch.float64)
    beta = net.layer("scale2").blobs[0]  # the one blob of a two-input Scale is its bias
    ip_w, ip_b = net.layer("ip_axis2").blobs

    alpha = float(np.float32(0.01))  # the prototxt's float field
    padded = np.pad(x * x, ((0, 0), (1, 1), (0, 0), (0, 0)))
    across = 2 + alpha / 3 * sum(padded[:, i : i + 6] for i in range(3))
    padded = np.pad(x * x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    within = sum(padded[:, :, i : i + 5, j : j + 4] for i in range(3) for j in range(3)) / 9
    e = np.exp(x - x.max(axis=2, keepdims=True))
    mixed = 0.5 * x[..., 2:] + 2 * x[..., 2:] - x[..., :2]
    expected = {
        "power": (1.5 + 0.5 * x) ** 2,
        "power_const": np.full_like(x, 8.0),
        "abs": np.abs(x),
        "lrn": x * across**-0.75,
        "lrn_within": x * (1 + alpha * within) ** -0.75,
        "s0": x[:, :1],
        "s1": x[:, 1:4],
        "s2": x[:, 4:],
        "h0": x[..., :2],
        "h1": x[..., 2:],
        "x1": x[..., 2:],
        "reshape": x.reshape(2, 60, 2),
        "flatten": x.reshape(2, 30, 4),
        "scale2": x * f[None, :, :, None] + beta[None, :, :, None],
        "bias2": x + f[None, :, :, None],
        "softmax2": e / e.sum(axis=2, keepdims=True),
        "ip_axis2": x.reshape(2, 6, 20) @ ip_w.T.astype(np.float64) + ip_b,
        "concat2": np.concatenate([x[:, :1], x[:, 4:]], axis=1),
        "eltwise": 1 / (1 + np.exp(-mixed)),
    }
    for name, value in expected.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-12, err_msg=name)


def test_in_place_write_reaches_blobs_sharing_memory():
    # Caffe's Flatten and Split tops share memory with their bottom: an in-place ReLU on
    # one of them changes every blob of the group, as net.blobs shows after the forward pass.
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 2 } } }
    layer { name: "copy" type: "Power" bottom: "data" top: "a" }
    layer { name: "split" type: "Split" bottom: "a" top: "b" top: "c" }
    layer { name: "flat" type: "Flatten" bottom: "c" top: "d" }
    layer { name: "relu" type: "ReLU" bottom: "d" top: "d" }
    layer { name: "neg" type: "Power" bottom: "b" top: "e" power_param { scale: -1 } }
    """  # noqa: E501
    model = CaffeGraph.from_net(net_from_text(text))
    x = np.random.default_rng(3).normal(0, 1, (2, 3, 2))
    got = run_blobs(model, x, dtype=torch.float64)
    relu = np.maximum(x, 0)
    for name in "abc":
        np.testing.assert_array_equal(got[name], relu)
    np.testing.assert_array_equal(got["d"], relu.reshape(2, 6))
    np.testing.assert_array_equal(got["e"], -relu)
    np.testing.assert_array_equal(got["data"], x)


def test_caffe_refusals_are_clear():
    base = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
    )
    eltwise_in_place = base + (
        'layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "data" top: "data" }'
    )
    with pytest.raises(ConverterError, match="'sum'.*in place"):
        CaffeGraph.from_net(net_from_text(eltwise_in_place))
    twice = base + (
        'layer { name: "r1" type: "ReLU" bottom: "data" top: "y" }\n'
        'layer { name: "r2" type: "ReLU" bottom: "data" top: "y" }'
    )
    with pytest.raises(ConverterError, match="'y' is produced by multiple sources"):
        CaffeGraph.from_net(net_from_text(twice))


# ----------------------------------------------------------------------------- module contract


def test_unsupported_types_are_listed_at_once():
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
    layer { name: "odd/1" type: "OddCrop" bottom: "data" bottom: "data" top: "c1" }
    layer { name: "act" type: "MysteryAct" bottom: "c1" top: "c1" }
    layer { name: "odd/2" type: "OddCrop" bottom: "c1" bottom: "data" top: "c2" }
    layer { name: "py" type: "Python" bottom: "c2" top: "p" python_param { module: "m" layer: "L" } }
    """  # noqa: E501
    with pytest.raises(ConverterError) as error:
        CaffeGraph.from_net(net_from_text(text, "odd.prototxt"))
    message = str(error.value)
    assert message.startswith("odd.prototxt: 4 layers of a type this tool does not know")
    assert "(OddCrop x2, MysteryAct, Python)" in message
    for word in ["'odd/1' (OddCrop)", "'odd/2' (OddCrop)", "'act' (MysteryAct)"]:
        assert word in message
    assert "'py' (Python: module 'm', layer 'L')" in message
    assert "converter.register_layer" in message  # says what to do
    assert "OddCrop" not in supported_layer_types() and "Crop" in supported_layer_types()


def test_module_names_are_sanitised_unique_and_stable():
    names = ["conv1/7x7_s2", "1x1", "fc.6", "fc-6", "fc_6", "forward", "class", "_steps"]
    text = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }\n'
    )
    bottom = "data"
    for i, name in enumerate(names):
        text += (
            f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "t{i}" '
            "inner_product_param { num_output: 4 } }\n"
        )
        bottom = f"t{i}"
    model = CaffeGraph.from_net(net_from_text(text))
    mapping = {k: v for k, v in model.module_names.items() if k != "data"}
    assert mapping == {
        "conv1/7x7_s2": "conv1_7x7_s2",
        "1x1": "layer_1x1",
        "fc.6": "fc_6",
        "fc-6": "fc_6_2",
        "fc_6": "fc_6_3",
        "forward": "forward_2",
        "class": "class_2",
        "_steps": "_steps_2",
    }
    for module_name in mapping.values():
        assert module_name.isidentifier() and not keyword.iskeyword(module_name)
        assert isinstance(getattr(model, module_name), torch.nn.Module)
    assert {f"{m}.{p}" for m in mapping.values() for p in ("weight", "bias")} == set(
        model.state_dict()
    )
    with torch.no_grad():
        assert model(torch.ones(1, 4)).shape == (1, 4)


def test_weights_are_copied_out_of_the_caffemodel():
    case = load_case("bn_variants")
    net = read_net(case.prototxt, case.caffemodel)
    model = CaffeGraph.from_net(net)
    state = model.state_dict()
    gamma = net.layer("scale_nobias").blobs[0]
    np.testing.assert_array_equal(state["scale_nobias.weight"].numpy(), gamma)
    with torch.no_grad():
        model.scale_nobias.weight.add_(1)  # writable, and not the read-only memory map
    np.testing.assert_array_equal(net.layer("scale_nobias").blobs[0], gamma)
    # BN buffers hold the statistics divided by the scale factor; factor 0 means zeros.
    mean, _, s = net.layer("bn_default").blobs
    np.testing.assert_allclose(state["bn_default.running_mean"].numpy(), mean / s[0], rtol=1e-6)
    assert not state["bn_sf0.running_mean"].any() and not state["bn_sf0.running_var"].any()
    assert set(state) >= {"bias.bias", "scale_axes2.weight", "ip.weight", "ip.bias"}
    assert state["scale_axes2.weight"].shape == (4, 5)


@pytest.mark.parametrize("name", ["conv_variants", "bn_variants", "pool_ceil"])
def test_from_config_and_state_dict_rebuild_the_same_module(name):
    case = load_case(name)
    model = CaffeGraph.from_net(read_net(case.prototxt, case.caffemodel))
    config = json.loads(json.dumps(model.caffe_config()))
    assert config["architecture"] == "generic" and "blobs" not in config["prototxt"]
    assert config["input_shapes"] == {"data": list(case.input.shape)}
    rebuilt = CaffeGraph.from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.module_names == model.module_names
    assert (rebuilt.output_name, rebuilt.output_names) == (model.output_name, model.output_names)
    x = torch.from_numpy(case.input)
    ours, theirs = run_blobs(model, case.input), run_blobs(rebuilt, case.input)
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x), strict=True):  # several outputs: a tuple
            assert torch.equal(a, b)


def test_from_config_refuses_other_architectures():
    with pytest.raises(ConverterError, match="generic"):
        CaffeGraph.from_config({"architecture": "resnet", "prototxt": ""})
    with pytest.raises(ConverterError, match="prototxt"):
        CaffeGraph.from_config({"architecture": "generic"})


def test_forward_blobs_filters_names_and_forward_returns_every_output():
    """forward returns what Caffe's net.forward() does: every blob no layer reads, by name
    (Net::Init lists them from a std::set<string>); output_name is the one written last."""
    case = load_case("conv_variants")
    net = read_net(case.prototxt, case.caffemodel)
    model = CaffeGraph.from_net(net)
    assert model.input_names == ["data"] and model.output_name == "softmax4d"
    assert model.output_names == sorted(net.outputs_by_production()) == net.outputs()
    assert model.output_names[:3] == ["deconv", "deconv_g", "drop"]
    x = torch.from_numpy(case.input)
    with torch.no_grad():
        some = model.forward_blobs(x, names=["conv_dw", "ip_t"])
        assert list(some) == ["conv_dw", "ip_t"]
        blobs = model.forward_blobs(x)
        outputs = model(x)
        assert isinstance(outputs, tuple) and len(outputs) == 14
        for name, value in zip(model.output_names, outputs, strict=True):
            assert torch.equal(value, blobs[name]), name
    with pytest.raises(KeyError):
        model.forward_blobs(x, names=["nope"])
    with pytest.raises(TypeError, match="1 input"):
        model(x, x)


def test_torch_export_of_a_resnet():
    case = load_case("resnet18_w8")
    model = CaffeGraph.from_net(read_net(case.prototxt, case.caffemodel))
    x = torch.from_numpy(case.input)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        np.testing.assert_array_equal(exported.module()(x).numpy(), model(x).numpy())


def test_torch_export_of_explicit_pooling():
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 7 } } }
    layer { name: "max" type: "Pooling" bottom: "data" top: "max"
            pooling_param { pool: MAX kernel_size: 2 stride: 3 } }
    layer { name: "ave" type: "Pooling" bottom: "max" top: "ave"
            pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 2 } }
    """  # noqa: E501
    model = CaffeGraph.from_net(net_from_text(text))
    x = torch.randn(1, 2, 6, 7)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        np.testing.assert_array_equal(exported.module()(x).numpy(), model(x).numpy())


def test_module_pickles_and_deep_copies(tmp_path):
    case = load_case("conv_variants")
    model = CaffeGraph.from_net(read_net(case.prototxt, case.caffemodel))
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    x = torch.from_numpy(case.input)
    with torch.no_grad():
        for a, b, c in zip(loaded(x), copy.deepcopy(model)(x), model(x), strict=True):
            assert torch.equal(a, c) and torch.equal(b, c)
    assert "pool: MAX" in repr(CaffeGraph.from_net(read_net(LEGACY / "v1.prototxt")))


def test_convolution_with_two_bottoms_shares_its_weights():
    text = """
    layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
    layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
    layer { name: "conv" type: "Convolution" bottom: "a" bottom: "b" top: "ya" top: "yb"
            convolution_param { num_output: 3 kernel_size: 3 stride: 2 } }
    """  # noqa: E501
    net = net_from_text(text)
    rng = np.random.default_rng(9)
    weight, bias = rng.normal(0, 1, (3, 2, 3, 3)), rng.normal(0, 1, 3)
    net.layer("conv").blobs = [weight.astype(np.float32), bias.astype(np.float32)]
    model = CaffeGraph.from_net(net).double()
    a, b = rng.normal(0, 1, (2, 1, 2, 5, 5))
    got = run_blobs(model, a, b, dtype=torch.float64)
    w, c = torch.from_numpy(weight.astype(np.float32)).double(), torch.from_numpy(bias).float()
    for x, top in ((a, "ya"), (b, "yb")):
        want = F.conv2d(torch.from_numpy(x), w, c.double(), stride=2).numpy()
        np.testing.assert_allclose(got[top], want, rtol=1e-12, atol=1e-12)
