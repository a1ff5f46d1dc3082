"""The public API end to end against real Caffe's blobs: load, blobs, convert, the builders.

Issue 3 (ResNets): ``load`` -> ``blobs`` matches Caffe; ``convert`` -> ``load(file)`` gives the
same model bit for bit, in both formats, with the metadata a user needs. Issue 5 (any net):
the generic module, chosen automatically for nets that are not ResNets, or on request.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

import converter
from conftest import (
    EDGE_CASES,
    RESNET_CASES,
    load_case,
    rel_error,
    shared_case,
    shared_cases,
)
from converter import CaffeResNet, ConverterError
from converter.cli import main
from converter.export import read_converted, write_converted
from converter.generic import CaffeGraph
from converter.resnet import kaiming_config

FORMATS = {"safetensors": ".safetensors", "pt": ".pt"}
SHARED_RESNETS = shared_cases("resnet")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_blobs_match_caffe(ours: dict[str, torch.Tensor], case) -> dict[str, float]:
    """Every blob Caffe saved exists on our side and is within the case's tolerance."""
    ref = case.blobs
    assert set(ref) <= set(ours), f"blobs missing on our side: {set(ref) - set(ours)}"
    errors = {name: rel_error(ours[name].double().numpy(), value) for name, value in ref.items()}
    bad = {name: e for name, e in errors.items() if not e <= case.tolerance}
    assert not bad, f"{case.name}: over tolerance {case.tolerance}: {bad}"
    return errors


def assert_matches_caffe(model, case) -> dict[str, float]:
    return assert_blobs_match_caffe(converter.blobs(model, case.input), case)


def assert_all_eval(model) -> None:
    assert not model.training
    assert not any(module.training for module in model.modules())


def assert_identical(ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Bit-identical blobs: same names in the same order, same dtype, same values."""
    assert list(ours) == list(expected)
    for name in ours:
        assert ours[name].dtype == expected[name].dtype, name
        assert torch.equal(ours[name], expected[name]), name


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(case, format) -> a converted file, made once for the whole module."""
    folder = tmp_path_factory.mktemp("converted")
    files: dict[tuple[str, str], object] = {}

    def get(name: str, fmt: str):
        if (name, fmt) not in files:
            case = load_case(name)
            path = folder / f"{name}{FORMATS[fmt]}"
            files[name, fmt] = converter.convert(case.prototxt, case.caffemodel, path)
        return files[name, fmt]

    return get


class Direct:
    """Models loaded straight from prototxt + caffemodel, and their blobs, made once each."""

    def __init__(self):
        self.models: dict[str, torch.nn.Module] = {}
        self.outputs: dict[str, dict[str, torch.Tensor]] = {}

    def __call__(self, name: str) -> torch.nn.Module:
        if name not in self.models:
            case = load_case(name)
            self.models[name] = converter.load(case.prototxt, case.caffemodel)
        return self.models[name]

    def blobs(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self.outputs:
            self.outputs[name] = converter.blobs(self(name), load_case(name).input)
        return self.outputs[name]


@pytest.fixture(scope="module")
def direct():
    return Direct()


# ----------------------------------------------------------------------------- issue 3: ResNets


@pytest.mark.parametrize("name", RESNET_CASES)
def test_load_is_a_caffe_resnet_that_matches_caffe(name, direct):
    case = load_case(name)
    model = direct(name)
    assert isinstance(model, CaffeResNet), "the recognizer should accept a Kaiming-style ResNet"
    assert_all_eval(model)
    errors = assert_blobs_match_caffe(direct.blobs(name), case)
    print(f"{name}: worst {max(errors.values()):.2e} at {max(errors, key=errors.get)}")

    with torch.no_grad():
        out = model(torch.from_numpy(case.input))
    assert model.output_name == "prob"
    assert torch.equal(out, direct.blobs(name)["prob"])
    if "calibrated" in name:  # prob is meaningful only where BN statistics were fitted
        assert np.array_equal(out.numpy().argmax(1), case.blobs["prob"].argmax(1))


def test_blobs_returns_the_names_asked_for_in_that_order(direct):
    case = load_case("resnet18_w8")
    model = direct("resnet18_w8")
    some = converter.blobs(model, torch.from_numpy(case.input), ["res3b", "conv1"])
    assert list(some) == ["res3b", "conv1"]
    assert rel_error(some["conv1"].numpy(), case.blobs["conv1"]) <= case.tolerance
    with pytest.raises(ConverterError, match="nope"):
        converter.blobs(model, case.input, ["nope"])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", RESNET_CASES)
def test_converted_file_loads_to_the_same_model(name, fmt, converted, direct):
    case = load_case(name)
    path = converted(name, fmt)
    assert path.suffix == FORMATS[fmt]
    model = converter.load(path)
    assert isinstance(model, CaffeResNet)
    assert_all_eval(model)
    assert model.caffe_config() == direct(name).caffe_config()
    ours = converter.blobs(model, case.input)
    assert_identical(ours, direct.blobs(name))
    assert_blobs_match_caffe(ours, case)


def test_the_file_name_says_the_format(tmp_path, capsys, monkeypatch):
    """The extension names the format (a .pth is a torch file); a name that names another
    format, or none this tool writes (-o out.h5 used to get safetensors), is refused."""
    case = load_case("resnet18_w8")
    forced = converter.convert(case.prototxt, case.caffemodel, tmp_path / "m.pth")
    assert torch.load(forced, weights_only=True)["metadata"]["architecture"] == "resnet"
    for name, fmt, words in (
        ("model.h5", None, "a '.h5' name for a safetensors file; name it model.safetensors"),
        ("model.onnx", "pt", "a '.onnx' name for a pt file; name it model.pt"),
        ("model.bin", "pt", "a '.bin' name for a pt file; name it model.pt"),
        ("model.safetensors", "pt", "a '.safetensors' name for a pt file"),
        ("model", None, "a name without extension for a safetensors file"),
    ):
        with pytest.raises(ConverterError, match=re.escape(words)):
            converter.convert(case.prototxt, case.caffemodel, tmp_path / name, format=fmt)
        extra = ["--format", fmt] if fmt else []
        argv = ["convert", case.prototxt, case.caffemodel, "-o", tmp_path / name, *extra]
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "safetensors: .safetensors" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]  # nothing else written
    monkeypatch.chdir(tmp_path)  # without -o: the caffemodel's name, as safetensors
    assert main(["convert", str(case.prototxt), str(case.caffemodel)]) == 0
    with safe_open(str(tmp_path / "resnet18_w8.safetensors"), framework="pt") as handle:
        assert "conv1.weight" in handle.keys()


def file_metadata(path) -> dict[str, str]:
    """Metadata read with the formats' own readers, not with the package's."""
    if path.suffix == ".pt":
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert set(payload) == {"state_dict", "metadata"}
        assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
        return payload["metadata"]
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_describes_architecture_sources_inputs_and_convention(fmt, converted, direct):
    name = "resnet50_w8_calibrated"
    case = load_case(name)
    meta = file_metadata(converted(name, fmt))
    config = json.loads(meta["config"])
    assert config == direct(name).caffe_config()
    assert config["architecture"] == meta["architecture"] == "resnet"
    assert config["block"] == "bottleneck" and config["stride_in_1x1"] is True
    assert [stage["blocks"] for stage in config["stages"]] == [3, 4, 6, 3]
    assert meta["source_prototxt"] == case.prototxt.name
    assert meta["source_caffemodel"] == case.caffemodel.name
    assert meta["producer"] == f"caffe2torch {converter.__version__}"
    assert json.loads(meta["input_shapes"]) == {"data": list(case.input.shape)}
    assert json.loads(meta["input_names"]) == ["data"]
    assert meta["output_blob"] == "prob"
    convention = meta["input_convention"]
    for word in ("BGR", "0-255", "mean", "NCHW"):
        assert word in convention, word


@pytest.mark.parametrize("fmt", FORMATS)
def test_hash_adds_only_the_sources_sha256(fmt, tmp_path, converted):
    case = load_case("resnet18_w8")
    path = tmp_path / f"hashed.{fmt}"
    assert (
        main(["convert", str(case.prototxt), str(case.caffemodel), "-o", str(path), "--hash"]) == 0
    )
    hashed, plain = file_metadata(path), file_metadata(converted("resnet18_w8", fmt))
    assert set(hashed) - set(plain) == {"source_caffemodel_sha256", "source_prototxt_sha256"}
    assert hashed["source_prototxt_sha256"] == sha256(case.prototxt)
    assert hashed["source_caffemodel_sha256"] == sha256(case.caffemodel)
    a, b = converter.load(path), converter.load(converted("resnet18_w8", fmt))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("fuse_bn", [False, True])
def test_convert_plans_a_resnet_without_building_modules(fuse_bn, tmp_path, monkeypatch, direct):
    """Building ResNet-152's modules costs more than the rest of its conversion's Python
    work: convert must work from the config alone, and the file must still be complete."""
    name = "resnet50_w8_calibrated"
    case = load_case(name)

    def refuse(*args, **kwargs):
        raise AssertionError("convert built a CaffeResNet")

    monkeypatch.setattr(CaffeResNet, "__init__", refuse)
    path = tmp_path / "planned.safetensors"
    converter.convert(case.prototxt, case.caffemodel, path, fuse_bn=fuse_bn)
    monkeypatch.undo()
    model = converter.load(path)  # strict: every tensor of the model is in the file
    assert isinstance(model, CaffeResNet) and model.config.fused_bn == fuse_bn
    if not fuse_bn:
        assert_identical(model.state_dict(), direct(name).state_dict())


@pytest.mark.parametrize(
    "args, imports_torch",
    [([], False), (["--fuse-bn"], False), (["--format", "pt"], True), (["--generic"], True)],
)
def test_converting_a_resnet_to_safetensors_does_not_import_torch(args, imports_torch, tmp_path):
    """Importing torch takes seconds, longer than converting a 250 MB ResNet: the ResNet
    path to safetensors needs NumPy only. A .pt file and the generic module need torch."""
    import subprocess
    import sys

    case = load_case("resnet50_w8_calibrated")
    out = tmp_path / ("model.pt" if "pt" in args else "model.safetensors")
    argv = ["convert", str(case.prototxt), str(case.caffemodel), "-o", str(out), *args]
    code = (
        f"import sys; from converter.cli import main; code = main({argv!r}); "
        "sys.stderr.write(f\"{code} {'torch' in sys.modules}\")"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == f"0 {imports_torch}"
    model = converter.load(out)
    assert isinstance(model, CaffeGraph if "--generic" in args else CaffeResNet)


def test_load_float64_builds_a_float64_model(converted, direct):
    name = "resnet50_w8_calibrated"
    case = load_case(name)
    model = converter.load(converted(name, "safetensors"), dtype=torch.float64)
    tensors = [*model.parameters(), *model.buffers()]
    assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
    out = converter.blobs(model, case.input)
    assert out["prob"].dtype == torch.float64
    assert_matches_caffe(model, case)
    # the same weights: float32 and float64 differ by rounding only
    out32 = direct.blobs(name)
    assert rel_error(out32["fc1000"].numpy(), out["fc1000"].numpy()) < 1e-4
    # float64 straight from the caffemodel keeps the BN statistics unrounded: Caffe's
    # blob x (1 / factor), with factor 999.98 here, in float64
    exact = converter.load(case.prototxt, case.caffemodel, dtype=torch.float64)
    net = converter.read_net(case.prototxt, case.caffemodel)
    mean, var, factor = (b.astype(np.float64) for b in net.layer("bn_conv1").blobs)
    assert factor[0] != 1
    assert np.array_equal(exact.bn1.running_mean.numpy(), mean * (1 / factor[0]))
    assert np.array_equal(exact.bn1.running_var.numpy(), var * (1 / factor[0]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_loaded_model_owns_trainable_parameters_of_the_asked_dtype(fmt, converted):
    """load hands the file's tensors to the model (no second copy): they must still be
    trainable Parameters, in float32, each with its own memory."""
    model = converter.load(converted("resnet18_w8", fmt))
    parameters = dict(model.named_parameters())
    assert parameters and all(isinstance(p, torch.nn.Parameter) for p in parameters.values())
    assert all(p.requires_grad and p.dtype == torch.float32 for p in parameters.values())
    state = model.state_dict()
    assert all(not t.is_meta for t in state.values())
    assert {t.dtype for t in state.values()} == {torch.float32, torch.int64}
    pointers = [t.data_ptr() for t in state.values() if t.numel()]
    assert len(pointers) == len(set(pointers))
    logits = model.forward_taps(torch.randn(1, 3, 224, 224), ["fc"])["fc"]  # before Softmax
    logits[0, 0].backward()  # gradients reach the loaded weights
    assert model.conv1.weight.grad.abs().sum() > 0 and model.fc.weight.grad.abs().sum() > 0


def test_load_needs_the_caffemodel_with_a_prototxt():
    case = load_case("resnet18_w8")
    with pytest.raises(ConverterError, match="caffemodel"):
        converter.load(case.prototxt)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED_RESNETS)
def test_shared_resnets_convert_load_and_match_caffe(name, tmp_path):
    case = shared_case(name)
    path = converter.convert(case.prototxt, case.caffemodel, tmp_path / f"{name}.safetensors")
    model = converter.load(path)
    assert isinstance(model, CaffeResNet)
    errors = assert_matches_caffe(model, case)
    print(f"{name}: worst {max(errors.values()):.2e} at {max(errors, key=errors.get)}")
    if "calibrated" in name:
        with torch.no_grad():
            prob = model(torch.from_numpy(case.input)).numpy()
        assert np.array_equal(prob.argmax(1), case.blobs["prob"].argmax(1))


# ----------------------------------------------------------------------------- builders


@pytest.mark.parametrize("fmt", FORMATS)
def test_writer_stores_arrays_and_tensors_of_every_dtype_bit_exactly(fmt, tmp_path):
    """NumPy arrays (any byte order, views, 0-d, empty) and torch tensors, as safetensors'
    own reader and torch.load see them."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 6)).astype(np.float32)
    state = {
        "big_endian": rng.standard_normal((2, 3)).astype(">f4"),
        "float64": rng.standard_normal(5),
        "view": base[1:3],
        "transposed": base.T,
        "count": np.zeros((), np.int64),
        "empty": np.zeros((0, 4), np.float32),
        "flags": np.array([True, False, True]),
        "bf16": torch.randn(3, 2).to(torch.bfloat16),
        "half": torch.randn(7).half(),
        "int32": torch.arange(-3, 3, dtype=torch.int32),
    }
    path = write_converted(state, {"config": "{}"}, tmp_path / f"mixed.{fmt}")
    stored, _ = read_converted(path)
    assert set(stored) == set(state)
    for name, value in state.items():
        want = (
            value
            if isinstance(value, torch.Tensor)
            else torch.from_numpy(value.astype(value.dtype.newbyteorder("=")))
        )
        assert stored[name].dtype == want.dtype and stored[name].shape == want.shape, name
        assert torch.equal(stored[name], want), name


def test_safetensors_writer_writes_large_tensors_in_pieces(tmp_path, monkeypatch):
    """No write() larger than WRITE_PIECE_BYTES once the header is out; every byte lands."""
    import converter.export as export
    import converter.io.atomic as atomic

    monkeypatch.setattr(export, "WRITE_PIECE_BYTES", 64)
    sizes: list[int] = []

    class Recording(io.FileIO):
        def write(self, data):
            sizes.append(len(memoryview(data).cast("B")))
            return super().write(data)

    real_fdopen = os.fdopen
    monkeypatch.setattr(
        atomic.os,
        "fdopen",
        lambda fd, mode="r", *a, **k: Recording(fd, "wb") if mode == "wb" else real_fdopen(fd),
    )
    rng = np.random.default_rng(1)
    state = {
        "big": rng.standard_normal((7, 9)).astype(np.float32),  # 252 bytes: four pieces
        "odd": rng.standard_normal(5).astype(">f8"),
        "count": np.zeros((), np.int64),
        "empty": np.zeros((0, 3), np.float32),
        "tensor": torch.randn(2, 40),  # 320 bytes: five pieces
    }
    path = write_converted(state, {"config": "{}"}, tmp_path / "pieces.safetensors")
    assert sizes[1:] == [64, 64, 64, 60, 8, 40, 64, 64, 64, 64, 64]  # sorted names
    stored, _ = read_converted(path)
    for name, value in state.items():
        assert np.array_equal(stored[name].numpy(), np.asarray(value)), name


def test_builder_loads_a_file_of_its_architecture_and_refuses_others(tmp_path, converted):
    """A full-width ResNet-18 with random weights, stored as ``convert`` stores a model."""
    torch.manual_seed(0)
    original = CaffeResNet(kaiming_config(18, num_classes=10))
    with torch.no_grad():
        for module in original.modules():  # non-trivial statistics, so a mix-up shows
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    path = write_converted(
        original.state_dict(),
        {"config": json.dumps(original.caffe_config())},
        tmp_path / "resnet18.safetensors",
    )
    model = converter.resnet18_caffe(weights=path, num_classes=10)
    assert isinstance(model, CaffeResNet)
    assert_all_eval(model)
    assert list(model.state_dict()) == list(original.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), original.eval()(x))

    with pytest.raises(ConverterError, match="not a Kaiming ResNet-34"):
        converter.resnet34_caffe(weights=path, num_classes=10)
    with pytest.raises(ConverterError, match="num_classes"):
        converter.resnet18_caffe(weights=path)  # 1000 classes expected, the file has 10
    # the bundled ResNet-50 has every width divided by 8
    with pytest.raises(ConverterError, match="widths"):
        converter.resnet50_caffe(weights=converted("resnet50_w8_calibrated", "pt"), num_classes=10)
    with pytest.raises(ConverterError, match="holds a generic net converted from pool_ceil"):
        converter.resnet18_caffe(weights=converted("pool_ceil", "safetensors"))


# ----------------------------------------------------------------------------- issue 5: any net


@pytest.mark.parametrize("name", RESNET_CASES)
def test_generic_load_of_a_resnet_matches_caffe(name, direct):
    case = load_case(name)
    model = converter.load(case.prototxt, case.caffemodel, generic=True)
    assert isinstance(model, CaffeGraph)
    assert_all_eval(model)
    ours = converter.blobs(model, case.input)
    assert_blobs_match_caffe(ours, case)
    # the two modules compute the same function by different code: equal up to rounding
    resnet = direct.blobs(name)
    assert set(ours) == set(resnet)
    for blob in ("conv1", "res2a", "fc1000"):
        assert rel_error(ours[blob].numpy(), resnet[blob].numpy()) <= case.tolerance, blob


@pytest.mark.parametrize("name", EDGE_CASES)
def test_other_nets_load_and_convert_as_graphs(name, converted, direct):
    case = load_case(name)
    model = direct(name)
    assert isinstance(model, CaffeGraph), "not a ResNet: the generic module takes it"
    assert_all_eval(model)
    assert_blobs_match_caffe(direct.blobs(name), case)
    for fmt in FORMATS:
        path = converted(name, fmt)
        meta = file_metadata(path)
        assert meta["architecture"] == json.loads(meta["config"])["architecture"] == "generic"
        loaded = converter.load(path)
        assert isinstance(loaded, CaffeGraph)
        assert_all_eval(loaded)
        assert_identical(converter.blobs(loaded, case.input), direct.blobs(name))


def test_cli_convert_generic_writes_a_graph(tmp_path, capsys):
    case = load_case("resnet18_w8")
    out = tmp_path / "graph.pt"
    code = main(["convert", str(case.prototxt), str(case.caffemodel), "-o", str(out), "--generic"])
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    _, meta = read_converted(out)
    assert meta["architecture"] == "generic"
    model = converter.load(out)
    assert isinstance(model, CaffeGraph)
    assert_matches_caffe(model, case)
    # without --generic the same net becomes a CaffeResNet
    plain = tmp_path / "resnet.pt"
    assert main(["convert", str(case.prototxt), str(case.caffemodel), "-o", str(plain)]) == 0
    assert isinstance(converter.load(plain), CaffeResNet)
