"""Layers nobody can know (a ``Python`` layer, a fork's type, a fork's field): every command
names all of them at once, with the module a Python layer loads, and points at
``converter.register_layer``; ``inspect`` still shows what it can."""

from __future__ import annotations

import json

import numpy as np
import pytest

import converter
from conftest import load_case
from converter import ConverterError
from converter.cli import main
from converter.executor import run_reference
from converter.net import read_net, write_caffemodel

UNKNOWN = """
name: "mystery"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "proposal" type: "Python" bottom: "conv" top: "rois"
        python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "'feat_stride': 16" } }
layer { name: "roi_pool5" type: "ROIPooling" bottom: "conv" bottom: "rois" top: "pool5" }
layer { name: "roi_pool6" type: "ROIPooling" bottom: "conv" bottom: "rois" top: "pool6" }
layer { name: "relu" type: "ReLU" bottom: "pool6" top: "pool6" }
"""  # noqa: E501

NAMED = [
    "3 layers",
    "'proposal' (Python: module 'rpn.proposal_layer', layer 'ProposalLayer')",
    "'roi_pool5' (ROIPooling)",
    "'roi_pool6' (ROIPooling)",
    "Python, ROIPooling x2",
    "converter.register_layer",
]


@pytest.fixture
def mystery(tmp_path):
    prototxt = tmp_path / "mystery.prototxt"
    prototxt.write_text(UNKNOWN)
    # a caffemodel with the conv's weights only, as such a net's would be
    net = converter.read_net(prototxt)
    net.layers[1].blobs = [np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)]
    caffemodel = tmp_path / "mystery.caffemodel"
    write_caffemodel(net, caffemodel)
    return prototxt, caffemodel


def one_line_error(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", ["convert", "verify"])
def test_convert_and_verify_name_every_unknown_layer_at_once(capsys, mystery, tmp_path, command):
    prototxt, caffemodel = mystery
    extra = ["-o", tmp_path / "out.safetensors"] if command == "convert" else []
    err = one_line_error(capsys, [command, prototxt, caffemodel, *extra])
    for words in NAMED:
        assert words in err, (words, err)
    assert not (tmp_path / "out.safetensors").exists()


def test_python_api_and_executor_name_them_too(mystery):
    prototxt, caffemodel = mystery
    net = read_net(prototxt, caffemodel)
    for run in (
        lambda: converter.build_model(net, generic=True),
        lambda: run_reference(net, np.zeros((1, 3, 8, 8))),
        net.shapes,
    ):
        with pytest.raises(ConverterError) as caught:
            run()
        assert all(words in str(caught.value) for words in NAMED), str(caught.value)


def test_inspect_shows_what_it_can_and_lists_every_unknown_layer(capsys, mystery):
    prototxt, caffemodel = mystery
    assert main(["inspect", str(prototxt), str(caffemodel)]) == 0
    out = capsys.readouterr().out
    conv = next(line for line in out.splitlines() if line.startswith("conv "))
    assert "1x4x6x6" in conv  # shapes before the unknown layers are known
    last = out.strip().splitlines()[-1]
    assert last.startswith("Converts to: nothing yet")
    for words in NAMED:
        assert words in last, (words, last)
    assert main(["inspect", str(prototxt), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["module"]["module"] is None
    assert all(words in summary["module"]["why"] for words in NAMED)
    rows = {row["name"]: row for row in summary["layers"]}
    assert rows["conv"]["top_shapes"] == [[1, 4, 6, 6]] and rows["roi_pool5"]["top_shapes"] == []


FIELDS = """
name: "forked"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernal_size: 3 kernel_size: 3 } }
layer { name: "act" type: "FancyAct" bottom: "conv" top: "conv"
        fancy_param { slope: 0.1 table { a: 1 b: "x" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 torch_pooling: true } }
"""  # noqa: E501


def test_every_unknown_field_is_listed_with_its_layer_and_line(capsys, tmp_path):
    prototxt = tmp_path / "forked.prototxt"
    prototxt.write_text(FIELDS)
    err = one_line_error(capsys, ["inspect", prototxt])
    column = FIELDS.splitlines()[4].index("kernal_size") + 1
    assert err.startswith(f"caffe2torch: error: {prototxt}:5:{column}: 3 fields")  # the first
    for words in [
        "'kernal_size' in ConvolutionParameter (layer 'conv', line 5)",
        "'fancy_param' in LayerParameter (layer 'act', line 7)",
        "'torch_pooling' in PoolingParameter (layer 'pool', line 9)",
        "1 layer of a type this tool does not know: 'act' (FancyAct)",
    ]:
        assert words in err, (words, err)
    assert one_line_error(capsys, ["convert", prototxt, tmp_path / "x.caffemodel"]) == err


def test_a_known_fork_field_among_unknown_ones_is_still_translated(tmp_path):
    """Known fork fields (ceil_mode) are read; only the others are listed; the columns of
    a later unknown field on the same line are the file's own."""
    prototxt = tmp_path / "forked.prototxt"
    prototxt.write_text(
        FIELDS.replace("torch_pooling: true", "ceil_mode: false stride: 2 odd_one: 3")
        .replace("kernal_size: 3 ", "")
        .replace('fancy_param { slope: 0.1 table { a: 1 b: "x" } }', "")
    )
    with pytest.raises(ConverterError) as caught:
        read_net(prototxt)
    message = str(caught.value)
    column = FIELDS.splitlines()[8].index("torch_pooling") + 1 + len("ceil_mode: false stride: 2 ")
    assert message.startswith(f"{prototxt}:9:{column}: 1 field"), message
    assert "'odd_one' in PoolingParameter (layer 'pool', line 9)" in message
    assert "ceil_mode" not in message


def test_fuse_bn_still_refuses_a_net_it_cannot_fold(capsys, tmp_path):
    """The new layer types go to the generic module, whose BatchNorm is never folded."""
    case = load_case("bvlc_layers")
    out = tmp_path / "bvlc.safetensors"
    argv = ["convert", case.prototxt, case.caffemodel, "-o", out]
    err = one_line_error(capsys, [*argv, "--fuse-bn"])
    assert "--fuse-bn" in err and "ResNets only" in err
    assert not out.exists()
    assert main([str(a) for a in argv]) == 0
    assert converter.load(out).output_name == "flat_2e"


PYTHON_AND_FORK_FIELD = """
name: "rpn"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "proposal" type: "Python" bottom: "data" top: "rois"
        python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" } }
layer { name: "roi_pool" type: "ROIPooling" bottom: "data" bottom: "rois" top: "pool"
        roi_pooling_param { pooled_w: 2 pooled_h: 2 spatial_scale: 0.5 } }
"""


@pytest.mark.parametrize("command", ["inspect", "convert", "verify"])
def test_a_python_layer_beside_an_unknown_field_is_one_line(capsys, tmp_path, command):
    """The unknown-fields message describes layers from the prototxt's LayerParameters,
    whose ``param`` is their ParamSpec list: it named the Python layer's module with a
    traceback (AttributeError) instead."""
    prototxt = tmp_path / "rpn.prototxt"
    prototxt.write_text(PYTHON_AND_FORK_FIELD)
    argv = [command, prototxt] + ([] if command == "inspect" else [tmp_path / "rpn.caffemodel"])
    err = one_line_error(capsys, argv + (["-o", tmp_path / "x.pt"] if command == "convert" else []))
    for words in [
        "'roi_pooling_param' in LayerParameter (layer 'roi_pool', line 8)",
        "'proposal' (Python: module 'rpn.proposal_layer', layer 'ProposalLayer')",
        "'roi_pool' (ROIPooling)",
    ]:
        assert words in err, (words, err)
    with pytest.raises(ConverterError, match="roi_pooling_param"):
        read_net(prototxt)


def test_every_kind_of_layer_record_is_described():
    """A net's Layer, a LayerParameter (with ParamSpecs) and a V1 layer alike."""
    from converter import caffe_pb2
    from converter.layers.registry import describe_layer
    from converter.net import Layer

    param = caffe_pb2.LayerParameter(name="p", type="Python")
    param.python_param.module, param.python_param.layer = "rpn.mod", "Cls"
    param.param.add(lr_mult=0)
    layer = Layer("p", "Python", [], ["x"], param)
    python = "'p' (Python: module 'rpn.mod', layer 'Cls')"
    assert describe_layer(param) == describe_layer(layer) == python
    v1 = caffe_pb2.V1LayerParameter(name="c", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    assert describe_layer(v1) == "'c' (CONVOLUTION)"
    assert describe_layer(caffe_pb2.LayerParameter(name="r", type="ReLU")) == "'r' (ReLU)"
