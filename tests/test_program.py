"""pt2 and ONNX outputs: dynamic batch, the net's names, ``verify --converted`` on both."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import converter
from conftest import load_case, rel_error
from converter.cli import main
from converter.errors import ConverterError
from converter.export import output_format
from converter.program import ONNX_OPSET, load_program

CONV = load_case("conv_variants")
R50 = load_case("resnet50_w8_calibrated")


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("programs")
    return {
        fmt: converter.convert(CONV.prototxt, CONV.caffemodel, folder / f"conv.{fmt}")
        for fmt in ("pt2", "onnx")
    }


def test_extensions_choose_the_format():
    assert [output_format(f"x{ext}", None) for ext in (".pt2", ".onnx", ".pkl", ".pth")] == [
        "pt2",
        "onnx",
        "detectron2",
        "pt",
    ]
    assert output_format("folder", "code") == "code"
    with pytest.raises(ConverterError, match="unknown format"):
        output_format("x", "tflite")


@pytest.mark.parametrize("batch", [1, 3])
def test_batch_is_dynamic(programs, batch):
    """Every output (conv_variants has 14), at batch sizes other than the traced one."""
    x = np.concatenate([CONV.input] * 2)[:batch]
    with torch.no_grad():
        expected = converter.load(CONV.prototxt, CONV.caffemodel)(torch.from_numpy(x))
        pt2 = torch.export.load(programs["pt2"]).module()(torch.from_numpy(x))
    session = onnxruntime.InferenceSession(str(programs["onnx"]))
    onnx_outs = session.run(None, {"data": x})
    assert len(expected) == len(pt2) == len(onnx_outs) == 14
    for want, traced, translated in zip(expected, pt2, onnx_outs, strict=True):
        assert traced.shape[0] == batch and translated.shape[0] == batch
        assert rel_error(traced.numpy(), want.numpy()) < 1e-6
        assert rel_error(translated, want.numpy()) < 1e-5


def test_onnx_names_opset_and_metadata(programs):
    model = onnx.load(str(programs["onnx"]))
    net = converter.load(CONV.prototxt, CONV.caffemodel)
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == net.output_names  # every output, by blob
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert ONNX_OPSET >= 17
    for path in programs.values():
        loaded = load_program(path)
        assert (loaded.input_names, loaded.output_name) == (["data"], net.output_name)
        assert loaded.output_names == net.output_names


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("reference", ["numpy", "saved"])
def test_verify_accepts_both(programs, capsys, fmt, reference):
    args = ["verify", str(CONV.prototxt), str(CONV.caffemodel), "--converted", str(programs[fmt])]
    if reference == "saved":
        args += ["--reference", str(CONV.folder / "blobs.npz")]
        args += ["--input", str(CONV.folder / "input.npy")]
    else:
        args += ["--reference", "numpy"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "PASS: 14 blobs" in out and "float32" in out  # every output blob of the net


def test_verify_fails_on_a_wrong_program(tmp_path, capsys):
    """A program whose weights are off must fail verify (the comparison is real)."""
    net = converter.read_net(R50.prototxt, R50.caffemodel)
    scale = next(layer for layer in net.layers if layer.type == "Scale")
    scale.blobs[0] = scale.blobs[0] * 1.01  # a 1% gamma change in the stem
    from converter.conversion import plan_conversion
    from converter.targets import write_target

    plan = plan_conversion(net, False)
    wrong = write_target("pt2", net, plan, tmp_path / "wrong.pt2")
    args = ["verify", str(R50.prototxt), str(R50.caffemodel), "--converted", str(wrong)]
    assert main([*args, "--reference", "numpy"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_verify_refuses_a_program_of_another_net(programs, capsys):
    args = ["verify", str(R50.prototxt), str(R50.caffemodel), "--converted"]
    assert main([*args, str(programs["onnx"])]) == 2
    err = capsys.readouterr().err
    assert "was it converted from this net?" in err and len(err.strip().splitlines()) == 1


def test_missing_onnxruntime_gives_the_install_hint(programs, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConverterError, match=r"caffe2torch\[onnx\]"):
        load_program(programs["onnx"])


def test_unreadable_program_is_one_error(tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ConverterError, match="not a readable torch.export"):
        load_program(bad)


@pytest.mark.parametrize("format", ["pt2", "onnx"])
def test_untraceable_net_is_refused_in_one_line(tmp_path, capsys, format):
    """A DetectionOutput whose NMS would run over more candidates per class than pt2 and
    ONNX trace (1030 priors, no nms_param.top_k): refused in one line naming the layer
    (no pages of traced graph), nothing written."""
    from test_fork_layers import DETECTION

    text = DETECTION % {"P": 1030, "C": 3, "P4": 4120, "param": "nms_param { }"}
    prototxt = tmp_path / "ssd.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        "input_param { shape { dim: 2 dim: 4120 } } }\n" + text
    )
    caffemodel = tmp_path / "ssd.caffemodel"
    converter.write_caffemodel(converter.read_net(prototxt), caffemodel)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["convert", str(prototxt), str(caffemodel), "-o", str(out / f"ssd.{format}")]
    assert main(argv + ["--format", format]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch.export cannot trace this net" in err[0]
    assert "cannot trace this net: layer 'det' (DetectionOutput): " in err[0]
    assert "at most 1024 candidates per class" in err[0] and "takes 1030" in err[0]
    assert list(out.iterdir()) == []
