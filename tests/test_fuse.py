"""`convert --fuse-bn`: BatchNorm+Scale folded into convs, still Caffe's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import converter
from conftest import RESNET_CASES, load_case, rel_error
from converter import caffe_pb2
from converter.cli import main


@pytest.fixture(scope="module")
def fused_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fused")
    files = {}
    for name in RESNET_CASES:
        case = load_case(name)
        files[name] = converter.convert(
            case.prototxt, case.caffemodel, folder / f"{name}.safetensors", fuse_bn=True
        )
    return files


@pytest.mark.parametrize("name", RESNET_CASES)
def test_fused_model_matches_caffe_within_case_tolerance(fused_files, name):
    case = load_case(name)
    model = converter.load(fused_files[name])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    ours = converter.blobs(model, case.input)
    for blob, ref in case.blobs.items():
        if blob in ours:
            assert rel_error(ours[blob].numpy(), ref) <= case.tolerance, blob


def test_fused_file_has_no_batchnorm_tensors_and_says_so(fused_files):
    path = fused_files["resnet18_w8"]
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
    assert not any("running_mean" in key or key.startswith("bn1.") for key in keys)
    assert "conv1.bias" in keys and "layer1.0.conv2.bias" in keys
    assert json.loads(metadata["fused_bn"]) is True
    assert json.loads(metadata["config"])["fused_bn"] is True


def test_fused_equals_unfused_up_to_one_float32_rounding(fused_files):
    case = load_case("resnet50_w8_calibrated")
    fused = converter.load(fused_files["resnet50_w8_calibrated"], dtype=torch.float64)
    plain = converter.load(case.prototxt, case.caffemodel, dtype=torch.float64)
    x = torch.from_numpy(case.input).double()
    a, b = converter.blobs(fused, x), converter.blobs(plain, x)
    assert set(a) <= set(b)
    worst = max(rel_error(a[k].numpy(), b[k].numpy()) for k in a)
    assert 0 < worst < 1e-4  # folded weights are rounded to float32 once, nothing more


def test_convert_fuse_bn_then_verify_passes(tmp_path, capsys):
    case = load_case("resnet18_w8")
    out = tmp_path / "fused.safetensors"
    argv = ["convert", str(case.prototxt), str(case.caffemodel), "-o", str(out), "--fuse-bn"]
    assert main([*argv, "--verify", "--reference", "numpy"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_fuse_bn_refuses_a_net_that_is_not_a_resnet(tmp_path, capsys):
    case = load_case("conv_variants")
    out = tmp_path / "x.safetensors"
    argv = ["convert", str(case.prototxt), str(case.caffemodel), "-o", str(out), "--fuse-bn"]
    assert main(argv) == 2
    assert "--fuse-bn" in capsys.readouterr().err
    assert not out.exists()


def test_a_fold_that_overflows_is_reported_by_converted_tensor(tmp_path):
    """Every caffemodel value is finite, yet W * gamma / sqrt(var + eps) exceeds float32:
    the warning names the converted tensor, and the unfused conversion stays silent."""
    case = load_case("resnet18_w8")
    param = caffe_pb2.NetParameter.FromString(case.caffemodel.read_bytes())
    layers = {layer.name: layer for layer in param.layer}
    layers["conv1"].blobs[0].data[0] = 3e38
    layers["bn_conv1"].blobs[1].data[0] = 0.0  # variance
    layers["scale_conv1"].blobs[0].data[0] = 1.0  # gamma: k = 1 / sqrt(eps) ~ 316
    model = tmp_path / "huge.caffemodel"
    model.write_bytes(param.SerializeToString())

    with pytest.warns(converter.NonFiniteWeightsWarning) as caught:
        path = converter.convert(case.prototxt, model, tmp_path / "f.safetensors", fuse_bn=True)
    (warning,) = caught  # no NumPy overflow warning besides it
    assert "converted 'conv1.weight' has 1 Inf" in str(warning.message)
    assert "blob" not in str(warning.message)
    with safe_open(str(path), "np") as handle:
        assert np.isinf(handle.get_tensor("conv1.weight")).sum() == 1

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", converter.NonFiniteWeightsWarning)
        converter.convert(case.prototxt, model, tmp_path / "plain.safetensors")
