"""Caffe forks' layers: the fork_layers case's integer blobs and row order exactly, both
meanings of Upsample, the pooling mask, and each layer's variants through the torch module
and the NumPy executor (two implementations of one rule), OpenCV where it runs them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import load_case
from converter import ConverterError
from converter.cli import main
from converter.executor import run_reference
from converter.generic import CaffeGraph
from converter.io.prototxt import parse_prototxt
from converter.net import net_from_param, read_net

FLT_MAX = float(np.finfo(np.float32).max)
INPUT = 'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'


def net_from_text(text: str, shape=None):
    if shape is not None:
        text = INPUT.format(dims=" ".join(f"dim: {d}" for d in shape)) + text
    return net_from_param(parse_prototxt(text, "<test>"), "<test>")


def both(net, inputs) -> tuple[dict, dict]:
    """Every blob through the float64 torch module and through the executor; ``inputs`` is
    one array or {input blob: array}."""
    model = CaffeGraph.from_net(net).double()
    arrays = inputs if isinstance(inputs, dict) else {model.input_names[0]: inputs}
    with torch.no_grad():
        blobs = model.forward_blobs(*(torch.from_numpy(arrays[n]) for n in model.input_names))
    return {k: v.numpy() for k, v in blobs.items()}, run_reference(net, arrays)


def assert_same(ours: dict, ref: dict, rtol: float = 1e-12) -> None:
    assert ours.keys() == ref.keys()
    for name in ref:
        assert ours[name].shape == ref[name].shape, name
        np.testing.assert_allclose(ours[name], ref[name], rtol=rtol, atol=1e-12, err_msg=name)


# ----------------------------------------------------------------------------- fork_layers


@pytest.fixture(scope="module")
def fork():
    case = load_case("fork_layers")
    net = read_net(case.prototxt, case.caffemodel)
    model = CaffeGraph.from_net(net)
    with torch.no_grad():
        torch_blobs = model.forward_blobs(torch.from_numpy(case.input))
    return case, {k: v.numpy() for k, v in torch_blobs.items()}, run_reference(net, case.input)


def test_integer_blobs_equal_caffes_exactly(fork):
    case, ours, numpy64 = fork
    for blobs in (ours, numpy64):
        np.testing.assert_array_equal(blobs["pool_mask"], case.blobs["pool_mask"])
        # image index and label of every detection row
        np.testing.assert_array_equal(
            blobs["detection_out"][..., :2], case.blobs["detection_out"][..., :2]
        )


def test_detection_rows_come_in_caffes_order(fork):
    """By image, then label, then score (descending) within a label: not by score alone."""
    case, ours, _ = fork
    rows = case.blobs["detection_out"][0, 0]
    keys = [(image, label, -score) for image, label, score in rows[:, :3].tolist()]
    assert keys == sorted(keys) and rows[:, 2].tolist() != sorted(rows[:, 2], reverse=True)
    # keep_top_k: 25 per image, of 3 classes x up to top_k 40 candidates each
    assert rows.shape == (50, 7) and (rows[:, 0] == 0).sum() == 25
    np.testing.assert_allclose(ours["detection_out"], case.blobs["detection_out"], atol=1e-6)


def test_priorbox_truncates_sizes_and_takes_img_size(fork):
    case, ours, _ = fork
    boxes = ours["s1_priorbox"][0, 0].reshape(-1, 4)
    # the first box of the first cell: min_size 3.7 counts as 3; image 12x14, cell 6x7
    step_w, step_h = 14 / 7, 12 / 6
    cx, cy = 0.5 * step_w, 0.5 * step_h
    np.testing.assert_allclose(
        boxes[0], [(cx - 1.5) / 14, (cy - 1.5) / 12, (cx + 1.5) / 14, (cy + 1.5) / 12], rtol=1e-6
    )
    np.testing.assert_allclose(ours["s1_priorbox"], case.blobs["s1_priorbox"], atol=1e-7)


def test_inspect_gives_the_most_detection_rows(capsys):
    case = load_case("fork_layers")
    assert main(["inspect", str(case.prototxt)]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("detection_out"))
    assert "1x1x50x7" in line


def test_fuse_bn_refuses_the_fork_net(tmp_path, capsys):
    case = load_case("fork_layers")
    out = tmp_path / "fork.safetensors"
    args = [str(case.prototxt), str(case.caffemodel), "-o", str(out), "--fuse-bn"]
    assert main(["convert", *args]) == 2
    assert "--fuse-bn" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------------- pooling mask

POOL_GEOMETRIES = [  # (size, kernel, stride, pad, round_mode)
    ((6, 7), 2, 2, 0, "CEIL"),
    ((7, 9), 3, 2, 0, "CEIL"),  # overlapping windows
    ((7, 9), 3, 2, 1, "CEIL"),  # padding: torch's own windows
    ((7, 9), 3, 2, 2, "FLOOR"),  # pad > kernel / 2: explicit padding
    ((6, 2), 2, 3, 0, "CEIL"),  # an empty last window: mask -1
]


def caffe_mask(x: np.ndarray, kernel, stride, pad, out) -> np.ndarray:
    """``PoolingLayer::Forward_cpu``'s top_mask, transcribed loop for loop."""
    n, c, height, width = x.shape
    mask = np.full((n, c, *out), -1.0)
    for b in range(n):
        for ch in range(c):
            for i in range(out[0]):
                for j in range(out[1]):
                    hstart, wstart = i * stride - pad, j * stride - pad
                    hend, wend = min(hstart + kernel, height), min(wstart + kernel, width)
                    best = -FLT_MAX
                    for h in range(max(hstart, 0), hend):
                        for w in range(max(wstart, 0), wend):
                            if x[b, ch, h, w] > best:
                                best = x[b, ch, h, w]
                                mask[b, ch, i, j] = h * width + w
    return mask


@pytest.mark.parametrize("size, kernel, stride, pad, rounding", POOL_GEOMETRIES)
def test_pooling_mask_is_caffes(size, kernel, stride, pad, rounding):
    text = f"""
    layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask"
             pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} pad: {pad}
                              round_mode: {rounding} }} }}
    """
    net = net_from_text(text, (2, 3, *size))
    x = np.random.default_rng(1).normal(size=(2, 3, *size)).round(1)  # ties: the first wins
    ours, ref = both(net, x)
    want = caffe_mask(x, kernel, stride, pad, ref["pool"].shape[2:])
    np.testing.assert_array_equal(ref["mask"], want)
    np.testing.assert_array_equal(ours["mask"], want)
    model = CaffeGraph.from_net(net)  # float32: the mask is a float blob there too
    with torch.no_grad():
        np.testing.assert_array_equal(
            model.forward_blobs(torch.from_numpy(x).float())["mask"], want
        )


def test_pooling_mask_needs_max_and_at_most_two_tops():
    for pooling, tops in (("AVE", 2), ("MAX", 3)):
        text = f"""
        layer {{ name: "pool" type: "Pooling" bottom: "data"
                 {" ".join(f'top: "t{i}"' for i in range(tops))}
                 pooling_param {{ pool: {pooling} kernel_size: 2 stride: 2 }} }}
        """
        with pytest.raises(ConverterError, match="MAX pooling only"):
            net_from_text(text, (1, 1, 4, 4)).shapes()


# ----------------------------------------------------------------------------- unpooling

SEGNET = """
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv" type: "Convolution" bottom: "pool" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "up" type: "Upsample" bottom: "conv" bottom: "mask" top: "up" %s }
"""


def segnet_net(shape, upsample_param=""):
    net = net_from_text(SEGNET % upsample_param, shape)
    rng = np.random.default_rng(2)
    net.layer("conv").blobs = [
        rng.normal(size=(3, shape[1], 3, 3)).astype(np.float32),
        rng.normal(size=3).astype(np.float32),
    ]
    return net


@pytest.mark.parametrize(
    "shape, param, out",
    [
        ((2, 3, 6, 8), "upsample_param { scale: 2 }", (6, 8)),  # ENet's form
        ((2, 3, 6, 8), "", (6, 8)),  # SegNet's default scale is 2, not this schema's 1
        ((1, 3, 7, 9), "upsample_param { upsample_h: 7 upsample_w: 9 }", (7, 9)),  # SegNet's
        ((1, 3, 7, 9), "upsample_param { scale: 2 pad_out_h: true pad_out_w: true }", (7, 9)),
        ((1, 3, 6, 9), "upsample_param { scale_h: 2 scale_w: 3 }", (6, 15)),
    ],
)
def test_segnet_upsample_unpools_by_the_mask(shape, param, out):
    net = segnet_net(shape, param)
    assert net.blob_shapes()["up"] == shape[:2] + out
    x = np.random.default_rng(3).normal(size=shape)
    ours, ref = both(net, x)
    assert_same(ours, ref)
    # every conv value lands where its window's maximum was; the rest is zero
    up, conv, mask = ref["up"], ref["conv"], ref["mask"].astype(int)
    flat = up.reshape(*shape[:2], -1)
    np.testing.assert_array_equal(
        np.take_along_axis(flat, mask.reshape(*shape[:2], -1), axis=2),
        conv.reshape(*shape[:2], -1),
    )
    assert np.count_nonzero(up) == conv.size


def test_segnet_upsample_matches_opencvs_max_unpool(tmp_path):
    """OpenCV's Caffe importer has no Upsample (nor a pooling mask), but its dnn has
    MaxPool-with-indices and MaxUnpool: an ONNX net of those two is OpenCV's own unpooling
    of the same pooling. It handles 2x2 stride 2 on even sizes (not odd sizes)."""
    cv2 = pytest.importorskip("cv2")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    shape = (1, 3, 6, 8)  # OpenCV's MaxUnpool takes one image
    text = """
    layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask"
            pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up"
            upsample_param { scale: 2 } }
    """
    x = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    model = CaffeGraph.from_net(net_from_text(text, shape))
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    graph = helper.make_graph(
        [
            helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("MaxUnpool", ["p", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
        ],
        "unpool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
    )
    path = tmp_path / "unpool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), path)
    cv_net = cv2.dnn.readNetFromONNX(str(path))
    cv_net.setInput(x)
    np.testing.assert_array_equal(cv_net.forward(), ours)
    assert np.count_nonzero(ours) == x.size // 4


def test_unpooling_last_writer_wins_and_bad_masks_are_refused():
    text = """
    layer { name: "mask" type: "Input" top: "mask" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }
    layer { name: "up" type: "MaxUnPool" bottom: "data" bottom: "mask" top: "up"
            max_unpool_param { dst_h: 2 dst_w: 3 } }
    """  # noqa: E501
    net = net_from_text(text, (1, 1, 2, 2))
    model = CaffeGraph.from_net(net).double()
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    mask = np.array([5.0, 0.0, 5.0, 2.9]).reshape(1, 1, 2, 2)  # 5 twice; 2.9 -> 2
    want = np.array([2.0, 0.0, 4.0, 0.0, 0.0, 3.0]).reshape(1, 1, 2, 3)
    with torch.no_grad():
        np.testing.assert_array_equal(model(torch.from_numpy(x), torch.from_numpy(mask)), want)
    np.testing.assert_array_equal(run_reference(net, {"data": x, "mask": mask})["up"], want)
    for bad in (6.0, -1.0):
        mask[0, 0, 0, 0] = bad
        with pytest.raises(ConverterError, match="outside the 2x3 output"):
            model(torch.from_numpy(x), torch.from_numpy(mask))
        with pytest.raises(ConverterError, match="outside the 2x3 output"):
            run_reference(net, {"data": x, "mask": mask})


def test_upsample_forms_are_told_apart_and_mixtures_refused():
    nearest = 'layer { name: "up" type: "Upsample" bottom: "data" top: "up" %s }'
    net = net_from_text(nearest % "upsample_param { scale: 3 }", (1, 2, 2, 3))
    assert net.blob_shapes()["up"] == (1, 2, 6, 9)
    x = np.arange(12.0).reshape(1, 2, 2, 3)
    ours, ref = both(net, x)
    assert_same(ours, ref)
    np.testing.assert_array_equal(ref["up"][0, 1, 3:6, 6:9], np.full((3, 3), x[0, 1, 1, 2]))
    net = net_from_text(nearest % "upsample_param { scale: 2 dims_num: 3 }", (1, 2, 5))
    ours, ref = both(net, np.arange(10.0).reshape(1, 2, 5))
    assert ref["up"].shape == (1, 2, 10) and ref["up"][0, 0, :4].tolist() == [0, 0, 1, 1]
    assert_same(ours, ref)
    refusals = [
        (nearest % "upsample_param { upsample_h: 4 upsample_w: 6 }", "two bottoms"),
        (SEGNET % "upsample_param { dims_num: 4 }", "no dims_num"),
        (SEGNET % "upsample_param { scale: 2 scale_h: 2 scale_w: 2 }", "scale_h"),
        (SEGNET % "upsample_param { scale: 1 }", "greater than 1"),
        (SEGNET % "upsample_param { scale: 3 pad_out_h: true }", "scale of 2"),
    ]
    for text, words in refusals:
        with pytest.raises(ConverterError, match=words):
            net_from_text(text, (1, 3, 4, 6)).shapes()


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize(
    "param, out",
    [
        ("bilinear_interpolate_param { dst_h: 9 }", (9, 7)),  # a missing dst_w keeps W
        ("bilinear_interpolate_param { scale_factor: 1.5 align_corners: false }", (7, 10)),
        ("bilinear_interpolate_param { dst_h: 3 dst_w: 4 align_corners: false }", (3, 4)),
    ],
)
def test_bilinear_interpolate_variants(param, out):
    text = f'layer {{ name: "b" type: "BilinearInterpolate" bottom: "data" top: "b" {param} }}'
    net = net_from_text(text, (2, 3, 5, 7))
    x = np.random.default_rng(5).normal(size=(2, 3, 5, 7))
    ours, ref = both(net, x)
    assert ref["b"].shape == (2, 3, *out)
    assert_same(ours, ref, rtol=1e-6)  # torch's coordinates are float32, as the fork's


def test_bilinear_interpolate_refusals():
    for param, words in [
        ("dst_h: 4 scale_factor: 2", "exactly one"),
        ("", "exactly one"),
        ("dst_h: 1", "at least 2x2"),  # align_corners divides by dst - 1
    ]:
        text = f'layer {{ name: "b" type: "BilinearInterpolate" bottom: "data" top: "b" bilinear_interpolate_param {{ {param} }} }}'  # noqa: E501
        with pytest.raises(ConverterError, match=words):
            net_from_text(text, (1, 1, 4, 4)).shapes()


def test_resize_drops_neighbours_past_the_edge():
    text = 'layer { name: "r" type: "Resize" bottom: "data" top: "r" resize_param { height: 4 width: 2 } }'  # noqa: E501
    net = net_from_text(text, (1, 1, 2, 1))
    x = np.array([10.0, 20.0]).reshape(1, 1, 2, 1)
    ours, ref = both(net, x)
    # rows at 0, 0.5, 1, 1.5 of 2; columns at 0, 0.5 of 1: the second column loses its
    # missing neighbour's half, the last row its missing next row's half
    want = np.array([[10, 5], [15, 7.5], [20, 10], [10, 5]], dtype=float)
    np.testing.assert_allclose(ref["r"][0, 0], want)
    np.testing.assert_allclose(ours["r"][0, 0], want)
    pyramid = text.replace(
        "height: 4 width: 2", "is_pyramid_test: true out_height_scale: 2.5 out_width_scale: 3"
    )
    assert net_from_text(pyramid, (1, 1, 2, 1)).blob_shapes()["r"] == (1, 1, 5, 3)


def test_pad_forms():
    template = 'layer {{ name: "p" type: "Pad" bottom: "data" top: "p" pad_param {{ {} }} }}'
    x = np.random.default_rng(6).normal(size=(1, 2, 4, 5))
    for param, shape in [
        ("pad_u: -1 pad_d: -1 pad_l: -2 pad_r: -1", (1, 2, 2, 2)),  # all negative: a crop
        ("pad_type: REFLECT pad_u: 3 pad_l: 4", (1, 2, 7, 9)),
        ("pad_type: REPLICATE pad_d: 6 pad_r: 1", (1, 2, 10, 6)),
    ]:
        net = net_from_text(template.format(param), x.shape)
        ours, ref = both(net, x)
        assert ref["p"].shape == shape
        assert_same(ours, ref, rtol=0)
    np.testing.assert_array_equal(ref["p"][0, :, 4:, :5], np.repeat(x[0, :, 3:], 6, axis=1))
    for param, words in [
        ("pad_u: -1 pad_d: 1", "mix signs"),
        ("pad_u: -1", "mix signs"),
        ("pad_type: REFLECT pad_l: 5", "smaller than"),
        ("pad_u: -3 pad_d: -2 pad_l: -1 pad_r: -1", "crop more"),
    ]:
        with pytest.raises(ConverterError, match=words):
            net_from_text(template.format(param), x.shape).shapes()


def test_pixel_shuffle_permute_unsqueeze_and_the_activations():
    text = """
    layer { name: "ps" type: "PixelShuffle" bottom: "data" top: "ps" pixelshuffle_param { upscale_factor: 3 } }
    layer { name: "perm" type: "Permute" bottom: "data" top: "perm" permute_param { order: 2 } }
    layer { name: "uns" type: "Unsqueeze" bottom: "data" top: "uns" unsqueeze_param { dim: -1 } }
    layer { name: "r6" type: "ReLU6" bottom: "data" top: "r6" relu6_param { threshold: 1 negative_slope: 0.5 } }
    layer { name: "hs" type: "HardSigmoid" bottom: "data" top: "hs" }
    layer { name: "sw" type: "HardSwish" bottom: "data" top: "data" }
    """  # noqa: E501
    net = net_from_text(text, (2, 18, 2, 3))
    x = np.random.default_rng(7).normal(0, 4, size=(2, 18, 2, 3))
    ours, ref = both(net, x)
    assert_same(ours, ref)
    assert ref["ps"].shape == (2, 2, 6, 9) and ref["ps"][1, 1, 4, 8] == x[1, 9 + 1 * 3 + 2, 1, 2]
    assert ref["perm"].shape == (2, 2, 18, 3) and ref["perm"][1, 0, 5, 2] == x[0, 5, 1, 2]
    assert ref["uns"].shape == (2, 18, 2, 3, 1)
    assert ref["r6"].max() == 1 and ref["r6"].min() < -1  # the negative side is not clipped
    alpha = float(np.float32(0.2))  # ONNX's default, held as a float
    np.testing.assert_allclose(ref["hs"], np.clip(alpha * x + 0.5, 0, 1))
    np.testing.assert_allclose(ref["data"], x * np.clip(x / 6 + 0.5, 0, 1))  # in place
    for param, words in [("order: 0 order: 0", "distinct"), ("order: 4", "distinct")]:
        bad = f'layer {{ name: "p" type: "Permute" bottom: "data" top: "p" permute_param {{ {param} }} }}'  # noqa: E501
        with pytest.raises(ConverterError, match=words):
            net_from_text(bad, (1, 2, 3, 4)).shapes()


def test_normalize_forms_and_blob_shapes():
    text = """
    layer { name: "n1" type: "Normalize" bottom: "data" top: "n1" norm_param { across_spatial: false channel_shared: false } }
    layer { name: "n2" type: "Normalize" bottom: "data" top: "n2" norm_param { eps: 0.5 } }
    """  # noqa: E501
    net = net_from_text(text, (2, 3, 4, 5))
    assert [s.param_shapes for s in net.shapes()[1:]] == [[(3,)], [()]]
    net.layer("n1").blobs = [np.array([1.0, 2.0, 3.0], np.float32)]
    net.layer("n2").blobs = [np.array(4.0, np.float32)]
    x = np.random.default_rng(8).normal(size=(2, 3, 4, 5))
    ours, ref = both(net, x)
    assert_same(ours, ref)
    np.testing.assert_allclose(ref["n1"][1, 2], 3 * x[1, 2] / np.sqrt((x[1] ** 2).sum(0) + 1e-10))
    np.testing.assert_allclose(ref["n2"][0], 4 * x[0] / np.sqrt((x[0] ** 2).sum() + 0.5))


# ----------------------------------------------------------------------------- detection

PRIORS = """
layer { name: "image" type: "Input" top: "image" input_param { shape { dim: 1 dim: 3 dim: 30 dim: 40 } } }
layer { name: "prior" type: "PriorBox" bottom: "data" bottom: "image" top: "prior"
        prior_box_param { %s } }
"""  # noqa: E501


@pytest.mark.parametrize(
    "param",
    [
        "min_size: 8 max_size: 20 aspect_ratio: 2 aspect_ratio: 3",
        "min_size: 8.9 min_size: 15 max_size: 16 max_size: 30 aspect_ratio: 2 flip: false clip: false",  # noqa: E501
        "min_size: 5 img_size: 50 step: 9 offset: 0.25 variance: 0.2",
        "min_size: 5 img_h: 50 img_w: 60 step_h: 9 step_w: 7 aspect_ratio: 0.5 aspect_ratio: 2 "
        "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
    ],
)
def test_prior_box_variants(param):
    net = net_from_text(PRIORS % param, (1, 4, 3, 5))
    ours, ref = both(net, {"data": np.zeros((1, 4, 3, 5)), "image": np.zeros((1, 3, 30, 40))})
    assert_same(ours, ref, rtol=1e-6)
    config = net.layer("prior").param.prior_box_param
    boxes = ref["prior"][0, 0].reshape(3, 5, -1, 4)
    if config.clip:
        assert boxes.min() >= 0 and boxes.max() <= 1
    first = int(config.min_size[0])  # truncated: 8.9 counts as 8
    width = (boxes[1, 2, 0, 2] - boxes[1, 2, 0, 0]) * (config.img_w or config.img_size or 40)
    assert math.isclose(width, first, rel_tol=1e-5) or config.clip


DETECTION = """
layer { name: "conf_in" type: "Input" top: "conf_in" input_param { shape { dim: 2 dim: %(P)d dim: %(C)d } } }
layer { name: "prior_in" type: "Input" top: "prior_in" input_param { shape { dim: 1 dim: 2 dim: %(P4)d } } }
layer { name: "softmax" type: "Softmax" bottom: "conf_in" top: "conf" softmax_param { axis: 2 } }
layer { name: "det" type: "DetectionOutput" bottom: "data" bottom: "conf" bottom: "prior_in" top: "det"
        detection_output_param { num_classes: %(C)d %(param)s } }
"""  # noqa: E501


def detection_inputs(priors: int, classes: int, loc_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.1, 0.9, size=(priors, 2))
    sizes = rng.uniform(0.05, 0.4, size=(priors, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    prior = np.stack([boxes.reshape(-1), np.tile([0.1, 0.1, 0.2, 0.2], priors)])[None]
    return {
        "data": rng.normal(0, 1, size=(2, priors * loc_classes * 4)),
        "conf_in": rng.normal(0, 2, size=(2, priors, classes)),
        "prior_in": prior,
    }


@pytest.mark.parametrize(
    "param",
    [
        "nms_param { nms_threshold: 0.3 top_k: 20 } keep_top_k: 12 confidence_threshold: 0.05 code_type: CENTER_SIZE",  # noqa: E501
        "nms_param { nms_threshold: 0.6 eta: 0.8 } confidence_threshold: 0.2 code_type: CORNER",
        "share_location: false nms_param { nms_threshold: 0.45 } background_label_id: -1 "
        "code_type: CORNER_SIZE",
        "share_location: false nms_param { nms_threshold: 0.4 top_k: 5 } keep_top_k: 9",
        "keep_top_k: 7 code_type: CENTER_SIZE variance_encoded_in_target: true",  # no NMS
        "nms_param { nms_threshold: 0.5 } confidence_threshold: 0.999",  # nothing found
    ],
)
def test_detection_output_variants(param):
    priors, classes = 30, 4
    loc_classes = classes if "share_location: false" in param else 1
    text = DETECTION % {"P": priors, "C": classes, "P4": priors * 4, "param": param}
    net = net_from_text(text, (2, priors * loc_classes * 4))
    inputs = detection_inputs(priors, classes, loc_classes, seed=len(param))
    ours, ref = both(net, inputs)
    assert_same(ours, ref)
    det = ref["det"][0, 0]
    bound = net.blob_shapes()["det"][2]
    assert 2 <= len(det) <= bound
    if "0.999" in param:  # one row of -1 per image, its index first
        np.testing.assert_array_equal(det, [[0] + [-1] * 6, [1] + [-1] * 6])
        return
    keys = [(image, label, -score) for image, label, score in det[:, :3].tolist()]
    assert keys == sorted(keys)
    if "nms_param" not in param:  # no NMS at all: all 30 priors of 3 classes, then 7
        assert bound == 14 and len(det) == 14
    if "background_label_id: -1" in param:
        assert 0 in det[:, 1]


def test_detection_output_refusals():
    text = DETECTION % {"P": 30, "C": 4, "P4": 120, "param": ""}
    with pytest.raises(ConverterError, match="loc"):
        net_from_text(text, (2, 100)).shapes()
    bad = DETECTION % {"P": 30, "C": 4, "P4": 120, "param": "nms_param { eta: 1.5 }"}
    with pytest.raises(ConverterError, match="eta"):
        net_from_text(bad, (2, 120)).shapes()
    # Caffe skips the shared boxes' label -1 as the background, then aborts not finding them
    bad = DETECTION % {"P": 30, "C": 4, "P4": 120, "param": "background_label_id: -1"}
    with pytest.raises(ConverterError, match="background_label_id -1"):
        net_from_text(bad, (2, 120)).shapes()
