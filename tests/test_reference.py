"""The NumPy reference executor against real Caffe's blobs, and against hand-computed layers."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import converter
from conftest import (
    EDGE_CASES,
    FIXTURES,
    RESNET_CASES,
    load_case,
    rel_error,
    shared_case,
    shared_cases,
)
from converter.errors import ConverterError
from converter.executor import run_reference
from converter.io.prototxt import parse_prototxt
from converter.layers import same_shape
from converter.net import net_from_param, read_net

FLT_MAX = float(np.finfo(np.float32).max)


def _check_case(case) -> dict[str, float]:
    """Every saved blob within the case's tolerance; top-1 of prob for calibrated cases."""
    net = read_net(case.prototxt, case.caffemodel)
    ours = run_reference(net, case.input)
    assert list(ours) == net.blob_names()
    errors = {name: rel_error(ours[name], ref) for name, ref in case.blobs.items()}
    bad = {name: e for name, e in errors.items() if not e <= case.tolerance}
    assert not bad, f"{case.name}: over tolerance {case.tolerance}: {bad}"
    if "calibrated" in case.name:
        np.testing.assert_array_equal(
            ours["prob"].argmax(axis=1), case.blobs["prob"].argmax(axis=1)
        )
    return errors


@pytest.mark.parametrize("name", RESNET_CASES + EDGE_CASES)
def test_bundled_case_matches_caffe(name):
    _check_case(load_case(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", shared_cases())
def test_shared_case_matches_caffe(name):
    _check_case(shared_case(name))


@pytest.mark.slow
def test_every_blob_of_resnet50_matches_caffe():
    """blobs_all.npz holds all 74 blobs: each one as Caffe left it after its in-place layers."""
    case = shared_case("resnet50_w8")
    if not (case.folder / "blobs_all.npz").is_file():
        pytest.skip("../shared/fixtures/resnet50_w8/blobs_all.npz is not there")
    net = read_net(case.prototxt, case.caffemodel)
    ours = run_reference(net, case.input)
    with np.load(case.folder / "blobs_all.npz") as saved:
        assert sorted(saved.files) == sorted(ours)
        for name in saved.files:
            assert rel_error(ours[name], saved[name]) <= case.tolerance, name


def _legacy():
    folder = FIXTURES / "legacy_formats"
    return folder, float(json.loads((folder / "case.json").read_text())["tolerance_rel"])


def test_v1_net_matches_caffe():
    folder, tolerance = _legacy()
    net = read_net(folder / "v1.prototxt", folder / "v1.caffemodel")
    ours = run_reference(net, np.load(folder / "input_v1.npy"))
    with np.load(folder / "blobs_v1.npz") as saved:
        assert set(saved) >= {"conv1", "pool1", "ip1", "prob"}
        for name in saved:
            assert rel_error(ours[name], saved[name]) <= tolerance, name


def test_legacy_blob_dims_match_caffe():
    folder, tolerance = _legacy()
    case = load_case("resnet18_w8")
    net = read_net(case.prototxt, folder / "legacy_blobdims.caffemodel")
    ours = run_reference(net, case.input)
    for name, ref in case.blobs.items():
        assert rel_error(ours[name], ref) <= tolerance, name


def test_other_batch_size_follows_the_input():
    case = load_case("conv_variants")  # no batch statistics: items are independent
    net = read_net(case.prototxt, case.caffemodel)
    ours = run_reference(net, {"data": case.input[1:]})
    assert ours["data"].shape[0] == 1
    for name, ref in case.blobs.items():
        assert rel_error(ours[name], ref[1:]) <= case.tolerance, name


def test_float32_mode_computes_in_float32():
    case = load_case("pool_ceil")
    net = read_net(case.prototxt, case.caffemodel)
    ours = run_reference(net, case.input, dtype=np.float32)
    assert all(value.dtype == np.float32 for value in ours.values())
    for name, ref in case.blobs.items():
        assert rel_error(ours[name], ref) <= case.tolerance, name


def test_input_is_not_modified_and_outputs_are_fresh():
    case = load_case("bn_variants")
    net = read_net(case.prototxt, case.caffemodel)
    data = case.input
    before = data.copy()
    ours = run_reference(net, data)
    np.testing.assert_array_equal(data, before)
    assert not np.shares_memory(ours["data"], data)


# ----------------------------------------------------------------------------- tiny nets


def _net(body: str, shape: tuple[int, ...]):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = (
        f'name: "t"\nlayer {{ name: "data" type: "Input" top: "data" '
        f"input_param {{ shape {{ {dims} }} }} }}\n{body}"
    )
    return net_from_param(parse_prototxt(text, "tiny.prototxt"), "tiny.prototxt")


def _data(shape, seed=0):
    return np.random.default_rng(seed).normal(0, 2, shape)


def test_pathological_pooling_window_is_empty_like_caffe():
    # k2 s3 pad 0 on H=18: ceil gives 7 rows, the last window starts at row 18 (past the
    # image) and Caffe, which clips only when pad > 0, keeps it (pool_ceil/case.json notes).
    body = "".join(
        f'layer {{ name: "{m}" type: "Pooling" bottom: "data" top: "{m}" '
        f"pooling_param {{ pool: {m} kernel_size: 2 stride: 3 }} }}\n"
        for m in ("MAX", "AVE")
    )
    x = _data((1, 2, 18, 23))
    ours = run_reference(_net(body, x.shape), x)
    for name in ("MAX", "AVE"):
        assert ours[name].shape == (1, 2, 7, 8)
    assert np.all(ours["MAX"][:, :, 6, :] == -FLT_MAX)
    assert np.all(np.isnan(ours["AVE"][:, :, 6, :]))
    for n, c, i, j in itertools.product(range(1), range(2), range(6), range(8)):
        window = x[n, c, 3 * i : 3 * i + 2, 3 * j : 3 * j + 2]
        assert ours["MAX"][n, c, i, j] == window.max()
        assert ours["AVE"][n, c, i, j] == pytest.approx(window.sum() / 4, rel=1e-12)


def test_lrn_across_channels_by_hand():
    body = (
        'layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" '
        "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }"
    )
    x = _data((2, 4, 2, 3), seed=1)
    ours = run_reference(_net(body, x.shape), x)["lrn"]
    expected = np.empty_like(x)
    for n, c, h, w in np.ndindex(*x.shape):
        total = sum(x[n, j, h, w] ** 2 for j in range(max(0, c - 1), min(4, c + 2)))
        expected[n, c, h, w] = x[n, c, h, w] * (2 + 0.5 / 3 * total) ** -0.75
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_lrn_within_channel_by_hand():
    # Caffe builds WITHIN_CHANNEL as x * (1 + alpha * avepool(x^2))^-beta with the pool's
    # divisor size^2 (padded cells count): k is not used, so set it to something else.
    # (alpha and beta are float32 fields: use values float32 holds exactly.)
    body = (
        'layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" lrn_param { '
        "local_size: 3 alpha: 0.25 beta: 0.625 k: 5 norm_region: WITHIN_CHANNEL } }"
    )
    x = _data((1, 2, 4, 5), seed=2)
    ours = run_reference(_net(body, x.shape), x)["lrn"]
    expected = np.empty_like(x)
    for n, c, h, w in np.ndindex(*x.shape):
        total = sum(
            x[n, c, i, j] ** 2
            for i in range(max(0, h - 1), min(4, h + 2))
            for j in range(max(0, w - 1), min(5, w + 2))
        )
        expected[n, c, h, w] = x[n, c, h, w] * (1 + 0.25 / 9 * total) ** -0.625
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_power_by_hand():
    body = "".join(
        f'layer {{ name: "{name}" type: "Power" bottom: "data" top: "{name}" '
        f"power_param {{ {param} }} }}\n"
        for name, param in [
            ("square", "power: 2 scale: 0.5 shift: 1"),
            ("cube", "power: 3 scale: -2"),
            ("root", "power: 0.5 shift: 10"),
            ("default", ""),
            ("const_one", "power: 0 scale: 3 shift: -4"),
            ("const_shift", "power: 2 scale: 0 shift: -3"),
        ]
    )
    x = _data((2, 3), seed=3)
    ours = run_reference(_net(body, x.shape), x)
    for index in np.ndindex(*x.shape):
        v = x[index]
        assert ours["square"][index] == pytest.approx((1 + 0.5 * v) ** 2, rel=1e-12)
        assert ours["cube"][index] == pytest.approx((-2 * v) ** 3, rel=1e-12)
        assert ours["root"][index] == pytest.approx((10 + v) ** 0.5, rel=1e-12)
        assert ours["default"][index] == v
        assert ours["const_one"][index] == 1.0
        assert ours["const_shift"][index] == 9.0


def test_reshape_slice_absval_concat_by_hand():
    body = """
layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }
layer { name: "reshape" type: "Reshape" bottom: "data" top: "reshape"
        reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }
layer { name: "slice" type: "Slice" bottom: "data" top: "s0" top: "s1" top: "s2"
        slice_param { axis: 1 slice_point: 1 slice_point: 3 } }
layer { name: "halves" type: "Slice" bottom: "data" top: "h0" top: "h1"
        slice_param { slice_dim: 2 } }
layer { name: "concat" type: "Concat" bottom: "s2" bottom: "s0" top: "cat"
        concat_param { concat_dim: 1 } }
"""
    x = _data((2, 5, 4), seed=4)
    ours = run_reference(_net(body, x.shape), x)
    flat = x.ravel()
    for n, c, h in np.ndindex(*x.shape):
        assert ours["abs"][n, c, h] == abs(x[n, c, h])
    assert ours["reshape"].shape == (2, 10, 2)
    for n, i, j in np.ndindex(2, 10, 2):
        assert ours["reshape"][n, i, j] == flat[n * 20 + i * 2 + j]
    assert [ours[t].shape for t in ("s0", "s1", "s2")] == [(2, 1, 4), (2, 2, 4), (2, 2, 4)]
    assert [ours[t].shape for t in ("h0", "h1")] == [(2, 5, 2), (2, 5, 2)]
    for n, c, h in np.ndindex(*x.shape):
        top, offset = ("s0", 0) if c < 1 else ("s1", 1) if c < 3 else ("s2", 3)
        assert ours[top][n, c - offset, h] == x[n, c, h]
        assert ours["h0" if h < 2 else "h1"][n, c, h % 2] == x[n, c, h]
    for n, c, h in np.ndindex(2, 3, 4):
        assert ours["cat"][n, c, h] == (x[n, 3 + c, h] if c < 2 else x[n, 0, h])


def test_in_place_layers_overwrite_their_blob_in_order():
    body = """
layer { name: "double" type: "Power" bottom: "data" top: "y" power_param { scale: 2 } }
layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }
layer { name: "shift" type: "Power" bottom: "y" top: "y" power_param { shift: -1 } }
layer { name: "copy" type: "Split" bottom: "y" top: "a" top: "b" }
"""
    x = _data((3, 4), seed=5)
    ours = run_reference(_net(body, x.shape), x)
    assert list(ours) == ["data", "y", "a", "b"]
    np.testing.assert_array_equal(ours["y"], np.maximum(2 * x, 0) - 1)
    np.testing.assert_array_equal(ours["a"], ours["y"])
    np.testing.assert_array_equal(ours["b"], ours["y"])
    np.testing.assert_array_equal(ours["data"], x)


# ----------------------------------------------------------------------------- errors


def test_unsupported_types_are_all_listed_before_computing():
    body = """
layer { name: "e" type: "ShapeOnlyA" bottom: "data" top: "e" }
layer { name: "big" type: "InnerProduct" bottom: "e" top: "big"
        inner_product_param { num_output: 3 } }
layer { name: "t" type: "ShapeOnlyB" bottom: "big" top: "t" }
"""
    for name in ("ShapeOnlyA", "ShapeOnlyB"):  # shape rules, no NumPy forward
        converter.register_layer(name, shape=same_shape)
    try:
        with pytest.raises(ConverterError) as caught:
            run_reference(_net(body, (1, 4)), np.zeros((1, 4)))
    finally:
        for name in ("ShapeOnlyA", "ShapeOnlyB"):
            converter.unregister_layer(name)
    message = str(caught.value)
    assert message.startswith("tiny.prototxt:")
    assert "ShapeOnlyA" in message and "ShapeOnlyB" in message
    assert "'e'" in message and "'t'" in message and "'big'" not in message
    assert "without a NumPy forward" in message and "converter.register_layer" in message


def test_bad_parameters_name_the_layer():
    even = (
        'layer { name: "even_lrn" type: "LRN" bottom: "data" top: "l" lrn_param { local_size: 4 } }'
    )
    with pytest.raises(ConverterError, match=r"tiny\.prototxt: layer 'even_lrn'.*odd"):
        run_reference(_net(even, (1, 4, 3, 3)), np.zeros((1, 4, 3, 3)))
    no_weights = (
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        "inner_product_param { num_output: 2 } }"
    )
    with pytest.raises(ConverterError, match=r"layer 'fc'.*needs 2 parameter blob"):
        run_reference(_net(no_weights, (1, 4)), np.zeros((1, 4)))


def test_inputs_must_name_the_input_blobs():
    net = _net('layer { name: "a" type: "AbsVal" bottom: "data" top: "a" }', (1, 2))
    with pytest.raises(ConverterError, match="missing.*'data'.*unknown.*'image'"):
        run_reference(net, {"image": np.zeros((1, 2))})
    np.testing.assert_array_equal(run_reference(net, {"data": -np.ones((1, 2))})["a"], 1.0)


def _two_input_net(body: str, shapes: list[tuple[int, ...]]):
    declared = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes)
    tops = " ".join(f'top: "{t}"' for t in ("data", "other")[: len(shapes)])
    text = (
        f'name: "t"\nlayer {{ name: "in" type: "Input" {tops} '
        f"input_param {{ {declared} }} }}\n{body}"
    )
    return net_from_param(parse_prototxt(text, "tiny.prototxt"), "tiny.prototxt")


def test_scale_and_bias_with_a_second_bottom_by_hand():
    body = """
layer { name: "scaled" type: "Scale" bottom: "data" bottom: "other" top: "scaled"
        scale_param { axis: 1 bias_term: true } }
layer { name: "biased" type: "Bias" bottom: "data" bottom: "other" top: "biased" }
"""
    x, s = _data((2, 3, 4), seed=6), _data((3, 4), seed=7)
    net = _two_input_net(body, [x.shape, s.shape])
    beta = _data((3, 4), seed=8).astype(np.float32)
    net.layer("scaled").blobs = [beta]  # with a second bottom, the only blob is the bias
    ours = run_reference(net, {"data": x, "other": s})
    for n, c, h in np.ndindex(*x.shape):
        expected = x[n, c, h] * s[c, h] + float(beta[c, h])
        assert ours["scaled"][n, c, h] == pytest.approx(expected, rel=1e-12)
        assert ours["biased"][n, c, h] == x[n, c, h] + s[c, h]


def test_three_dimensional_convolution_by_hand():
    body = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 2 kernel_size: 3 kernel_size: 2
                            pad: 1 stride: 2 dilation: 1 dilation: 2 dilation: 1 group: 2 } }
"""
    x = _data((1, 2, 4, 6, 5), seed=9)
    net = _net(body, x.shape)
    weight = _data((4, 1, 2, 3, 2), seed=10).astype(np.float32)
    bias = _data((4,), seed=11).astype(np.float32)
    net.layer("conv").blobs = [weight, bias]
    ours = run_reference(net, x)["conv"]
    # out = (in + 2 pad - (dilation (k - 1) + 1)) // stride + 1 per axis
    assert ours.shape == (1, 4, 3, 2, 3)
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1), (1, 1)])
    for o, i, j, k in np.ndindex(*ours.shape[1:]):
        total = float(bias[o])
        for a, b, c in np.ndindex(2, 3, 2):
            cell = padded[0, o // 2, 2 * i + a, 2 * j + 2 * b, 2 * k + c]
            total += float(weight[o, 0, a, b, c]) * cell
        assert ours[0, o, i, j, k] == pytest.approx(total, rel=1e-10, abs=1e-12)
