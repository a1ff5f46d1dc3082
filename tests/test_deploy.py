"""Training nets and training leftovers read as the deploy net Caffe runs (issue 12).

Ground truth: ``fixtures/resnet18_w8_trainval`` (a train_val.prototxt, the deploy net real
Caffe derived from it, and Caffe's blobs on it; its caffemodel is resnet18_w8's), and the
data layers' shape rules of Caffe's sources (``converter/deploy.py`` cites them).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import converter
from conftest import FIXTURES, load_case, rel_error
from converter import ConverterError
from converter.cli import input_shapes, main
from converter.deploy import DeployNetWarning
from converter.io.prototxt import parse_prototxt
from converter.net import net_from_param

TRAINVAL = FIXTURES / "resnet18_w8_trainval"
RESNET = load_case("resnet18_w8")
CAFFEMODEL = RESNET.caffemodel  # byte-identical to the trainval case's (its case.json)


def trainval_info() -> dict:
    return json.loads((TRAINVAL / "case.json").read_text())


def read_with_warnings(prototxt, caffemodel=None, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = converter.read_net(prototxt, caffemodel, **kwargs)
    return net, [w for w in caught if issubclass(w.category, DeployNetWarning)]


def net_from(text: str, **kwargs) -> tuple[converter.Net, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = net_from_param(parse_prototxt(text, "t.prototxt"), "t.prototxt", **kwargs)
    return net, [str(w.message) for w in caught if issubclass(w.category, DeployNetWarning)]


# ----------------------------------------------------------------------------- the fixture


def test_train_val_reads_as_the_deploy_net_caffe_derived():
    info = trainval_info()
    net, caught = read_with_warnings(TRAINVAL / "train_val.prototxt", CAFFEMODEL)
    expected = converter.read_net(TRAINVAL / "deploy_expected.prototxt", CAFFEMODEL)
    assert [layer.name for layer in net.layers] == info["expected_deploy"]["kept_layers_in_order"]
    assert [(x.type, x.bottoms, x.tops) for x in net.layers] == [
        (x.type, x.bottoms, x.tops) for x in expected.layers
    ]
    assert net.input_shapes() == {"data": tuple(info["expected_deploy"]["input"]["shape"])}
    assert net.shapes() == expected.shapes()
    assert net.outputs() == ["fc1000"]
    # Caffe's own TEST selection, less the loss and accuracy a deploy net drops
    test_phase = info["test_phase_layers_in_train_val_order"]
    assert [n for n in test_phase if n not in ("loss", "accuracy")] == [x.name for x in net.layers]
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{TRAINVAL / 'train_val.prototxt'}: read as the deploy net Caffe runs in the TEST phase "
        "(1 TRAIN-only layer left out); Data 'data' became an Input of shape (1, 3, 224, 224); "
        "dropped SoftmaxWithLoss 'loss', Accuracy 'accuracy'; dropped the blob 'label'; the "
        "output is 'fc1000'"
    )
    for ours, theirs in zip(net.layers, expected.layers):
        assert [b.shape for b in ours.blobs] == [b.shape for b in theirs.blobs]


@pytest.mark.parametrize("generic", [False, True])
def test_train_val_matches_caffe_through_convert_and_load(tmp_path, generic):
    info = trainval_info()
    out = tmp_path / "trainval.safetensors"
    with pytest.warns(DeployNetWarning):
        converter.convert(TRAINVAL / "train_val.prototxt", CAFFEMODEL, out, generic=generic)
    model = converter.load(out)
    x = RESNET.input[:1]
    ours = converter.blobs(model, x)
    with np.load(TRAINVAL / "blobs.npz") as saved:
        errors = {name: rel_error(ours[name].numpy(), saved[name]) for name in saved.files}
    assert set(errors) == set(info["blobs_saved"])
    assert max(errors.values()) <= info["tolerance_rel"], errors
    assert model.output_name == "fc1000"


def test_train_val_verify_against_caffes_saved_blobs(capsys, tmp_path):
    x = tmp_path / "input.npy"
    np.save(x, RESNET.input[:1])
    report = tmp_path / "report.json"
    code = main(
        [
            "verify", str(TRAINVAL / "train_val.prototxt"), str(CAFFEMODEL),
            "--reference", str(TRAINVAL / "blobs.npz"), "--input", str(x),
            "--tol", str(trainval_info()["tolerance_rel"]), "--json", str(report),
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, out
    assert err.startswith("caffe2torch: warning: ") and len(err.splitlines()) == 1
    result = json.loads(report.read_text())
    assert result["passed"] and result["compared"] == len(trainval_info()["blobs_saved"])


def test_train_val_through_opencv_reads_the_derived_net(capsys, tmp_path):
    """OpenCV cannot read the train_val file itself ("Duplicate blobs"): verify gives it
    the deploy net as read."""
    pytest.importorskip("cv2")
    x = tmp_path / "input.npy"
    np.save(x, RESNET.input[:1])
    argv = ["verify", TRAINVAL / "train_val.prototxt", CAFFEMODEL, "--reference", "opencv"]
    code = main([str(a) for a in [*argv, "--input", x]])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("PASS") and "opencv" in out


# ----------------------------------------------------------------------------- data layers

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }'  # noqa: E501
CONV = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 } }
"""
TAIL = CONV + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" }'


DATA_LAYERS = [
    # (the layer's type and parameters, Caffe's top shape, batch_size missing without default)
    # Data: channels from one mean_value per channel, size from crop_size
    ('type: "Data" transform_param { crop_size: 8 mean_value: 1 mean_value: 2 mean_value: 3 } '
     "data_param { batch_size: 5 }", (5, 3, 8, 8), False),
    ('type: "Data" transform_param { crop_size: 6 force_gray: true }', (1, 1, 6, 6), True),
    # a V1 net's crop_size stays in data_param (Caffe's upgrade moves it)
    ('type: "Data" transform_param { force_color: true } '
     "data_param { batch_size: 3 crop_size: 7 }", (3, 3, 7, 7), False),
    ('type: "ImageData" image_data_param { batch_size: 4 new_height: 9 new_width: 11 }',
     (4, 3, 9, 11), False),
    ('type: "ImageData" transform_param { crop_size: 5 } image_data_param { is_color: false }',
     (1, 1, 5, 5), False),  # ImageData's batch_size defaults to 1
    ('type: "MemoryData" memory_data_param { batch_size: 6 channels: 2 height: 7 width: 9 }',
     (6, 2, 7, 9), False),
    ('type: "WindowData" transform_param { crop_size: 10 } window_data_param { batch_size: 8 }',
     (8, 3, 10, 10), False),
    ('type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } '
     "shape { dim: 2 } }", (2, 3, 5, 5), False),
    ('type: "DummyData" dummy_data_param { num: 3 channels: 4 height: 6 width: 7 }',
     (3, 4, 6, 7), False),
]  # fmt: skip


@pytest.mark.parametrize(("layer", "shape", "no_batch"), DATA_LAYERS)
def test_data_layer_shapes_follow_caffe(layer, shape, no_batch):
    text = f'layer {{ name: "data" {layer} top: "data" top: "label" }}' + TAIL
    net, caught = net_from(text)
    assert net.layers[0].type == "Input" and net.layers[0].tops == ["data"]
    assert net.input_shapes() == {"data": shape}
    assert [layer.name for layer in net.layers] == ["data", "conv"]
    assert len(caught) == 1 and f"became an Input of shape {shape}" in caught[0]
    assert ("batch 1: the layer gives no batch_size" in caught[0]) == no_batch


@pytest.mark.parametrize(
    ("layer", "known"),
    [
        ('type: "Data" transform_param { crop_size: 8 } data_param { batch_size: 5 }', "5x?x8x8"),
        ('type: "Data" transform_param { mean_value: 1 mean_value: 2 mean_value: 3 }', "1x3x?x?"),
        ('type: "ImageData" image_data_param { batch_size: 2 }', "2x3x?x?"),
        ('type: "HDF5Data" hdf5_data_param { source: "list.txt" batch_size: 4 }', "?"),
        ('type: "Python" python_param { module: "m" layer: "L" }', "?"),
    ],
)
def test_data_layer_the_file_cannot_size_needs_input_shape(capsys, tmp_path, layer, known):
    text = f'name: "t"\nlayer {{ name: "data" {layer} top: "data" top: "label" }}' + TAIL
    with pytest.raises(ConverterError) as err:
        net_from(text)
    assert str(err.value) == (
        f"t.prototxt: data layer 'data' gives its top 'data' no complete shape (known: {known}; "
        "Caffe takes the rest from the data it reads): pass --input-shape data:N,C,H,W "
        "(Python: input_shapes={'data': (N, C, H, W)})"
    )
    net, _ = net_from(text, input_shapes={"data": (2, 3, 8, 8)})
    assert net.input_shapes() == {"data": (2, 3, 8, 8)}
    proto = tmp_path / "train.prototxt"
    proto.write_text(text)
    # inspect shows the table up to the data layer and says why it stops (was: exit 2)
    assert main(["inspect", str(proto)]) == 0
    out, _ = capsys.readouterr()
    table, totals, module = out.split("\n\n")[0], *out.strip().splitlines()[-2:]
    assert "data -> conv" in table and "t: 2 layers, parameters: unknown" in totals
    assert f"no complete shape (known: {known};" in totals and "--input-shape data:" in totals
    assert module == "Converts to: nothing yet (the input shape is needed first (--input-shape))"
    assert main(["inspect", str(proto), "--input-shape", "2,3,8,8"]) == 0
    out, err = capsys.readouterr()
    assert "data -> conv" in out and "2x4x6x6" in out


MEAN_DATA = 'type: "Data" transform_param { mean_value: 1 mean_value: 2 mean_value: 3 }'
HDF5_DATA = 'type: "HDF5Data" hdf5_data_param { source: "list.txt" batch_size: 4 }'


@pytest.mark.parametrize(
    ("layer", "array", "shape"),
    [
        (MEAN_DATA + " data_param { batch_size: 5 }", (2, 3, 8, 8), (2, 3, 8, 8)),
        (MEAN_DATA, (3, 8, 8), (1, 3, 8, 8)),  # an array without its batch axis
        (HDF5_DATA, (2, 3, 8, 8), (2, 3, 8, 8)),
    ],
)
def test_the_input_array_sizes_a_data_layer_the_file_cannot(layer, array, shape):
    """verify --input x.npy on a train_val without crop_size asked for --input-shape too."""
    text = f'name: "t"\nlayer {{ name: "data" {layer} top: "data" top: "label" }}' + TAIL
    net, caught = net_from(text, fill_shape=array)
    assert net.input_shapes() == {"data": shape}
    assert f"became an Input of shape {shape} (its sizes from the input array)" in caught[0]
    # --input-shape wins; a shape the file says is kept
    net, _ = net_from(text, input_shapes=(1, 3, 6, 6), fill_shape=array)
    assert net.input_shapes() == {"data": (1, 3, 6, 6)}
    net, _ = net_from(text.replace("mean_value: 1", "crop_size: 6 mean_value: 1"), fill_shape=array)
    assert layer == HDF5_DATA or net.input_shapes()["data"][1:] == (3, 6, 6)


def test_an_input_array_that_does_not_fit_the_data_layer_is_named():
    text = f'name: "t"\nlayer {{ name: "data" {MEAN_DATA} top: "data" top: "label" }}' + TAIL
    with pytest.raises(ConverterError) as err:
        net_from(text, fill_shape=(2, 1, 8, 8))
    assert "(known: 1x3x?x?; Caffe takes" in str(err.value)
    assert "the input array's shape 2x1x8x8 does not fit it: pass --input-shape" in str(err.value)


def test_train_val_without_crop_size_verifies_on_the_input_array(capsys, tmp_path):
    """The array Caffe ran on gives the sizes: real Caffe's blobs, no --input-shape."""
    text = (TRAINVAL / "train_val.prototxt").read_text().replace("crop_size: 224", "")
    proto = tmp_path / "train_val.prototxt"
    proto.write_text(text)
    x = tmp_path / "input.npy"
    np.save(x, RESNET.input[:1])
    ref = ["--reference", str(TRAINVAL / "blobs.npz"), "--input", str(x)]
    assert main(["verify", str(proto), str(CAFFEMODEL), *ref]) == 0
    out, err = capsys.readouterr()
    assert "PASS: 7 blobs" in out and "(its sizes from the input array)" in err
    out_file = tmp_path / "tv.safetensors"
    assert main(["convert", str(proto), str(CAFFEMODEL), "-o", str(out_file), *ref, "-q"]) == 0
    assert "PASS" in capsys.readouterr().out and out_file.is_file()


def test_python_api_takes_input_shapes(tmp_path):
    text = (TRAINVAL / "train_val.prototxt").read_text().replace("crop_size: 224", "")
    proto = tmp_path / "train_val.prototxt"
    proto.write_text(text)
    with pytest.raises(ConverterError, match="--input-shape data:N,C,H,W"):
        converter.read_net(proto, CAFFEMODEL)
    with pytest.warns(DeployNetWarning):
        model = converter.load(proto, CAFFEMODEL, input_shapes=(1, 3, 224, 224))
    with np.load(TRAINVAL / "blobs.npz") as saved:
        fc = converter.blobs(model, RESNET.input[:1])["fc1000"].numpy()
        assert rel_error(fc, saved["fc1000"]) <= trainval_info()["tolerance_rel"]


# ----------------------------------------------------------------------------- leftovers

DEPLOY_WITH_LEFTOVERS = """
name: "leftovers"
input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
input: "label" input_shape { dim: 1 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 3 } }
layer { name: "silence_label" type: "Silence" bottom: "label" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "l2" type: "EuclideanLoss" bottom: "fc" bottom: "target_nobody_makes" top: "l2" }
"""


def test_deploy_leftovers_are_dropped_with_one_line():
    net, caught = net_from(DEPLOY_WITH_LEFTOVERS)
    assert [(x.name, x.type, x.tops) for x in net.layers] == [
        ("input", "Input", ["data"]),
        ("conv", "Convolution", ["conv"]),
        ("fc", "InnerProduct", ["fc"]),
    ]
    assert net.input_shapes() == {"data": (1, 3, 8, 8)}
    assert net.outputs() == ["fc"]
    assert caught == [
        "t.prototxt: read as the deploy net Caffe runs in the TEST phase; dropped Silence "
        "'silence_label', SoftmaxWithLoss 'loss', Accuracy 'accuracy', EuclideanLoss 'l2'; "
        "dropped the blob 'label'; the output is 'fc'"
    ]


def test_silence_of_a_kept_blob_stays():
    """A Silence whose bottoms are still made stays: it decides which blobs are outputs."""
    text = DEPLOY_WITH_LEFTOVERS.replace('bottom: "label" }', 'bottom: "conv" }', 1)
    net, caught = net_from(text)
    assert [x.name for x in net.layers] == ["input", "conv", "fc", "silence_label"]
    assert "Silence" not in caught[0]
    assert net.outputs() == ["fc"]


def test_a_deploy_net_is_left_as_it_is():
    net, caught = net_from(INPUT + CONV)
    assert caught == [] and net.changes == []
    assert [x.name for x in net.layers] == ["data", "conv"]


def test_an_input_nobody_reads_stays():
    text = INPUT.replace('top: "data"', 'top: "data" top: "extra"').replace(
        "dim: 8 } }", "dim: 8 } shape { dim: 2 } }"
    )
    net, caught = net_from(text + CONV)
    assert caught == [] and net.input_shapes() == {"data": (1, 3, 8, 8), "extra": (2,)}


# ----------------------------------------------------------------------------- input shapes


def test_input_shape_replaces_a_declared_shape(capsys):
    net = converter.read_net(RESNET.prototxt, input_shapes={"data": (1, 3, 200, 200)})
    assert net.input_shapes() == {"data": (1, 3, 200, 200)}
    shared = json.loads((FIXTURES / "weight_formats" / "case.json").read_text())
    table = [row for row in shared["layers"] if not row["name"].endswith("_split")]
    shapes = {layer.name: s.top_shapes for layer, s in zip(net.layers, net.shapes())}
    for row in table:
        if row["name"] in shapes:
            assert [list(s) for s in shapes[row["name"]]] == row["top_shapes"], row["name"]
    assert main(["inspect", str(RESNET.prototxt), "--input-shape", "data:1,3,200,200"]) == 0
    assert "1x64x7x7" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1,3,224,224"], (1, 3, 224, 224)),
        (["data:1,3,224,224"], {"data": (1, 3, 224, 224)}),
        (["data:1,3,224,224,im_info:1,3"], {"data": (1, 3, 224, 224), "im_info": (1, 3)}),
        (["data:2,3,8,8", "label:2"], {"data": (2, 3, 8, 8), "label": (2,)}),
    ],
)
def test_input_shape_option_parses(values, expected):
    assert input_shapes(values) == expected


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (["1,3,x,4"], "expected N,C,H,W or NAME:N,C,H,W"),
        (["data:1,0,4,4"], "positive integers"),
        ([":1,3"], "NAME:N,C,H,W"),
        (["1,3", "data:1,3"], "one unnamed shape"),
        (["nope:1,3,8,8"], "'nope', which is not an input of the net (inputs: data)"),
        # accepted, it failed at pool1 ("pooling needs a 4-D input")
        (["1,3,224"], "'data', 1x3x224, has 3 axes; the net declares 4 axes (2x3x224x224)"),
    ],
)
def test_bad_input_shapes_are_one_line_errors(capsys, values, words):
    argv = ["inspect", str(RESNET.prototxt)]
    for value in values:
        argv += ["--input-shape", value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and words in err, err


def test_a_shape_keeps_the_number_of_axes_the_file_gives():
    text = f'name: "t"\nlayer {{ name: "data" {MEAN_DATA} top: "data" top: "label" }}' + TAIL
    with pytest.raises(ConverterError, match=r"has 3 axes; the net declares 4 axes \(1x3x\?x\?\)"):
        net_from(text, input_shapes=(1, 3, 8))
    hdf5 = text.replace(MEAN_DATA, HDF5_DATA)  # its data says the number of axes too
    assert net_from(hdf5, input_shapes=(1, 3, 8))[0].input_shapes() == {"data": (1, 3, 8)}
    flat = INPUT.replace("dim: 1 dim: 3 dim: 8 dim: 8", "dim: 1 dim: 6")
    ip = 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
    ip += "inner_product_param { num_output: 2 } }"
    net, _ = net_from(flat + ip, input_shapes=(4, 6))
    assert net.input_shapes() == {"data": (4, 6)}
    with pytest.raises(ConverterError, match=r"has 4 axes; the net declares 2 axes \(1x6\)"):
        net_from(flat + ip, input_shapes=(1, 6, 1, 1))


def test_a_bare_shape_needs_a_one_input_net():
    text = INPUT.replace('top: "data"', 'top: "data" top: "b"') + CONV
    with pytest.raises(ConverterError, match=r"2 inputs \(data, b\): name the one"):
        net_from(text, input_shapes=(1, 3, 8, 8))


# ----------------------------------------------------------------------------- repeated names

REPEATED = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "crop" type: "ReLU" bottom: "a" top: "b" }
layer { name: "crop" type: "TanH" bottom: "b" top: "c" }
layer { name: "crop" type: "ReLU" bottom: "c" top: "d" }
"""  # noqa: E501


def test_repeated_layer_names_convert_with_unique_module_names(tmp_path):
    net = net_from(REPEATED)[0]
    net.layer("conv").blobs = [np.full((2, 2, 1, 1), 0.5, np.float32), np.zeros(2, np.float32)]
    proto, model = tmp_path / "hed.prototxt", tmp_path / "hed.caffemodel"
    proto.write_text(REPEATED)
    converter.write_caffemodel(net, model)  # stores 'crop' three times, without blobs
    assert converter.read_weights(model)["crop"] == []
    loaded = converter.load(proto, model)
    names = [name for name, _ in loaded.named_children()]
    assert names == ["data", "conv", "crop", "crop_2", "crop_3"]
    x = np.linspace(-3, 3, 72, dtype=np.float32).reshape(1, 2, 6, 6)
    ours = converter.blobs(loaded, x)
    a = np.repeat(0.5 * x.sum(axis=1, keepdims=True), 2, axis=1)  # the 1x1 conv of 0.5s
    np.testing.assert_allclose(ours["d"].numpy(), np.tanh(np.maximum(a, 0)), rtol=1e-6)


SAME_NAME_WEIGHTS = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "s" type: "ReLU" bottom: "data" top: "r" }
layer { name: "s" type: "Scale" bottom: "r" top: "y" }
"""  # noqa: E501


def test_repeated_name_weights_go_where_caffe_puts_them(tmp_path):
    """Binary caffemodel: the first layer of the name receives the blobs (here the ReLU,
    which has none: Caffe's CHECK fails too); HDF5: the last (the Scale), as Caffe does."""
    h5py = pytest.importorskip("h5py")
    proto = tmp_path / "same.prototxt"
    proto.write_text(SAME_NAME_WEIGHTS)
    gamma = np.array([2.0, -1.0], np.float32)
    binary = tmp_path / "same.caffemodel"
    from converter.io.caffemodel import write_layers

    write_layers(binary, "same", [(b"\n\x01s", [gamma])])
    with pytest.raises(ConverterError, match=r"layer 's' \(ReLU\): the prototxt implies 0 blob"):
        converter.read_net(proto, binary)
    weights = tmp_path / "same.caffemodel.h5"
    with h5py.File(weights, "w") as handle:
        handle.create_group("data/s").create_dataset("0", data=gamma)
    net = converter.read_net(proto, weights)
    assert net.layers[1].blobs == [] and np.array_equal(net.layers[2].blobs[0], gamma)
    y = converter.blobs(converter.load(proto, weights), np.ones((1, 2, 3, 3), np.float32))["y"]
    assert y[0, :, 0, 0].tolist() == [2.0, -1.0]


def test_same_name_layer_that_needs_weights_but_gets_none(tmp_path):
    text = SAME_NAME_WEIGHTS.replace('type: "ReLU"', 'type: "Scale"')
    proto, binary = tmp_path / "same.prototxt", tmp_path / "same.caffemodel"
    proto.write_text(text)
    from converter.io.caffemodel import write_layers

    write_layers(binary, "same", [(b"\n\x01s", [np.ones(2, np.float32)])])
    with pytest.raises(ConverterError, match="another layer of that name receives them"):
        converter.read_net(proto, binary)


def test_an_input_only_a_silence_reads_stays():
    """Without a loss reading it, an Input silenced is not a label: nothing changes."""
    net, caught = net_from(INPUT + 'layer { name: "s" type: "Silence" bottom: "data" }')
    assert caught == [] and [x.type for x in net.layers] == ["Input", "Silence"]


# ----------------------------------------------------------------------------- input convention


def _code_convention(capsys, prototxt, folder, *extra) -> tuple[dict, str]:
    argv = ["convert", prototxt, CAFFEMODEL, "-o", folder, "--format", "code", "-q", *extra]
    assert main([str(a) for a in argv]) == 0  # the CLI prints the DeployNetWarning
    capsys.readouterr()
    config = json.loads((folder / "config.json").read_text())
    return config["input_convention"], (folder / "README.md").read_text()


def test_train_val_transform_is_the_recorded_input_convention(capsys, tmp_path):
    """The Data layer's mean_value 104/117/123 was dropped: config.json had "mean": null and
    the card "not given at conversion: --mean". Now every format records it."""
    convention, card = _code_convention(capsys, TRAINVAL / "train_val.prototxt", tmp_path / "c")
    assert convention["mean"] == [104.0, 117.0, 123.0] and convention["scale"] == 1.0
    assert convention["given_by"] == "the prototxt's transform_param"
    assert "minus the mean [104.0, 117.0, 123.0]" in card and "transform_param" in card
    assert "not given at conversion" not in card
    with pytest.warns(DeployNetWarning):
        path = converter.convert(TRAINVAL / "train_val.prototxt", CAFFEMODEL, tmp_path / "w.pt")
    metadata = converter.export.read_converted(path)[1]
    assert json.loads(metadata["input_mean"]) == [104.0, 117.0, 123.0]
    # --mean, when given, is what is recorded
    convention, _ = _code_convention(
        capsys, TRAINVAL / "train_val.prototxt", tmp_path / "d", "--mean", "1,2,3"
    )
    assert convention["mean"] == [1.0, 2.0, 3.0] and convention["given_by"] == "--mean"


def test_mean_file_and_scale_of_a_transform_param(capsys, tmp_path):
    """A mean_file beside the prototxt is read (its per-channel means); scale gives the std
    (1 / scale) in config.json, the card and the detectron2 settings; a mean_file that is
    not there is named, with what to do."""
    mean_file = FIXTURES / "kaiming" / "ResNet_mean.binaryproto"
    (tmp_path / "ResNet_mean.binaryproto").write_bytes(mean_file.read_bytes())
    text = (TRAINVAL / "train_val.prototxt").read_text()
    head, tail = text.split("transform_param {", 1)
    found = tmp_path / "found.prototxt"
    body = "scale: 0.5\n mean_file: 'data/ResNet_mean.binaryproto'\n"
    # only the TEST data layer's transform matters: give it to both
    found.write_text(
        (head + "transform_param {" + tail).replace(
            "mean_value: 104\n\t\tmean_value: 117\n\t\tmean_value: 123", body
        )
    )
    shape = ["--input-shape", "1,3,224,224"]  # the channels were said by mean_value only
    convention, card = _code_convention(capsys, found, tmp_path / "c", *shape)
    means = converter.preprocess.channel_means(str(mean_file), 3)
    assert convention["mean"] == [round(m, 4) for m in means]
    assert convention["mean_source"] == "ResNet_mean.binaryproto"
    assert convention["scale"] == 0.5 and convention["std"] == [2.0, 2.0, 2.0]
    assert "multiplied by 0.5 (std 2)" in card
    argv = ["convert", found, CAFFEMODEL, "-o", tmp_path / "r.pkl", "-q", *shape]
    assert main([str(a) for a in argv]) == 0
    assert "MODEL.PIXEL_STD: [2.0, 2.0, 2.0]" in capsys.readouterr().out
    (tmp_path / "ResNet_mean.binaryproto").unlink()
    convention, card = _code_convention(capsys, found, tmp_path / "e", *shape)
    assert convention["mean"] is None
    assert "data/ResNet_mean.binaryproto" in convention["mean_source"]
    assert "not found: give --mean" in card
