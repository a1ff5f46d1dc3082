"""`caffe2torch inspect`: the table people read and the JSON other tools parse."""

from __future__ import annotations

import json

import pytest

from conftest import (
    EDGE_CASES,
    FIXTURES,
    RESNET_CASES,
    load_case,
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
    """Reading and inspecting need NumPy and protobuf only; torch costs seconds to import."""
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
