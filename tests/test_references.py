"""Reference blobs: OpenCV vs real-Caffe fixtures, pycaffe wiring, saved .npz, the dump script."""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from conftest import (
    EDGE_CASES,
    RESNET_CASES,
    ROOT,
    load_case,
    rel_error,
    shared_case,
    shared_cases,
)
from converter import references
from converter.errors import ConverterError
from converter.io.prototxt import read_prototxt
from converter.net import read_net, write_caffemodel
from converter.references import (
    caffe_blobs,
    opencv_blobs,
    saved_blobs,
)

cv2 = pytest.importorskip("cv2")

# What OpenCV 4.x cannot reproduce in the edge-case fixtures (checked in the tests below).
OPENCV_UNSUPPORTED = {
    "pool_ceil": [],
    "bn_variants": ["bias", "bn_inplace", "bn_batchstats"],  # Bias layer; batch statistics
    "conv_variants": ["ip_t"],  # InnerProduct transpose: true (OpenCV silently ignores it)
    # fork layers OpenCV lacks or computes otherwise, and mbox_priorbox, which reads them;
    # "pool_mask" is the pooling layer's mask top, which OpenCV does not give
    "fork_layers": [
        "relu6_p", "upsample", "bilinear_ac", "bilinear_hp", "resize", "pixelshuffle",
        "pad_const", "pad_repl", "pad_refl", "unsqueeze", "unpool", "permute_part",
        "pool_mask", "s1_priorbox", "s2_priorbox", "mbox_priorbox", "detection_out",
    ],
    # No such layer in OpenCV (Threshold, ArgMax, Reduction, Tile, Embed, Parameter,
    # BatchReindex, SPP), Log's base/scale/shift and MVN's eps computed otherwise, an
    # inserted Reshape axis: as measured in the fixture's case.json (opencv_check).
    "bvlc_layers": [
        "log_10", "log_e", "threshold", "argmax_flat", "argmax_c", "argmax_c_val", "red_sum",
        "red_asum", "red_sumsq", "red_mean", "tile_h", "tile_c", "mvn_ac", "ids", "embed",
        "perm", "reindex", "spp_max", "spp_ave", "reshape_ins",
    ],
}  # fmt: skip


def case_input(case) -> dict[str, np.ndarray]:
    return {case.info.get("input", {}).get("blob", "data"): case.input}


def assert_matches_caffe(case, got: dict[str, np.ndarray], skip=()) -> float:
    """Every saved Caffe blob (bar ``skip``) within the case's tolerance; the worst error."""
    worst = 0.0
    compared = 0
    for name, ref in case.blobs.items():
        if name in skip:
            continue
        assert got[name].shape == ref.shape, name
        error = rel_error(got[name], ref)
        assert error <= case.tolerance, f"{case.name}/{name}: {error:.3g} > {case.tolerance}"
        worst = max(worst, error)
        compared += 1
    assert compared >= 5
    return worst


# ----------------------------------------------------------------------------- OpenCV


@pytest.mark.parametrize("name", RESNET_CASES + ["pool_ceil"])
def test_opencv_matches_caffe_on_bundled_fixture(name):
    case = load_case(name)
    got = opencv_blobs(case.prototxt, case.caffemodel, case_input(case), list(case.blobs))
    assert list(got) == list(case.blobs)
    assert_matches_caffe(case, got)


def test_opencv_returns_every_blob_in_network_order_after_in_place_layers():
    case = load_case("resnet18_w8")
    net = read_net(case.prototxt)
    got = opencv_blobs(case.prototxt, case.caffemodel, case_input(case))
    assert list(got) == net.blob_names()
    np.testing.assert_array_equal(got["data"], case.input)
    # 'conv1' is written in place by BN, Scale and ReLU: Caffe's value is the ReLU's output.
    assert got["conv1"].min() >= 0 and rel_error(got["conv1"], case.blobs["conv1"]) < 1e-5
    assert all(v.dtype == np.float32 for v in got.values())


def without_layers(case, drop: list[str], folder: Path) -> Path:
    """The case's prototxt minus the named layers and extra tops (none of them feeds a kept
    layer)."""
    param = read_prototxt(case.prototxt)
    kept = [layer for layer in param.layer if layer.name not in drop]
    tops = [top for layer in kept for top in layer.top[1:] if top in drop]
    assert len(param.layer) - len(kept) + len(tops) == len(drop)
    for layer in kept:
        layer.top[:] = [top for top in layer.top if top not in tops]
    del param.layer[:]
    param.layer.extend(kept)
    path = folder / f"{case.name}_opencv.prototxt"
    path.write_text(text_format.MessageToString(param))
    return path


def blobs_of(case, layers: list[str]) -> set[str]:
    """The blobs the named layers create (not those they rewrite in place)."""
    net = read_net(case.prototxt)
    return {
        top for name in layers for top in net.layer(name).tops if top not in net.layer(name).bottoms
    }


@pytest.mark.parametrize("name", ["bn_variants", "conv_variants", "bvlc_layers"])
def test_opencv_refuses_layers_it_cannot_reproduce_and_matches_the_rest(name, tmp_path):
    case = load_case(name)
    unsupported = OPENCV_UNSUPPORTED[name]
    with pytest.raises(ConverterError) as info:
        opencv_blobs(case.prototxt, case.caffemodel, case_input(case))
    message = str(info.value)
    refused = [layer for layer in unsupported if layer != "bn_inplace"]
    assert all(f"'{layer}'" in message for layer in refused), message
    assert str(case.prototxt) in message
    # Without those layers, every other blob of the case matches Caffe.
    trimmed = without_layers(case, unsupported, tmp_path)
    got = opencv_blobs(trimmed, case.caffemodel, case_input(case))
    skip = blobs_of(case, unsupported)
    assert_matches_caffe(case, got, skip=skip)
    assert set(case.blobs) - skip <= set(got)


def test_opencv_refuses_fork_layers_it_cannot_reproduce_and_matches_the_rest(tmp_path):
    """Each refusal names the layer and what OpenCV does differently (measured in the
    case's opencv_check); what OpenCV does run (Normalize, full-order Permute, the pooling
    mask, HardSwish, ...) matches Caffe."""
    case = load_case("fork_layers")
    with pytest.raises(ConverterError) as info:
        opencv_blobs(case.prototxt, case.caffemodel, case_input(case))
    message = str(info.value)
    for layer, deviation in [
        ("relu6_p", "relu6_param, which OpenCV ignores"),
        ("upsample", "Upsample: no such layer"),
        ("unpool", "MaxUnPool: no such layer"),
        ("resize", "interpolation"),
        ("permute_part", "partial order"),
        ("pool", "the MAX mask"),
        ("s1_priorbox", "truncates it to int"),
        ("s2_priorbox", "img_size/img_h/img_w, which OpenCV ignores"),
        ("detection_out", "orders rows by score"),
    ]:
        assert f"'{layer}' (" in message and deviation in message, (layer, message)
    refused = set(OPENCV_UNSUPPORTED["fork_layers"]) - {"mbox_priorbox", "pool_mask"} | {"pool"}
    assert {name for name in case.blobs if f"'{name}' (" in message} == refused
    per_type = case.info["opencv_check"]["per_type"]  # the case's own OpenCV measurement
    wrong = {t for t, v in per_type.items() if v["inside_tolerance"] < v["layers"]}
    net = read_net(case.prototxt)
    assert wrong | {"Pooling"} == {layer.type for layer in net.layers if layer.name in refused}
    # without them (and the SSD head's prior concat, which reads them) OpenCV matches Caffe
    trimmed = without_layers(case, OPENCV_UNSUPPORTED["fork_layers"], tmp_path)
    got = opencv_blobs(trimmed, case.caffemodel, case_input(case))
    worst = assert_matches_caffe(case, got, skip=OPENCV_UNSUPPORTED["fork_layers"])
    assert worst <= case.tolerance
    assert {"norm_ch", "norm_all", "permute", "hswish", "hsig", "mbox_conf_flatten"} <= set(got)


def test_opencv_refusals_match_the_measured_opencv_check():
    """Every type the fixture's OpenCV run got wrong or could not run is refused by name; every
    type it got right is not refused (in the forms the fixture has)."""
    case = load_case("bvlc_layers")
    net = read_net(case.prototxt)
    refused = {row.split("'")[1] for row in references.opencv_deviations(net, case.prototxt)}
    measured = case.info["opencv_check"]["per_layer"]
    wrong = {name for name, row in measured.items() if not row.get("inside_tolerance")}
    assert refused == wrong - {"silence"}  # no top to compare: OpenCV runs it


@pytest.mark.parametrize("layer", ["log_10", "log_e", "mvn_ac"])
def test_opencv_log_and_mvn_limitations_are_real(layer, tmp_path, monkeypatch):
    """Without the guard OpenCV's Log and MVN (eps 1e-3) are off: the refusal protects it."""
    case = load_case("bvlc_layers")
    drop = [n for n in OPENCV_UNSUPPORTED["bvlc_layers"] if n not in ("log_10", "log_e", "mvn_ac")]
    trimmed = without_layers(case, drop, tmp_path)
    monkeypatch.setattr(references, "OPENCV_DEVIATIONS", ())
    got = opencv_blobs(trimmed, case.caffemodel, case_input(case), [layer, "mvn"])
    assert rel_error(got["mvn"], case.blobs["mvn"]) < case.tolerance
    assert not rel_error(got[layer], case.blobs[layer]) <= 10 * case.tolerance  # NaN: also off


def test_opencv_swish_ignores_beta(tmp_path, monkeypatch):
    """Swish (BVLC master, field 147): OpenCV runs it with beta = 1 whatever beta says, so a
    beta other than 1 is refused, and beta 1 is compared."""
    prototxt = tmp_path / "swish.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        "input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }\n"
        'layer { name: "swish" type: "Swish" bottom: "data" top: "swish" }\n'
        'layer { name: "swish_b" type: "Swish" bottom: "data" top: "swish_b" '
        "swish_param { beta: 1.7 } }\n"
    )
    caffemodel = tmp_path / "swish.caffemodel"
    write_caffemodel(read_net(prototxt), caffemodel)
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    with pytest.raises(
        ConverterError, match=r"'swish_b' \(Swish: beta other than 1, which OpenCV ignores"
    ):
        opencv_blobs(prototxt, caffemodel, {"data": x})
    monkeypatch.setattr(references, "OPENCV_DEVIATIONS", ())
    got = opencv_blobs(prototxt, caffemodel, {"data": x})
    np.testing.assert_allclose(got["swish"], x / (1 + np.exp(-x)), rtol=1e-6, atol=1e-7)
    assert np.abs(got["swish_b"] - x / (1 + np.exp(-1.7 * x))).max() > 0.1


def test_opencv_transpose_limitation_is_real(tmp_path, monkeypatch):
    """Without the guard OpenCV's ip_t is far off: the refusal protects the verdict."""
    case = load_case("conv_variants")
    monkeypatch.setattr(references, "OPENCV_DEVIATIONS", ())
    got = opencv_blobs(case.prototxt, case.caffemodel, case_input(case), ["ip_t", "ip_4d"])
    assert rel_error(got["ip_4d"], case.blobs["ip_4d"]) < case.tolerance
    assert rel_error(got["ip_t"], case.blobs["ip_t"]) > 0.1


def test_opencv_unsupported_layer_type_is_named_from_opencv_error(tmp_path, monkeypatch):
    case = load_case("bn_variants")
    monkeypatch.setattr(references, "OPENCV_DEVIATIONS", ())
    with pytest.raises(ConverterError, match=r"does not support layer 'bias' \(Bias\)"):
        opencv_blobs(case.prototxt, case.caffemodel, case_input(case))
    prototxt = tmp_path / "threshold.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }\n"
        'layer { name: "thr" type: "Threshold" bottom: "data" top: "thr" }\n'
    )
    write_caffemodel(read_net(prototxt), tmp_path / "threshold.caffemodel")
    with pytest.raises(ConverterError, match=r"does not support layer 'thr' \(Threshold\)"):
        opencv_blobs(prototxt, tmp_path / "threshold.caffemodel", {"data": np.ones((1, 2, 3, 3))})


def test_opencv_multi_top_layer_and_in_place_on_second_top(tmp_path):
    prototxt = tmp_path / "slice.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        "input_param { shape { dim: 2 dim: 6 dim: 3 dim: 3 } } }\n"
        'layer { name: "sl" type: "Slice" bottom: "data" top: "a" top: "b" '
        "slice_param { axis: 1 slice_point: 2 } }\n"
        'layer { name: "relu_b" type: "ReLU" bottom: "b" top: "b" }\n'
        'layer { name: "sig_a" type: "Sigmoid" bottom: "a" top: "sa" }\n'
    )
    caffemodel = tmp_path / "slice.caffemodel"
    write_caffemodel(read_net(prototxt), caffemodel)
    x = np.random.default_rng(0).normal(size=(2, 6, 3, 3)).astype(np.float32)
    got = opencv_blobs(prototxt, caffemodel, {"data": x})
    assert list(got) == ["data", "a", "b", "sa"]
    np.testing.assert_array_equal(got["a"], x[:, :2])
    np.testing.assert_array_equal(got["b"], np.maximum(x[:, 2:], 0))  # after the in-place ReLU
    np.testing.assert_allclose(got["sa"], 1 / (1 + np.exp(-x[:, :2])), rtol=1e-6)


def test_opencv_argument_errors():
    case = load_case("pool_ceil")
    with pytest.raises(ConverterError, match="no blob nonexistent"):
        opencv_blobs(case.prototxt, case.caffemodel, case_input(case), ["nonexistent"])
    with pytest.raises(ConverterError, match="no value given for input blob data"):
        opencv_blobs(case.prototxt, case.caffemodel, {})
    with pytest.raises(ConverterError, match="'max_global' is not an input blob"):
        opencv_blobs(case.prototxt, case.caffemodel, {"data": case.input, "max_global": 0})


def test_opencv_missing_or_too_new_is_a_clear_error(monkeypatch):
    case = load_case("pool_ceil")
    monkeypatch.setattr(cv2, "__version__", "5.0.0")
    with pytest.raises(ConverterError, match="needs OpenCV 4"):
        opencv_blobs(case.prototxt, case.caffemodel, case_input(case))
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ConverterError, match="OpenCV is not available"):
        opencv_blobs(case.prototxt, case.caffemodel, case_input(case))


@pytest.mark.slow
@pytest.mark.parametrize("name", shared_cases())
def test_opencv_matches_caffe_on_shared_fixture(name, tmp_path):
    case = shared_case(name)
    unsupported = OPENCV_UNSUPPORTED.get(name, [])
    prototxt = without_layers(case, unsupported, tmp_path) if unsupported else case.prototxt
    got = opencv_blobs(prototxt, case.caffemodel, case_input(case))
    assert_matches_caffe(case, got, skip={"bias", "bn_batchstats", "ip_t", *unsupported})


@pytest.mark.slow
def test_opencv_matches_every_blob_of_resnet50_w8():
    """blobs_all.npz holds all 74 blobs (every in-place chain's final value)."""
    case = shared_case("resnet50_w8")
    if not (case.folder / "blobs_all.npz").is_file():
        pytest.skip("needs ../shared/fixtures/resnet50_w8/blobs_all.npz")
    with np.load(case.folder / "blobs_all.npz") as data:
        everything = dict(data)
    got = opencv_blobs(case.prototxt, case.caffemodel, case_input(case))
    assert set(got) == set(everything)
    for name, ref in everything.items():
        assert rel_error(got[name], ref) <= case.tolerance, name


def test_opencv_reads_a_v1_layers_net():
    case = load_case("legacy_formats")
    x = np.load(case.folder / "input_v1.npy")
    got = opencv_blobs(case.folder / "v1.prototxt", case.folder / "v1.caffemodel", {"data": x})
    with np.load(case.folder / "blobs_v1.npz") as data:
        for name in data.files:
            assert rel_error(got[name], data[name]) <= case.tolerance, name


def test_edge_case_list_is_covered():
    assert set(EDGE_CASES) == set(OPENCV_UNSUPPORTED)


# ----------------------------------------------------------------------------- pycaffe


class FakeBlob:
    def __init__(self, shape):
        self.data = np.zeros(shape, dtype=np.float32)

    def reshape(self, *shape):
        self.data = np.zeros(shape, dtype=np.float32)


class FakeNet:
    """Mimics pycaffe's Net: double = 2 * data, then an in-place 'ReLU(x - 1)' on double."""

    created: list = []

    def __init__(self, prototxt, weights, phase):
        FakeNet.created.append((prototxt, weights, phase))
        self.inputs = ["data"]
        self.blobs = {"data": FakeBlob((1, 2, 2, 2)), "double": FakeBlob((1, 2, 2, 2))}
        self.reshaped = False

    def reshape(self):
        self.blobs["double"].reshape(*self.blobs["data"].data.shape)
        self.reshaped = True

    def forward(self):
        assert self.reshaped
        self.blobs["double"].data[...] = np.maximum(2 * self.blobs["data"].data - 1, 0)
        return {"double": self.blobs["double"].data}


def fake_caffe_module() -> types.ModuleType:
    module = types.ModuleType("caffe")
    module.TEST = 1
    module.Net = FakeNet
    module.set_mode_cpu = lambda: None
    return module


def test_caffe_blobs_wiring_with_a_fake_pycaffe(monkeypatch):
    monkeypatch.setitem(sys.modules, "caffe", fake_caffe_module())
    FakeNet.created.clear()
    x = np.arange(2 * 2 * 3 * 3, dtype=np.float64).reshape(2, 2, 3, 3) - 10
    got = caffe_blobs("net.prototxt", "net.caffemodel", {"data": x})
    assert FakeNet.created == [("net.prototxt", "net.caffemodel", 1)]
    assert list(got) == ["data", "double"]
    assert got["data"].shape == (2, 2, 3, 3) and got["data"].dtype == np.float32
    np.testing.assert_array_equal(got["double"], np.maximum(2 * x - 1, 0))
    only = caffe_blobs("net.prototxt", "net.caffemodel", {"data": x}, ["double"])
    assert list(only) == ["double"]
    with pytest.raises(ConverterError, match="no blob prob"):
        caffe_blobs("net.prototxt", "net.caffemodel", {"data": x}, ["prob"])
    with pytest.raises(ConverterError, match="no input blob 'image'"):
        caffe_blobs("net.prototxt", "net.caffemodel", {"image": x})


def test_caffe_blobs_copies_out_of_caffe_memory(monkeypatch):
    monkeypatch.setitem(sys.modules, "caffe", fake_caffe_module())
    x = np.ones((1, 2, 2, 2))
    got = caffe_blobs("n.prototxt", "n.caffemodel", {"data": x})
    got["double"][...] = -5  # must not write into Caffe's blob (or vice versa)
    again = caffe_blobs("n.prototxt", "n.caffemodel", {"data": x})
    assert again["double"].max() == 1


def test_caffe_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "caffe", None)
    with pytest.raises(ConverterError, match="pycaffe is not available"):
        caffe_blobs("n.prototxt", "n.caffemodel", {"data": np.ones(1)})


def test_opencv_that_cannot_serve_is_refused_in_one_line(monkeypatch):
    """OpenCV 5 (another importer) and no OpenCV at all: ConverterError saying what to
    install, before any net is read (verify --reference auto then skips it, saying why)."""
    case = load_case("pool_ceil")
    monkeypatch.setattr(cv2, "__version__", "5.1.0")
    with pytest.raises(ConverterError, match=r"OpenCV 5\.1\.0 is installed; .* needs OpenCV 4"):
        opencv_blobs(case.prototxt, case.caffemodel, case_input(case))
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ConverterError, match=r"OpenCV is not available .*caffe2torch\[opencv\]"):
        opencv_blobs(case.prototxt, case.caffemodel, case_input(case), isolated=True)


# ----------------------------------------------------------------------------- saved blobs


def test_saved_blobs_reads_fixture_npz():
    case = load_case("resnet18_w8")
    got = saved_blobs(case.folder / "blobs.npz")
    assert list(got) == list(case.blobs)
    np.testing.assert_array_equal(got["fc1000"], case.blobs["fc1000"])


def test_saved_blobs_bad_files(tmp_path):
    with pytest.raises(ConverterError, match="no such file"):
        saved_blobs(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ConverterError, match="junk.npz: not a readable .npz"):
        saved_blobs(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(ConverterError, match="found a single array"):
        saved_blobs(tmp_path / "single.npy")
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(ConverterError, match="holds no blobs"):
        saved_blobs(tmp_path / "empty.npz")
    np.savez(tmp_path / "text.npz", conv1=np.array(["a", "b"]))
    with pytest.raises(ConverterError, match="blob 'conv1' has dtype"):
        saved_blobs(tmp_path / "text.npz")


# ----------------------------------------------------------------------------- dump script

DUMP_SCRIPT = ROOT / "examples" / "dump_caffe_blobs.py"


def load_dump_script():
    spec = importlib.util.spec_from_file_location("dump_caffe_blobs", DUMP_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dump_script_does_not_import_the_converter_package():
    tree = ast.parse(DUMP_SCRIPT.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {
        "__future__",
        "argparse",
        "os",
        "sys",
        "tempfile",
        "zipfile",
        "numpy",
        "caffe",
    }
    assert "converter" not in imported


def test_dump_script_arguments():
    dump = load_dump_script()
    args = dump.parse_args(["d.prototxt", "m.caffemodel", "--input", "x.npy", "-o", "b.npz"])
    assert (args.prototxt, args.caffemodel, args.input, args.output) == (
        "d.prototxt",
        "m.caffemodel",
        ["x.npy"],
        "b.npz",
    )
    args = dump.parse_args(["d", "m", "--input", "data=a.npy", "--input", "im=b.npy", "-o", "o"])
    assert args.input == ["data=a.npy", "im=b.npy"] and args.seed == 0
    with pytest.raises(SystemExit):
        dump.parse_args(["d.prototxt", "m.caffemodel"])  # -o is required


def test_dump_script_writes_every_blob_and_the_input(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "caffe", fake_caffe_module())
    dump = load_dump_script()
    x = np.random.default_rng(0).normal(size=(3, 2, 4, 4)).astype(np.float32)
    np.save(tmp_path / "input.npy", x)
    out = tmp_path / "blobs.npz"
    argv = ["d.prototxt", "m.caffemodel", "--input", str(tmp_path / "input.npy"), "-o", str(out)]
    assert dump.main(argv) == 0
    blobs = saved_blobs(out)  # the format verify reads
    assert list(blobs) == ["data", "double"]
    np.testing.assert_array_equal(blobs["data"], x)
    np.testing.assert_array_equal(blobs["double"], np.maximum(2 * x - 1, 0))
    assert all(v.dtype == np.float32 for v in blobs.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs.npz", "input.npy"]


def test_dump_script_named_input_noise_default_and_odd_blob_names(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "caffe", fake_caffe_module())
    dump = load_dump_script()
    blobs = dump.dump_blobs("d.prototxt", "m.caffemodel", [], seed=3)
    expected = np.random.default_rng(3).normal(0, 50, size=(1, 2, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(blobs["data"], expected)
    with pytest.raises(SystemExit, match="'image' is not an input blob"):
        dump.dump_blobs("d.prototxt", "m.caffemodel", ["image=x.npy"])
    dump.save_npz({"file": np.ones(2), "res2a/branch1": np.zeros(1)}, str(tmp_path / "o.npz"))
    assert sorted(saved_blobs(tmp_path / "o.npz")) == ["file", "res2a/branch1"]


# ----------------------------------------------------------------------------- OpenCV crashes

# A small SSD head whose DetectionOutput has keep_top_k -1 (Caffe's "no limit"): OpenCV 4.14
# writes past a buffer there (valgrind: invalid writes in cv2), and the process dies later.
# The two tests below crash child processes on purpose, so each run of them leaves kernel
# log lines (dmesg: a segfault in cv2, libpython or protobuf's _message): not a flake.
SSD_KEEP_ALL = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 8 dim: 6 dim: 7 } } }
layer { name: "loc" type: "Convolution" bottom: "data" top: "loc" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "data" top: "conf" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }
layer { name: "conf_reshape" type: "Reshape" bottom: "conf_flat" top: "conf_reshape" reshape_param { shape { dim: 0 dim: -1 dim: 4 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax" softmax_param { axis: 2 } }
layer { name: "conf_sflat" type: "Flatten" bottom: "conf_softmax" top: "conf_sflat" }
layer { name: "prior" type: "PriorBox" bottom: "data" bottom: "data" top: "prior" prior_box_param { min_size: 3 max_size: 7 aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
layer { name: "det" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_sflat" bottom: "prior" top: "det" detection_output_param { num_classes: 4 share_location: true background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 40 } code_type: CENTER_SIZE keep_top_k: -1 confidence_threshold: 0.01 } }
"""  # noqa: E501


@pytest.fixture
def ssd_keep_all(tmp_path):
    from conftest import write_net

    return write_net(tmp_path, "ssd_keep_all", SSD_KEEP_ALL)


def test_opencv_in_a_child_process_turns_a_crash_into_an_error(ssd_keep_all, monkeypatch):
    """The table refuses every DetectionOutput; without it, OpenCV's crash on this net is
    an error naming the signal, and this process goes on (where it ran in-process, the
    crash took the test run down)."""
    prototxt, caffemodel = ssd_keep_all
    x = {"data": np.random.default_rng(0).normal(0, 3, (1, 8, 6, 7)).astype(np.float32)}
    with pytest.raises(ConverterError, match="corrupts its memory with keep_top_k -1"):
        opencv_blobs(prototxt, caffemodel, x, isolated=True)
    monkeypatch.setattr(references, "OPENCV_DEVIATIONS", ())
    with pytest.raises(ConverterError) as error:
        opencv_blobs(prototxt, caffemodel, x, isolated=True)
    assert str(error.value).startswith(f"{prototxt}: OpenCV crashed running this net (SIG"), (
        error.value
    )
    assert "not of the conversion: use --reference numpy" in str(error.value)
    # what runs fine comes back as in-process, and the child's refusals keep their words
    assert (
        opencv_blobs(prototxt, caffemodel, x, ["conf_sflat"], isolated=True)["conf_sflat"].tobytes()
        == opencv_blobs(prototxt, caffemodel, x, ["conf_sflat"])["conf_sflat"].tobytes()
    )
    case = load_case("bn_variants")
    with pytest.raises(ConverterError, match=r"does not support layer 'bias' \(Bias\)"):
        opencv_blobs(case.prototxt, case.caffemodel, case_input(case), isolated=True)


def test_verify_survives_an_opencv_crash(ssd_keep_all, tmp_path):
    """verify runs OpenCV in a child process: with the table emptied (as for a crash it does
    not know yet), --reference opencv ends in one line, auto falls back to numpy and says
    why. Run in a fresh interpreter, so that code running OpenCV in-process fails here
    (killed by the signal) instead of taking the test run with it."""
    import subprocess

    prototxt, caffemodel = ssd_keep_all
    script = (
        "import sys; from converter import references; references.OPENCV_DEVIATIONS = (); "
        "from converter.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    report = tmp_path / "report.json"
    runs = {}
    for reference in ("opencv", "auto"):
        argv = ["verify", str(prototxt), str(caffemodel), "--reference", reference]
        argv += ["--json", str(report)] if reference == "auto" else []
        runs[reference] = subprocess.run(
            [sys.executable, "-c", script, *argv],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
            cwd=tmp_path,
        )
    opencv, auto = runs["opencv"], runs["auto"]
    assert opencv.returncode == 2, opencv
    lines = opencv.stderr.splitlines()
    assert len(lines) == 1 and "OpenCV crashed running this net (SIG" in lines[0], lines
    assert auto.returncode == 0, auto
    import json

    choice = json.loads(report.read_text())["reference_choice"]
    assert "opencv skipped: OpenCV crashed running this net (SIG" in choice, choice
