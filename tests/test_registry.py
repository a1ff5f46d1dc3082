"""The layer registry: a user's own layer type converts, loads, inspects and verifies end to end
through the same ``register_layer`` the built-in types use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import converter
from conftest import ROOT
from converter import ConverterError
from converter.inspect import layer_table
from converter.layers import LayerShapes, lookup, need_bottoms, supported_layer_types
from converter.net import read_net, write_caffemodel
from converter.verify import verify

PROTOTXT = """
name: "affine_net"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "affine" type: "%s" bottom: "conv" top: "conv" }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
"""  # noqa: E501


class AffineChannel(nn.Module):
    """y = x * gamma_c + beta_c (Detectron's AffineChannel, as a Caffe fork might have it)."""

    def __init__(self, channels: int, use_beta: bool = True):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.use_beta = use_beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        y = x * self.gamma.reshape(view)
        return y + self.beta.reshape(view) if self.use_beta else y


def affine_shape(layer, bottoms, where):
    need_bottoms(bottoms, 1, where)
    channels = bottoms[0][1]
    return LayerShapes([bottoms[0]], [(channels,), (channels,)])


def affine_weights(layer, blobs, module, where):
    return {"gamma": blobs[0], "beta": blobs[1]}


def affine_reference(layer, bottoms, params, where):
    x, (gamma, beta) = bottoms[0], params
    return [x * gamma[:, None, None] + beta[:, None, None]]


@pytest.fixture
def affine_type():
    """Registers 'AffineChannel' (alias 'Affine') for one test, and forgets it afterwards."""
    converter.register_layer(
        "AffineChannel",
        aliases=("Affine",),
        shape=affine_shape,
        module=lambda layer, bottoms, where: AffineChannel(bottoms[0][1]),
        weights=affine_weights,
        reference=affine_reference,
        in_place=True,
    )
    yield "AffineChannel"
    converter.unregister_layer("AffineChannel")


def write_pair(tmp_path, type_name: str):
    prototxt = tmp_path / "affine.prototxt"
    prototxt.write_text(PROTOTXT % type_name)
    net = read_net(prototxt)
    rng = np.random.default_rng(3)
    for layer, shapes in zip(net.layers, net.shapes()):
        layer.blobs = [rng.normal(size=s).astype(np.float32) for s in shapes.param_shapes]
    caffemodel = tmp_path / "affine.caffemodel"
    write_caffemodel(net, caffemodel)
    return prototxt, caffemodel


@pytest.mark.parametrize("type_name", ["AffineChannel", "Affine"])
def test_a_registered_type_converts_loads_and_verifies(affine_type, type_name, tmp_path):
    prototxt, caffemodel = write_pair(tmp_path, type_name)
    assert "AffineChannel" in supported_layer_types() and "Affine" in supported_layer_types()

    out = converter.convert(prototxt, caffemodel, tmp_path / "affine.safetensors")
    model = converter.load(out)
    assert set(model.state_dict()) >= {"affine.gamma", "affine.beta"}

    # Hand computation from the caffemodel's blobs, independent of every hook above.
    weights = converter.read_weights(caffemodel)
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6)).astype(np.float32)
    conv = torch.nn.functional.conv2d(
        *(torch.tensor(a, dtype=torch.float64) for a in (x, *weights["conv"]))
    ).numpy()
    gamma, beta = weights["affine"]
    expected = np.maximum(conv * gamma[:, None, None] + beta[:, None, None], 0)
    got = converter.blobs(model, x)["conv"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    report = verify(prototxt, caffemodel, reference="numpy")
    assert report.passed and [row.name for row in report.rows] == ["conv", "fc"], report.format()
    assert verify(prototxt, caffemodel, reference="numpy", converted=out).passed

    rows = {row["name"]: row for row in layer_table(read_net(prototxt))}
    assert rows["affine"]["top_shapes"] == [[2, 4, 4, 4]]
    assert rows["affine"]["param_shapes"] == [[4], [4]]


def test_verify_catches_a_wrong_registered_module(affine_type, tmp_path):
    """The executor forward is the user's independent check: a module that forgets beta fails."""
    prototxt, caffemodel = write_pair(tmp_path, "AffineChannel")
    converter.register_layer(
        "AffineChannel",
        shape=affine_shape,
        module=lambda layer, bottoms, where: AffineChannel(bottoms[0][1], use_beta=False),
        weights=affine_weights,
        reference=affine_reference,
        in_place=True,
        replace=True,
    )
    report = verify(prototxt, caffemodel, reference="numpy")
    assert not report.passed
    assert report.rows[0].name == "conv" and not report.rows[0].passed


def test_registration_refuses_a_taken_name_and_checks_hooks(affine_type, tmp_path):
    with pytest.raises(ConverterError, match="'ReLU' is already registered.*replace=True"):
        converter.register_layer("ReLU", shape=affine_shape)
    with pytest.raises(ConverterError, match="'Affine' is already registered"):
        converter.register_layer("Other", aliases=("Affine",), shape=affine_shape)
    assert lookup("Other") is None  # nothing half-registered
    with pytest.raises(ConverterError, match="'Affine' is not registered under that name"):
        converter.unregister_layer("Affine")  # an alias: forget the type by its own name


def test_a_shape_only_type_is_inspected_but_not_converted(tmp_path):
    """A type with a shape rule and no module: inspect shows it, the converter names it."""
    converter.register_layer("ShapeOnlyOp", shape=affine_shape)
    try:
        prototxt = tmp_path / "shape_only.prototxt"
        prototxt.write_text((PROTOTXT % "ShapeOnlyOp").replace(' top: "conv" }', ' top: "a" }', 1))
        rows = layer_table(read_net(prototxt))
        assert rows[2]["top_shapes"] == [[2, 4, 4, 4]] and rows[2]["param_shapes"] == [[4], [4]]
        assert "ShapeOnlyOp" not in supported_layer_types()
        with pytest.raises(
            ConverterError,
            match=r"a PyTorch module \(ShapeOnlyOp\): 'affine' \(ShapeOnlyOp\).*register_layer",
        ):
            converter.build_model(read_net(prototxt), generic=True)
    finally:
        converter.unregister_layer("ShapeOnlyOp")


def test_the_readme_example_registers_a_working_type(tmp_path):
    """The README's registration code, as written, converts and verifies a net using it."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Adding a layer type") :]
    code = section[section.index("```python\n") + 10 : section.index("```\n", 10)]
    code = code[: code.index("model = converter.load(")]  # the rest needs the user's files
    exec(compile(code, "README.md", "exec"), {})
    try:
        prototxt, caffemodel = write_pair(tmp_path, "AffineChannel")
        report = verify(prototxt, caffemodel, reference="numpy")
        assert report.passed and report.rows, report.format()
    finally:
        converter.unregister_layer("AffineChannel")


def test_exact_blobs_follow_the_last_writer_and_shared_memory():
    """What verify compares exactly: ArgMax indices, through a Flatten (a view of them), but
    not once an in-place layer has written over them (over a Split top: in Caffe that
    memory is the bottom's and every other top's too), nor ArgMax's values alone."""
    from converter.io.prototxt import parse_prototxt
    from converter.layers.registry import exact_blobs
    from converter.net import net_from_param

    def parts(text: str) -> dict:
        head = (
            'layer { name: "data" type: "Input" top: "data" '
            "input_param { shape { dim: 2 dim: 5 dim: 3 dim: 3 } } }\n"
            'layer { name: "ids" type: "ArgMax" bottom: "data" top: "ids" '
            "argmax_param { axis: 1 } }\n"
        )
        net = net_from_param(parse_prototxt(head + text, "t.prototxt"), "t.prototxt")
        return exact_blobs(net.layers)

    views = parts(
        'layer { name: "flat" type: "Flatten" bottom: "ids" top: "flat" }\n'
        'layer { name: "vals" type: "ArgMax" bottom: "data" top: "vals" '
        "argmax_param { axis: 1 out_max_val: true } }\n"
        'layer { name: "both" type: "ArgMax" bottom: "data" top: "both" '
        "argmax_param { out_max_val: true top_k: 2 } }\n"
    )
    assert sorted(views) == ["both", "flat", "ids"]
    assert views["ids"].what == "indices" and views["ids"].axis is None
    assert (views["both"].axis, views["both"].index) == (1, (0,))
    written = parts(
        'layer { name: "split" type: "Split" bottom: "ids" top: "a" top: "b" }\n'
        'layer { name: "half" type: "Power" bottom: "b" top: "b" power_param { scale: 0.5 } }\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 1 kernel_size: 1 } }\n"
        'layer { name: "t" type: "Threshold" bottom: "c" top: "c" }\n'
    )
    assert sorted(written) == ["c"] and written["c"].what == "0/1 values"


def _readme_registration() -> str:
    """The README's registration code, up to where it loads the user's own files."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Adding a layer type") :]
    code = section[section.index("```python\n") + 10 : section.index("```\n", 10)]
    return code[: code.index("model = converter.load(")]


@pytest.fixture
def forget_affine():
    yield
    if lookup("AffineChannel") is not None:
        converter.unregister_layer("AffineChannel")


def test_layers_option_loads_a_users_types_in_every_command(forget_affine, tmp_path, capsys):
    """--layers FILE.py: the README's registration as a file, used by inspect, convert and
    verify; a converted file loaded where nobody registered the type names it and says how."""
    from converter.cli import main

    plugin = tmp_path / "plugins" / "mylayers.py"
    plugin.parent.mkdir()
    plugin.write_text(_readme_registration())
    prototxt = tmp_path / "affine.prototxt"
    prototxt.write_text(PROTOTXT % "AffineChannel")
    assert main(["inspect", str(prototxt)]) == 0  # nobody registered it yet
    assert "Converts to: nothing yet" in capsys.readouterr().out

    assert main(["inspect", str(prototxt), "--layers", str(plugin)]) == 0
    assert "Converts to: the generic module" in capsys.readouterr().out
    prototxt, caffemodel = write_pair(tmp_path, "AffineChannel")
    out = tmp_path / "affine.safetensors"
    layers = ["--layers", str(plugin), "--layers", str(plugin)]  # once is enough; twice, harmless
    assert main(["convert", str(prototxt), str(caffemodel), "-o", str(out), *layers]) == 0
    verify_argv = ["verify", str(prototxt), str(caffemodel), "--converted", str(out)]
    assert main([*verify_argv, "--reference", "numpy", *layers]) == 0
    assert "PASS" in capsys.readouterr().out

    converter.unregister_layer("AffineChannel")  # a process that has not registered it
    with pytest.raises(ConverterError) as error:
        converter.load(out)
    assert str(error.value) == (
        f"{out}: holds a net with a layer type not registered in this process (AffineChannel: "
        "'affine' (AffineChannel)); register it before loading, as at conversion: import the "
        "code that calls converter.register_layer (on the command line: --layers FILE.py)"
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("def broken(:\n", "failed to import (SyntaxError: "),
        ("import no_such_module_here\n", "failed to import (ModuleNotFoundError: "),
        ("raise SystemExit(3)\n", "failed to import (SystemExit: 3)"),
        (
            _readme_registration().replace('"AffineChannel",', '"ReLU",', 1),
            "failed to import (ConverterError: layer type 'ReLU' is already registered",
        ),
        (None, "no such file"),
    ],
)
def test_a_layers_file_that_fails_ends_in_one_line(text, words, tmp_path, capsys):
    from converter.cli import main

    plugin = tmp_path / "mylayers.py"
    if text is not None:
        plugin.write_text(text)
    prototxt = tmp_path / "affine.prototxt"
    prototxt.write_text(PROTOTXT % "ReLU")
    for command in ("inspect", "verify", "convert"):
        argv = [command, str(prototxt)] + (["x.caffemodel"] if command != "inspect" else [])
        assert main([*argv, "--layers", str(plugin)]) == 2
        out, err = capsys.readouterr()
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"caffe2torch: error: {plugin}: "), err
        assert words in lines[0] and "Traceback" not in err
    assert lookup("ReLU").module is not None  # the built-in type is untouched


def test_a_layers_file_that_registers_nothing_is_said_to(tmp_path, capsys):
    from converter.cli import main

    plugin = tmp_path / "empty.py"
    plugin.write_text("import converter\n")
    prototxt = tmp_path / "affine.prototxt"
    prototxt.write_text(PROTOTXT % "ReLU")
    assert main(["inspect", str(prototxt), "--layers", str(plugin)]) == 0
    assert capsys.readouterr().err == (
        f"caffe2torch: warning: {plugin}: registered no layer type (a --layers file calls "
        "converter.register_layer when imported)\n"
    )
