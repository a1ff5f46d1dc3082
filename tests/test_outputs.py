"""Nets with several outputs: every form returns every output, as Caffe's ``net.forward()``.

Caffe's outputs are the blobs no layer reads, listed by name (``Net::Init`` in net.cpp
keeps them in a ``std::set<string>``). A net with one output returns that tensor; a net
with several returns a tuple in that order, named by ``output_names``, in
``converter.load``'s module, the ``--format code`` module, pt2 and ONNX (whose outputs
carry the blob names); ``verify --converted`` compares each of them.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import converter
from conftest import load_case, rel_error, write_net
from converter.cli import main
from converter.executor import run_reference
from converter.program import load_program

# The newcomer's two-head net: class scores and box regression off one conv, the box head
# written last (the only output every form used to return).
TWO_HEADS = """
name: "two"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "cls" type: "InnerProduct" bottom: "conv" top: "cls_score"
        inner_product_param { num_output: 5 } }
layer { name: "cls_prob" type: "Softmax" bottom: "cls_score" top: "cls_prob" }
layer { name: "bbox_pred" type: "InnerProduct" bottom: "conv" top: "bbox_pred"
        inner_product_param { num_output: 20 } }
"""
OUTPUTS = ["bbox_pred", "cls_prob"]  # by name, as Caffe lists them


def by_name(names, returned) -> dict[str, np.ndarray]:
    """A model's return value by output blob: the tensor itself for one output, a tuple of
    them (in ``names`` order) for several."""
    if len(names) == 1:
        assert isinstance(returned, (torch.Tensor, np.ndarray)), type(returned)
        returned = (returned,)
    assert isinstance(returned, (tuple, list)) and len(returned) == len(names)
    return {
        name: value.detach().numpy() if isinstance(value, torch.Tensor) else value
        for name, value in zip(names, returned)
    }


def import_model(folder, name: str):
    spec = importlib.util.spec_from_file_location(name, folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load()


def every_form(prototxt, caffemodel, folder, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The pair converted to each format, each run on ``x``: per form, its outputs by the
    names the form itself gives them (``output_names``, ONNX output names)."""
    tensor = torch.from_numpy(x)
    forms = {}
    with torch.no_grad():
        pair = converter.load(prototxt, caffemodel)
        forms["load(pair)"] = by_name(pair.output_names, pair(tensor))
        written = converter.convert(prototxt, caffemodel, folder / "net.safetensors")
        loaded = converter.load(written)
        forms["load(safetensors)"] = by_name(loaded.output_names, loaded(tensor))
        code = import_model(
            converter.convert(prototxt, caffemodel, folder / "code", format="code"),
            f"outputs_{folder.name}",
        )
        forms["code"] = by_name(code.output_names, code(tensor))
        pt2 = load_program(converter.convert(prototxt, caffemodel, folder / "net.pt2"))
        forms["pt2"] = by_name(pt2.output_names, pt2(tensor))
    path = converter.convert(prototxt, caffemodel, folder / "net.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    assert names == [output.name for output in onnx.load(str(path)).graph.output]
    returned = session.run(None, {"data": x})  # a list, whatever the number of outputs
    forms["onnx"] = by_name(names, returned[0] if len(returned) == 1 else returned)
    return forms


def test_caffe_lists_outputs_by_name():
    net = converter.read_net(load_case("pool_ceil").prototxt)
    produced = net.outputs_by_production()
    assert net.outputs() == sorted(produced) != produced and len(produced) == 15
    assert produced[-1] == "ave_rect" and net.outputs()[-1] == "max_rect"


def test_two_head_net_returns_both_heads_in_every_form(tmp_path):
    """Each form returns both heads, named and ordered as Caffe lists them, each equal to
    the float64 NumPy executor's (Caffe's rules; no real Caffe ran this net)."""
    prototxt, caffemodel = write_net(tmp_path, "two", TWO_HEADS)
    x = np.random.default_rng(1).normal(0, 50, (1, 3, 8, 8)).astype(np.float32)
    expected = run_reference(converter.read_net(prototxt, caffemodel), x.astype(np.float64))
    for form, outputs in every_form(prototxt, caffemodel, tmp_path, x).items():
        assert list(outputs) == OUTPUTS, form
        for name, value in outputs.items():
            assert rel_error(value, expected[name]) <= 1e-5, (form, name)


def test_a_net_with_one_output_still_returns_the_tensor(tmp_path):
    text = TWO_HEADS[: TWO_HEADS.index('layer { name: "bbox_pred"')]
    text = text.replace('bottom: "cls_score" top: "cls_prob"', 'bottom: "cls_score" top: "prob"')
    prototxt, caffemodel = write_net(tmp_path, "one", text)
    x = np.ones((1, 3, 8, 8), np.float32)
    for form, outputs in every_form(prototxt, caffemodel, tmp_path, x).items():
        assert list(outputs) == ["prob"], form  # by_name checked it is a bare tensor


@pytest.mark.parametrize("name", ["pool_ceil", "bvlc_layers", "fork_layers"])
def test_converter_load_returns_every_output_caffe_saved(name, tmp_path):
    """From the pair and from the converted file: every output blob, in Caffe's order,
    within the case's tolerance of real Caffe's saved blob (pt2, ONNX and code folders of
    these cases: test_standalone.py)."""
    case = load_case(name)
    net = converter.read_net(case.prototxt, case.caffemodel)
    written = converter.convert(case.prototxt, case.caffemodel, tmp_path / "net.safetensors")
    for model in (converter.load(case.prototxt, case.caffemodel), converter.load(written)):
        assert model.output_names == net.outputs() and len(net.outputs()) >= 15
        with torch.no_grad():
            outputs = by_name(model.output_names, model(torch.from_numpy(case.input)))
        for blob, value in outputs.items():
            assert rel_error(value, case.blobs[blob]) <= case.tolerance, blob


def test_convert_names_the_outputs_in_one_line(tmp_path, capsys):
    prototxt, caffemodel = write_net(tmp_path, "two", TWO_HEADS)
    assert main(["convert", str(prototxt), str(caffemodel), "-o", str(tmp_path / "t.onnx")]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].endswith(": bbox_pred, cls_prob")
    assert "tuple" in notes[0] and "output_names" in notes[0]
    one = load_case("resnet18_w8")
    argv = ["convert", str(one.prototxt), str(one.caffemodel), "-o", str(tmp_path / "r.onnx")]
    assert main(argv) == 0
    assert "note:" not in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "code"])
def test_verify_converted_compares_every_output(fmt, tmp_path, capsys):
    """A conversion whose class head is wrong (the output written first) fails verify,
    at that blob; the box head, written last, still agrees."""
    from converter.conversion import plan_conversion
    from converter.targets import write_target

    prototxt, caffemodel = write_net(tmp_path, "two", TWO_HEADS)
    net = converter.read_net(prototxt, caffemodel)
    cls = next(layer for layer in net.layers if layer.name == "cls")
    cls.blobs[1] = cls.blobs[1] + np.float32([0, 0.5, 0, 0, 0])
    wrong = write_target(fmt, net, plan_conversion(net, False), tmp_path / f"wrong.{fmt}")
    x = tmp_path / "x.npy"  # small values: the softmax is not one-hot
    np.save(x, np.random.default_rng(2).normal(0, 0.3, (1, 3, 8, 8)).astype(np.float32))
    argv = ["verify", str(prototxt), str(caffemodel), "--converted", str(wrong), "--input", str(x)]
    assert main([*argv, "--reference", "numpy", "--json", str(tmp_path / "r.json")]) == 1
    rows = {row["name"]: row for row in json.loads((tmp_path / "r.json").read_text())["blobs"]}
    assert set(OUTPUTS) <= set(rows)
    assert not rows["cls_prob"]["passed"] and rows["bbox_pred"]["passed"]
    capsys.readouterr()
