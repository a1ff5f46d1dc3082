"""`caffe2torch inspect`: the table people read and the JSON other tools parse."""

from __future__ import annotations

import json

import numpy as np
import pytest

import converter
from conftest import (
    EDGE_CASES,
    FIXTURES,
    RESNET_CASES,
    load_case,
    random_blobs,
    shared_case,
    shared_cases,
)
from converter.cli import main


def inspect_json(capsys, *args) -> list[dict]:
    assert main(["inspect", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["layers"]


def assert_matches_caffe_table(rows: list[dict], info: dict):
    # Caffe inserts Split layers for blobs read by several layers; they are not in the prototxt.
    table = [r for r in info["layers"] if not (r["type"] == "Split" and "_split_" in r["name"])]
    assert [r["name"] for r in rows] == [r["name"] for r in table]
    for ours, caffe in zip(rows, table):
        assert ours["type"] == caffe["type"]
        assert ours["tops"] == caffe["tops"]
        assert ours["top_shapes"] == caffe["top_shapes"], ours["name"]
        assert ours["param_shapes"] == caffe["param_shapes"], ours["name"]


@pytest.mark.parametrize(
    "name", [n for n in RESNET_CASES + EDGE_CASES if n != "resnet50_w8_calibrated"]
)
def test_json_equals_caffe_layer_table(capsys, name):
    case = load_case(name)
    assert_matches_caffe_table(inspect_json(capsys, case.prototxt, case.caffemodel), case.info)
    # without weights, parameter shapes come from the prototxt alone and agree too
    assert_matches_caffe_table(inspect_json(capsys, case.prototxt), case.info)


@pytest.mark.slow
@pytest.mark.parametrize("name", shared_cases())
def test_json_equals_caffe_layer_table_for_every_shared_case(capsys, name):
    case = shared_case(name)
    if "layers" not in case.info:
        pytest.skip(f"{name} has no Caffe layer table")
    assert_matches_caffe_table(inspect_json(capsys, case.prototxt, case.caffemodel), case.info)


def test_table_lists_layers_shapes_and_totals(capsys):
    assert main(["inspect", str(FIXTURES / "kaiming" / "ResNet-50-deploy.prototxt")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "type", "bottoms", "->", "tops", "output", "shape",
                                "parameters", "count"]  # fmt: skip
    conv1 = next(line for line in lines if line.startswith("conv1 "))
    assert "data -> conv1" in conv1 and "1x64x112x112" in conv1 and "64x3x7x7 64" in conv1
    assert "9,472" in conv1  # 64*3*7*7 weights + 64 biases
    # Kaiming's ResNet-50: 25,557,032 learned parameters + BN statistics (2 per channel + 1)
    assert lines[-2].startswith("ResNet-50: 229 layers, 25,610,269 parameters")


def test_unknown_layer_type_still_lists_what_it_can(tmp_path, capsys):
    path = tmp_path / "odd.prototxt"
    path.write_text(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }\n'
        'layer { name: "m" type: "MysteryOp" bottom: "x" top: "y" }\n'
    )
    rows = inspect_json(capsys, path)
    assert rows[0]["top_shapes"] == [[1, 3]]
    assert rows[1]["type"] == "MysteryOp" and rows[1]["param_shapes"] is None


def test_inspect_does_not_import_torch():
    """Reading and inspecting a ResNet need NumPy and protobuf only; torch costs seconds to
    import (a generic net's modules are built, on the meta device, to check what convert
    checks)."""
    import subprocess
    import sys

    code = (
        "import sys; from converter.cli import main; "
        f"main(['inspect', {str(FIXTURES / 'kaiming' / 'ResNet-50-deploy.prototxt')!r}]); "
        "sys.stderr.write(str('torch' in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ResNet-50: 229 layers" in done.stdout
    assert done.stderr.strip() == "False"


HEAD = """
name: "n"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
"""
CONV = (
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
    "convolution_param { num_output: 4 kernel_size: 3 } }\n"
)
# net -> words of the reason convert refuses it (and inspect must give)
REFUSED = {
    "top written twice": (
        CONV + 'layer { name: "again" type: "ReLU" bottom: "conv" top: "data" }',
        "top blob 'data' is produced by multiple sources",
    ),
    "conv num_output 0": (CONV.replace("num_output: 4", "num_output: 0"), "num_output must be"),
    "deconv num_output 0": (
        CONV.replace("num_output: 4", "num_output: 0").replace('"Convolution"', '"Deconvolution"'),
        "num_output must be",
    ),
    "inner product num_output 0": (
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        "inner_product_param { num_output: 0 } }",
        "weight filler",
    ),
    "conv bottoms of two shapes": (
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "half" '
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
        'layer { name: "conv" type: "Convolution" bottom: "data" bottom: "half" top: "a" '
        'top: "b" convolution_param { num_output: 4 kernel_size: 1 } }',
        "same shape",
    ),
    "in place where the type cannot be": (
        CONV + 'layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "conv" '
        "inner_product_param { num_output: 2 } }",
        "in place",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_inspect_says_nothing_converts_when_convert_refuses(capsys, tmp_path, case):
    """inspect said "Converts to: the generic module" (0 parameters for num_output 0) where
    convert refused: both now run plan_conversion, the one place a conversion's checks live."""
    body, words = REFUSED[case]
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(HEAD + body + "\n")
    assert main(["inspect", str(prototxt)]) == 0
    module_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert module_line.startswith("Converts to: nothing (the net is refused: "), module_line
    assert words in module_line, module_line
    net = converter.read_net(prototxt)
    try:  # weights for it, where its shapes can be inferred
        random_blobs(net, np.random.default_rng(0))
    except converter.ConverterError:
        pass
    caffemodel = tmp_path / "net.caffemodel"
    converter.write_caffemodel(net, caffemodel)
    out = tmp_path / "net.safetensors"
    assert main(["convert", str(prototxt), str(caffemodel), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and not out.exists(), err
