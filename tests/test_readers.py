"""Readers against files written by real Caffe: every blob bit-equal, every shape as Caffe says."""

from __future__ import annotations

import json

import numpy as np
import pytest

import converter
from conftest import (
    EDGE_CASES,
    FIXTURES,
    KAIMING,
    LEGACY,
    RESNET_CASES,
    load_case,
    shared_case,
    shared_cases,
)
from converter import caffe_pb2
from converter.io.caffemodel import read_caffemodel
from converter.io.prototxt import parse_prototxt
from converter.net import net_from_param


def assert_bit_equal(weights: dict[str, list[np.ndarray]], params: dict[str, np.ndarray]):
    keys = {f"{name}/{i}" for name, blobs in weights.items() for i in range(len(blobs))}
    assert keys == set(params)
    for name, blobs in weights.items():
        for i, blob in enumerate(blobs):
            ref = params[f"{name}/{i}"]
            assert blob.shape == ref.shape and blob.dtype == ref.dtype
            assert np.array_equal(blob.view(np.uint32), ref.view(np.uint32)), f"{name}/{i}"


def caffe_layer_table(info: dict) -> list[dict]:
    """case.json's layer table without the Split layers Caffe inserts for shared blobs."""
    return [
        row for row in info["layers"] if not (row["type"] == "Split" and "_split_" in row["name"])
    ]


def assert_shapes_match_caffe(net: converter.Net, info: dict):
    if "layers" not in info:  # resnet50_w8_calibrated ships no layer table
        return
    table = caffe_layer_table(info)
    assert [layer.name for layer in net.layers] == [row["name"] for row in table]
    for layer, shapes, row in zip(net.layers, net.shapes(), table):
        assert layer.type == row["type"]
        assert layer.tops == row["tops"]
        assert [list(s) for s in shapes.top_shapes] == row["top_shapes"], layer.name
        assert [list(s) for s in shapes.param_shapes] == row["param_shapes"], layer.name
        assert [list(b.shape) for b in layer.blobs] == row["param_shapes"], layer.name


@pytest.mark.parametrize("name", ["resnet18_w8", *EDGE_CASES])
def test_caffemodel_blobs_bit_equal(name):
    case = load_case(name)
    with np.load(case.folder / "params.npz") as params:
        assert_bit_equal(converter.read_weights(case.caffemodel), dict(params))


@pytest.mark.parametrize("name", RESNET_CASES + EDGE_CASES)
def test_shapes_match_caffe_layer_table(name):
    case = load_case(name)
    net = converter.read_net(case.prototxt, case.caffemodel)
    assert_shapes_match_caffe(net, case.info)


@pytest.mark.slow
@pytest.mark.parametrize("name", shared_cases())
def test_every_shared_fixture_reads_exactly(name):
    case = shared_case(name)
    net = converter.read_net(case.prototxt, case.caffemodel)
    assert_shapes_match_caffe(net, case.info)
    with np.load(case.folder / "params.npz") as params:
        assert_bit_equal(converter.read_weights(case.caffemodel), dict(params))


def test_legacy_blob_dims_read_as_caffe_does():
    legacy = converter.read_weights(LEGACY / "legacy_blobdims.caffemodel")
    modern = converter.read_weights(FIXTURES / "resnet18_w8" / "resnet18_w8.caffemodel")
    assert legacy["fc1000"][0].shape == (1, 1, 10, 64)  # num/channels/height/width as stored
    assert legacy["conv1"][1].shape == (1, 1, 1, 8)
    net = converter.read_net(
        FIXTURES / "resnet18_w8" / "resnet18_w8.prototxt", LEGACY / "legacy_blobdims.caffemodel"
    )
    for layer in net.layers:
        for blob, ref in zip(layer.blobs, modern.get(layer.name, [])):
            assert blob.shape == ref.shape and np.array_equal(blob, ref), layer.name
    assert_shapes_match_caffe(net, load_case("resnet18_w8").info)


def test_v1_layers_net_upgrades_to_the_modern_net():
    info = json.loads((LEGACY / "case.json").read_text())
    v1 = converter.read_net(LEGACY / "v1.prototxt", LEGACY / "v1.caffemodel")
    modern = converter.read_net(
        LEGACY / "v1net_modern.prototxt", LEGACY / "v1net_modern.caffemodel"
    )
    # the legacy header becomes an Input layer named 'input', as in Caffe's upgrade
    assert (v1.layers[0].name, v1.layers[0].type, v1.layers[0].tops) == ("input", "Input", ["data"])
    assert [(x.name, x.type, x.bottoms, x.tops) for x in v1.layers[1:]] == [
        (x.name, x.type, x.bottoms, x.tops) for x in modern.layers[1:]
    ]
    assert v1.shapes() == modern.shapes()
    assert v1.blob_shapes()["pool1"] == (2, 4, 5, 6)  # ceil mode: floor would give 4x5
    for a, b in zip(v1.layers, modern.layers):
        assert len(a.blobs) == len(b.blobs)
        for x, y in zip(a.blobs, b.blobs):
            assert x.shape == y.shape and np.array_equal(x, y)
    with np.load(LEGACY / "params_v1.npz") as params:
        assert_bit_equal(converter.read_weights(LEGACY / "v1.caffemodel"), dict(params))
    assert info["b_v1_layers"]["caffe_loads_it"]


def test_kaiming_prototxts_and_mean_file():
    depth_blocks = {50: 16, 101: 33, 152: 50}
    for depth, blocks in depth_blocks.items():
        net = converter.read_net(KAIMING / f"ResNet-{depth}-deploy.prototxt")
        assert net.layers[0].name == "input" and net.layers[0].tops == ["data"]
        assert net.input_shapes() == {"data": (1, 3, 224, 224)}
        shapes = net.blob_shapes()
        assert shapes["conv1"] == (1, 64, 112, 112)
        assert shapes["pool1"] == (1, 64, 56, 56)
        assert shapes["res5c"] == (1, 2048, 7, 7)
        assert shapes["pool5"] == (1, 2048, 1, 1)
        assert shapes["prob"] == (1, 1000)
        assert sum(layer.type == "Eltwise" for layer in net.layers) == blocks
        assert net.outputs() == ["prob"]
    mean = converter.read_blob(KAIMING / "ResNet_mean.binaryproto")
    assert mean.shape == (1, 3, 224, 224) and mean.dtype == np.float32
    np.testing.assert_allclose(mean.mean(axis=(0, 2, 3)), [103.06, 115.90, 123.15], atol=0.01)


def test_shape_inference_follows_batch_override():
    net = converter.read_net(KAIMING / "ResNet-50-deploy.prototxt")
    shapes = net.blob_shapes({"data": (4, 3, 256, 256)})
    assert shapes["pool1"] == (4, 64, 64, 64)
    assert shapes["res5c"] == (4, 2048, 8, 8)
    assert shapes["pool5"] == (4, 2048, 2, 2)


def pool_net(kernel: int, stride: int, pad: int, size: int, extra: str = "") -> converter.Net:
    text = f"""
    layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 1 dim: 1 dim: {size} dim: {size} }} }} }}
    layer {{ name: "p" type: "Pooling" bottom: "x" top: "y"
             pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} pad: {pad} {extra} }} }}
    """  # noqa: E501
    return net_from_param(parse_prototxt(text))


@pytest.mark.parametrize(
    ("kernel", "stride", "pad", "size", "expected"),
    [
        (3, 2, 0, 112, 56),  # ResNet pool1: ceil((112-3)/2)+1 = 56 (floor would give 55)
        (2, 2, 1, 23, 12),  # ceil gives 13, Caffe's pad rule drops the last window
        (2, 3, 0, 18, 7),  # pad 0: Caffe keeps a window starting past the input
        (3, 2, 1, 18, 10),
    ],
)
def test_pool_output_size_follows_caffe(kernel, stride, pad, size, expected):
    assert pool_net(kernel, stride, pad, size).blob_shapes()["y"] == (1, 1, expected, expected)


def test_pool_floor_round_mode():
    net = pool_net(3, 2, 0, 112, "round_mode: FLOOR")
    assert net.blob_shapes()["y"] == (1, 1, 55, 55)


def test_double_data_and_unpacked_floats_read(tmp_path):
    """Older writers used double_data or non-packed repeated floats; both must read."""
    net = caffe_pb2.NetParameter(name="n")
    layer = net.layer.add(name="a", type="Scale")
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.double_data.extend([0.5, 1.5, 2.5, -1.0, 1e-300, 7.0])
    raw = net.SerializeToString()
    # a second layer with 5 unpacked floats: tag 0x2D (field 5, fixed32) before each value
    floats = np.arange(5, dtype="<f4")
    unpacked = b"".join(b"\x2d" + f.tobytes() for f in floats)
    shape = b"\x3a\x03\x0a\x01\x05"  # shape { dim: 5 }
    blob_bytes = shape + unpacked
    layer_bytes = b"\x0a\x01b" + b"\x3a" + bytes([len(blob_bytes)]) + blob_bytes
    raw += b"\xa2\x06" + bytes([len(layer_bytes)]) + layer_bytes
    path = tmp_path / "old.caffemodel"
    path.write_bytes(raw)
    weights = converter.read_weights(path)
    assert weights["a"][0].dtype == np.float64
    assert np.array_equal(weights["a"][0], np.array(blob.double_data).reshape(2, 3))
    assert np.array_equal(weights["b"][0], floats)
    assert read_caffemodel(path)[1].type == ""


def test_writer_keeps_zero_d_and_empty_blobs(tmp_path):
    """conv_variants' channel-shared PReLU slope is a 0-d blob (Caffe saves it with no dims)."""
    case = load_case("conv_variants")
    net = converter.read_net(case.prototxt, case.caffemodel)
    assert net.layer("prelu_shared").blobs[0].shape == ()
    out = tmp_path / "copy.caffemodel"
    converter.write_caffemodel(net, out)
    again = converter.read_net(case.prototxt, out)
    for a, b in zip(net.layers, again.layers):
        assert [x.shape for x in a.blobs] == [y.shape for y in b.blobs], a.name
        assert all(np.array_equal(x, y) for x, y in zip(a.blobs, b.blobs)), a.name


def test_writer_round_trip_is_readable_by_protobuf(tmp_path):
    case = load_case("resnet18_w8")
    net = converter.read_net(case.prototxt, case.caffemodel)
    out = tmp_path / "copy.caffemodel"
    converter.write_caffemodel(net, out)
    again = converter.read_net(case.prototxt, out)
    for a, b in zip(net.layers, again.layers):
        assert all(np.array_equal(x, y) for x, y in zip(a.blobs, b.blobs))
    parsed = caffe_pb2.NetParameter.FromString(out.read_bytes())
    conv1 = next(layer for layer in parsed.layer if layer.name == "conv1")
    assert list(conv1.blobs[0].shape.dim) == [8, 3, 7, 7]
    assert np.array_equal(
        np.array(conv1.blobs[0].data, np.float32).reshape(8, 3, 7, 7), net.layer("conv1").blobs[0]
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda w: w["conv1"].__setitem__(0, w["conv1"][0][:, :2]), "blob 0"),
        (lambda w: w.pop("fc1000"), "fc1000"),
        (lambda w: w.__setitem__("extra_layer", [np.zeros(3, np.float32)]), "extra_layer"),
        (lambda w: w["bn_conv1"].pop(), "bn_conv1"),
    ],
)
def test_mismatched_pair_is_a_clear_error(tmp_path, mutate, message):
    case = load_case("resnet18_w8")
    net = converter.read_net(case.prototxt, case.caffemodel)
    weights = {layer.name: list(layer.blobs) for layer in net.layers}
    mutate(weights)
    stored = []
    for name, blobs in weights.items():
        lp = caffe_pb2.LayerParameter(name=name, type="X")
        stored.append((lp.SerializeToString(), blobs))
    from converter.io.caffemodel import write_layers

    bad = tmp_path / "bad.caffemodel"
    write_layers(bad, "bad", stored)
    with pytest.raises(converter.ConverterError) as err:
        converter.read_net(case.prototxt, bad)
    assert str(bad) in str(err.value) and message in str(err.value)


def test_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  typo_field: 3\n}\n')
    with pytest.raises(converter.ConverterError, match=r"bad.prototxt:4:3: .*typo_field"):
        converter.read_net(path)


def test_truncated_caffemodel_is_a_clear_error(tmp_path):
    raw = (FIXTURES / "resnet18_w8" / "resnet18_w8.caffemodel").read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(converter.ConverterError, match="cut.caffemodel: not a valid caffemodel"):
        converter.read_weights(path)


def test_absurd_declared_shape_is_rejected_without_allocating(tmp_path):
    net = caffe_pb2.NetParameter()
    blob = net.layer.add(name="huge", type="Scale").blobs.add()
    blob.shape.dim.extend([1 << 20, 1 << 20])
    blob.data.extend([1.0, 2.0])
    path = tmp_path / "huge.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(converter.ConverterError, match=r"layer 'huge', blob 0: .*2 values"):
        converter.read_weights(path)
