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
    rel_error,
    shared_case,
    shared_cases,
)
from converter import caffe_pb2
from converter.cli import main
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


def _layer_ends(raw: bytes) -> list[tuple[int, int]]:
    """(field number, end offset) of each top-level field of a valid caffemodel (all of them
    length-delimited: the name and the layers)."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            value |= (raw[pos] & 0x7F) << shift
            shift += 7
            pos += 1
            if not raw[pos - 1] & 0x80:
                return value, pos

    ends, pos = [], 0
    while pos < len(raw):
        key, pos = varint(pos)
        size, pos = varint(pos)
        pos += size
        ends.append((key >> 3, pos))
    return ends


def test_truncated_caffemodel_is_a_clear_error(tmp_path):
    raw = (FIXTURES / "resnet18_w8" / "resnet18_w8.caffemodel").read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(raw[: len(raw) // 2])
    half = len(raw) // 2
    with pytest.raises(converter.ConverterError) as err:
        converter.read_weights(path)
    message = str(err.value)
    assert message.startswith(f"{path}: truncated caffemodel: a length field runs ")
    # the layer the cut falls in, and by how much: the bytes of it past the end
    overrun = int(message.split(" runs ")[1].split(" bytes")[0].replace(",", ""))
    ends = [end for _, end in _layer_ends(raw)]
    assert overrun == min(end for end in ends if end > half) - half
    assert f"the {half:,}-byte file" in message


def test_absurd_declared_shape_is_rejected_without_allocating(tmp_path):
    net = caffe_pb2.NetParameter()
    blob = net.layer.add(name="huge", type="Scale").blobs.add()
    blob.shape.dim.extend([1 << 20, 1 << 20])
    blob.data.extend([1.0, 2.0])
    path = tmp_path / "huge.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(converter.ConverterError, match=r"layer 'huge', blob 0: .*2 values"):
        converter.read_weights(path)


# ----------------------------------------------------------------------------- weight forms

WEIGHT_FORMATS = FIXTURES / "weight_formats"
H5 = WEIGHT_FORMATS / "weight_formats.caffemodel.h5"
FP16 = WEIGHT_FORMATS / "weight_formats_fp16.caffemodel"


def resnet18_params() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "resnet18_w8" / "params.npz") as params:
        return dict(params)


def test_hdf5_weights_read_bit_equal():
    """Caffe's own net.save_hdf5 of resnet18_w8: /data/<layer>/<i>, read by content."""
    pytest.importorskip("h5py")
    assert_bit_equal(converter.read_weights(H5), resnet18_params())
    net = converter.read_net(WEIGHT_FORMATS / "weight_formats.prototxt", H5)
    assert net.weights_format == "hdf5" and net.weights_dtype == "float32"
    conv1 = net.layer("conv1").blobs[0]
    assert not conv1.flags.owndata  # a view of the mapped file, as for binary caffemodels
    binary = converter.read_net(FIXTURES / "resnet18_w8" / "resnet18_w8.prototxt")
    assert [x.name for x in net.layers if x.blobs] == [
        x.name for x, s in zip(binary.layers, binary.shapes()) if s.param_shapes
    ]


def test_hdf5_without_h5py_says_how_to_install(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    prototxt = WEIGHT_FORMATS / "weight_formats.prototxt"
    assert main(["inspect", str(prototxt), str(H5)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"caffe2torch: error: {H5}: is Caffe HDF5 weights, which need h5py to read: "
        'pip install "caffe2torch[hdf5]" (or pip install h5py)\n'
    )


def test_hdf5_layouts_caffe_would_not_write(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data/conv1/1", data=np.zeros(3, np.float32))
    with pytest.raises(converter.ConverterError, match=r"'conv1' has blobs \[1\]: blob 0"):
        converter.read_weights(path)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data/conv1/weight", data=np.zeros(3, np.float32))
    with pytest.raises(converter.ConverterError, match="'weight' is not a blob"):
        converter.read_weights(path)
    with h5py.File(path, "w") as handle:  # float16, integer and chunked data read as Caffe's
        group = handle.create_group("data/x")
        group.create_dataset("0", data=np.array([1.5, -2.0], np.float16))
        group.create_dataset("1", data=np.array([3, 4], np.int32))
        group.create_dataset("2", data=np.arange(6.0), chunks=(2,), compression="gzip")
    blobs = converter.read_weights(path)["x"]
    assert [b.dtype for b in blobs] == [np.float32, np.float32, np.float64]
    assert [b.tolist() for b in blobs] == [[1.5, -2.0], [3.0, 4.0], [0, 1, 2, 3, 4, 5]]
    cut = tmp_path / "cut.h5"
    cut.write_bytes(H5.read_bytes()[:5000])
    with pytest.raises(converter.ConverterError, match="cut.h5: an HDF5 file that cannot be read"):
        converter.read_weights(cut)


def test_half_precision_blobs_read_as_float32():
    """NVIDIA Caffe's raw_data_type FLOAT16 + raw_data: float16 of the weights, widened."""
    weights = converter.read_weights(FP16)
    rounded = {k: v.astype(np.float16).astype(np.float32) for k, v in resnet18_params().items()}
    assert_bit_equal(weights, rounded)
    net = converter.read_net(WEIGHT_FORMATS / "weight_formats.prototxt", FP16)
    assert net.weights_format == "caffemodel" and net.weights_dtype == "float16"


def test_raw_data_that_is_not_weights(tmp_path):
    def blob(raw_type: int, raw: bytes, dims=(2,)) -> bytes:
        shape = b"\x0a" + bytes([len(dims)]) + bytes(dims)
        return b"\x3a" + bytes([len(shape)]) + shape + bytes([0x50, raw_type, 0x62, len(raw)]) + raw

    cases = {
        "int": (blob(3, b"\0" * 8), "raw_data of type INT is not a weight type"),
        "short": (blob(2, b"\0" * 2), "blob declares 2 values but its float16 raw_data holds 1"),
        "odd": (blob(2, b"\0" * 3), "float16 raw_data of 3 bytes is not a multiple of 2"),
        "double": (blob(0, np.array([1.0, 2.0]).tobytes()), None),  # the enum's default
    }
    for name, (data, words) in cases.items():
        path = tmp_path / f"{name}.caffemodel"
        layer = b"\x0a\x01x" + b"\x3a" + bytes([len(data)]) + data
        path.write_bytes(b"\xa2\x06" + bytes([len(layer)]) + layer)
        if words is None:
            assert converter.read_weights(path)["x"][0].tolist() == [1.0, 2.0]
            continue
        with pytest.raises(converter.ConverterError, match=f"layer 'x', blob 0: {words}"):
            converter.read_weights(path)


@pytest.mark.parametrize(
    ("weights", "reference"),
    [(H5, "blobs.npz"), (FP16, "blobs_fp16.npz")],
    ids=["hdf5", "float16"],
)
def test_weight_formats_match_caffe(capsys, tmp_path, weights, reference):
    """Real Caffe's outputs through convert + load and through verify --reference."""
    if weights == H5:
        pytest.importorskip("h5py")
    info = json.loads((WEIGHT_FORMATS / "case.json").read_text())
    prototxt = WEIGHT_FORMATS / "weight_formats.prototxt"
    x = np.load(FIXTURES / "resnet18_w8" / "input.npy")[:1, :, 12:212, 12:212]  # case.json
    out = tmp_path / "model.safetensors"
    converter.convert(prototxt, weights, out)
    model = converter.load(out)
    ours = converter.blobs(model, x)
    with np.load(WEIGHT_FORMATS / reference) as saved:
        errors = {name: rel_error(ours[name].numpy(), saved[name]) for name in saved.files}
    assert set(errors) == set(info["blobs_saved"])
    assert max(errors.values()) <= info["tolerance_rel"], errors
    from safetensors import safe_open

    with safe_open(str(out), framework="np") as handle:
        source_dtype = handle.metadata()["source_dtype"]
    assert source_dtype == ("float16" if weights == FP16 else "float32")
    np.save(tmp_path / "x.npy", x)
    argv = ["verify", prototxt, weights, "--reference", WEIGHT_FORMATS / reference]
    argv += ["--input", tmp_path / "x.npy", "--tol", info["tolerance_rel"]]
    assert main([str(a) for a in argv]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("PASS: 5 blobs")
    assert main(["inspect", str(prototxt), str(weights)]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-2]  # the totals line
    note = "(stored as float16, read as float32)" if weights == FP16 else "(hdf5)"
    assert summary.endswith(f"weights from {weights} {note}")


def test_ignored_trained_layers_warn_once_through_the_api(tmp_path):
    """MTCNN's caffemodel carries a trained layer its prototxt lacks: Caffe ignores it."""
    case = load_case("resnet18_w8")
    net = converter.read_net(case.prototxt, case.caffemodel)
    stored = [
        (caffe_pb2.LayerParameter(name=x.name).SerializeToString(), x.blobs) for x in net.layers
    ]
    stored.append((caffe_pb2.LayerParameter(name="conv6-3").SerializeToString(), [np.ones(4)]))
    from converter.io.caffemodel import write_layers

    extra = tmp_path / "extra.caffemodel"
    write_layers(extra, "mtcnn", stored)
    with pytest.warns(converter.IgnoredLayersWarning) as caught:
        again = converter.read_net(case.prototxt, extra)
    assert len(caught) == 1 and "ignoring 1 trained layer " in str(caught[0].message)
    assert "'conv6-3'" in str(caught[0].message)
    for a, b in zip(net.layers, again.layers):
        assert all(np.array_equal(x, y) for x, y in zip(a.blobs, b.blobs))


# ----------------------------------------------------------------------------- encodings

GBK_COMMENTS = (
    'name: "gbk"  # \xd6\xd0\xce\xc4 comment in GBK\n'
    "# \xbe\xed\xbb\xfd\xb2\xe3 on a line of its own\n"
    'layer { name: "data" type: "Input" top: "data"  # \xca\xe4\xc8\xeb\n'
    "  input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n"
    'layer { name: "a#b" type: "ReLU" bottom: "data" top: "r" }  # \xbc\xa4\xbb\xee\n'
).encode("latin-1")


@pytest.mark.parametrize("reader", ["fast", "text_format"])
def test_legacy_encoded_comments_are_accepted(tmp_path, monkeypatch, reader):
    """Caffe's parser skips comments whatever bytes they hold; both of our parsing paths
    (the fast tokenizer and protobuf's text_format) read the same net."""
    from converter.io import prototxt as prototxt_module

    if reader == "text_format":
        monkeypatch.setattr(prototxt_module, "parse_text", lambda text, message: None)
    path = tmp_path / "gbk.prototxt"
    path.write_bytes(GBK_COMMENTS)
    net = converter.read_net(path)
    assert [(x.name, x.type) for x in net.layers] == [("data", "Input"), ("a#b", "ReLU")]
    assert net.input_shapes() == {"data": (1, 3, 4, 4)}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (b'name: "gb\xd6\xd0"\n', "1:10: not UTF-8 text (byte 0xd6 in a string)"),
        (
            b'name: "x" # ok \xd6\xd0\nlayer { name: "a\xff" }\n',
            "2:17: not UTF-8 text (byte 0xff in a string)",
        ),
        (b"name: \xd6\xd0\n", "1:7: not UTF-8 text (byte 0xd6)"),
    ],
)
def test_legacy_bytes_outside_comments_name_line_and_column(tmp_path, text, where):
    path = tmp_path / "bad.prototxt"
    path.write_bytes(text)
    with pytest.raises(converter.ConverterError) as err:
        converter.read_net(path)
    assert str(err.value) == (
        f"{path}:{where}; save the file as UTF-8 (only # comments may hold other encodings)"
    )
