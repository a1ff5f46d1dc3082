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
    # every output blob of the net; against saved blobs the saved input too (it must be
    # the input given)
    said = "PASS: 15 blobs" if reference == "saved" else "PASS: 14 blobs"
    assert said in out and "float32" in out


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
    # the program's metadata keeps the net it was traced from: both nets are named
    assert "was converted from 'conv_variants.prototxt'" in err and "ResNet-50" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_onnxruntime_gives_the_install_hint(programs, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConverterError, match=r"caffe2torch\[onnx\]"):
        load_program(programs["onnx"])


def test_unreadable_program_is_one_error(tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ConverterError, match="not a readable torch.export"):
        load_program(bad)


def test_a_batch_fixed_by_a_layer_is_named_in_our_words(tmp_path, capsys):
    """A Reshape naming the batch size fixes it: the note names that layer, and torch's own
    text ("Constraints violated (batch)! For more information, run with TORCH_LOGS=...")
    stays out. The program then runs at the declared batch."""
    prototxt = tmp_path / "fixed.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        "input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n"
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }\n'
        'layer { name: "flat" type: "Reshape" bottom: "relu" top: "flat" '
        "reshape_param { shape { dim: 2 dim: -1 } } }\n"
    )
    caffemodel = tmp_path / "fixed.caffemodel"
    converter.write_caffemodel(converter.read_net(prototxt), caffemodel)
    output = tmp_path / "fixed.pt2"
    assert main(["convert", str(prototxt), str(caffemodel), "-o", str(output)]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    note = "note: the batch size stays fixed at the declared 2 (layer 'flat' (Reshape) fixes it)"
    assert note in text
    assert "Constraints" not in text and "TORCH_LOGS" not in text
    program = load_program(output)
    assert tuple(program(torch.ones(2, 3, 4, 4)).shape) == (2, 48)


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


class _Gate(torch.nn.Module):
    """Branches on its input's values: torch.export cannot trace that."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


class _ChannelMedian(torch.nn.Module):
    """aten.median.dim, which torch.export traces and the ONNX exporter has no function for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - torch.median(x, dim=1, keepdim=True).values


class _ErfInv(torch.nn.Module):
    """aten.erfinv, which the ONNX exporter decomposes to prims.erf_inv, a node of its own
    graph, not of the traced program, before it finds no function for it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erfinv(x.clamp(-0.5, 0.5))


@pytest.fixture
def odd_layer(tmp_path):
    """Registers a user's layer type for one test: a net Input -> ReLU -> it (named 'odd')
    -> ReLU, written with its caffemodel; yields (prototxt, caffemodel) per type name."""
    from converter.layers import same_shape

    modules = {"Gate": _Gate, "ChannelMedian": _ChannelMedian, "ErfInv": _ErfInv}
    for name, module in modules.items():
        converter.register_layer(name, shape=same_shape, module=lambda *_, m=module: m())

    def write(type_name):
        prototxt = tmp_path / f"{type_name}.prototxt"
        prototxt.write_text(
            'layer { name: "data" type: "Input" top: "data" '
            "input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n"
            'layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }\n'
            f'layer {{ name: "odd" type: "{type_name}" bottom: "r" top: "odd" }}\n'
            'layer { name: "relu2" type: "ReLU" bottom: "odd" top: "out" }\n'
        )
        caffemodel = tmp_path / f"{type_name}.caffemodel"
        converter.write_caffemodel(converter.read_net(prototxt), caffemodel)
        return prototxt, caffemodel

    yield write
    for name in modules:
        converter.unregister_layer(name)


def _refused(prototxt, caffemodel, format, capsys, tmp_path):
    """convert to ``format`` in an empty folder: exit 2, one line, nothing written there."""
    out = tmp_path / f"out_{format}"
    out.mkdir()
    argv = ["convert", str(prototxt), str(caffemodel), "-o", str(out / f"net.{format}")]
    assert main([*argv, "--format", format]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert list(out.iterdir()) == []
    return err[0]


@pytest.mark.parametrize("format", ["pt2", "onnx"])
def test_a_layer_that_cannot_be_traced_is_named(odd_layer, tmp_path, capsys, format):
    """A layer whose module branches on its input's values: one line naming the layer, its
    type, torch's reason and what keeps the net instead (no code emitter: not --format code)."""
    prototxt, caffemodel = odd_layer("Gate")
    line = _refused(prototxt, caffemodel, format, capsys, tmp_path)
    assert line.startswith(f"caffe2torch: error: {prototxt}: torch.export cannot trace this net: ")
    assert "this net: layer 'odd' (Gate): " in line and "data-dependent expression" in line
    assert line.endswith(
        "; the default safetensors output keeps it (converter.load runs it, its type registered)"
    )
    x = torch.arange(-20.0, 28.0).reshape(1, 3, 4, 4)  # a positive sum: the gate passes it
    with torch.no_grad():
        assert torch.equal(converter.load(prototxt, caffemodel)(x), torch.relu(x))  # it does


@pytest.mark.parametrize(
    ("type_name", "operation"),
    [("ChannelMedian", "aten.median.dim"), ("ErfInv", "prims.erf_inv.default")],
)
def test_an_operation_onnx_lacks_is_named_with_its_layer(
    odd_layer, tmp_path, capsys, type_name, operation
):
    """An operation the ONNX exporter has no function for: one line naming the layer whose
    module calls it, its type and the operation, offering pt2, which writes the net."""
    prototxt, caffemodel = odd_layer(type_name)
    line = _refused(prototxt, caffemodel, "onnx", capsys, tmp_path)
    assert line == (
        f"caffe2torch: error: {tmp_path / 'out_onnx' / 'net.onnx'}: the ONNX exporter cannot "
        f"translate this net: layer 'odd' ({type_name}): No ONNX function found for "
        f"{operation}; --format pt2 writes it"
    )
    assert main(["convert", str(prototxt), str(caffemodel), "-o", str(tmp_path / "n.pt2")]) == 0
    assert (tmp_path / "n.pt2").is_file()
