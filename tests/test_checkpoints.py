"""detectron2 and mmdet checkpoints: key sets, exact bias folding, the printed settings and
the measured stem-pool difference.

Neither detectron2 nor mmdet installs here (CUDA builds, or torchvision at import), so
these tests check the semantics ../shared/ECOSYSTEM.md documents from their sources: key
names, FrozenBN's ``x * w / sqrt(var + eps) + (b - mean * w / sqrt(var + eps))`` with
eps 1e-5, torchvision-named BatchNorm2d for mmdet, and a stem max-pool of pad 1, floor
mode. Where mmpretrain's backbone can be imported, the last test loads the checkpoint
into the real class.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import converter
from conftest import load_case, rel_error
from converter.checkpoints import folded_arrays
from converter.cli import main
from converter.resnet import CaffeResNet, ResNetConfig, recognize

R50 = load_case("resnet50_w8_calibrated")
R18 = load_case("resnet18_w8")


def convert(case, path: Path, *extra: str) -> int:
    return main(["convert", str(case.prototxt), str(case.caffemodel), "-o", str(path), *extra])


def expected_detectron2_keys(block: str, layers: list[int]) -> set[str]:
    """detectron2's ResNet keys, written out from ECOSYSTEM.md's description."""
    norm = ("weight", "bias", "running_mean", "running_var")
    keys = {"stem.conv1.weight", *(f"stem.conv1.norm.{n}" for n in norm)}
    convs = 2 if block == "basic" else 3
    for s, blocks in enumerate(layers, start=2):
        for i in range(blocks):
            for k in range(1, convs + 1):
                keys.add(f"res{s}.{i}.conv{k}.weight")
                keys.update(f"res{s}.{i}.conv{k}.norm.{n}" for n in norm)
            if i == 0 and (s > 2 or block == "bottleneck"):
                keys.add(f"res{s}.{i}.shortcut.weight")
                keys.update(f"res{s}.{i}.shortcut.norm.{n}" for n in norm)
    return keys | {"linear.weight", "linear.bias"}


@pytest.fixture(scope="module")
def r50_pkl(tmp_path_factory):
    path = tmp_path_factory.mktemp("d2") / "r50.pkl"
    assert convert(R50, path) == 0
    return path


@pytest.mark.parametrize(
    "case, block, layers",
    [(R50, "bottleneck", [3, 4, 6, 3]), (R18, "basic", [2, 2, 2, 2])],
    ids=["resnet50", "resnet18"],
)
def test_detectron2_pickle_keys(case, block, layers, tmp_path):
    path = tmp_path / "model.pkl"
    assert convert(case, path) == 0
    with open(path, "rb") as handle:
        payload = pickle.load(handle, encoding="latin1")  # as detectron2 reads it
    assert set(payload) == {"model", "__author__", "matching_heuristics"}
    assert payload["matching_heuristics"] is True
    assert set(payload["model"]) == expected_detectron2_keys(block, layers)
    assert all(isinstance(v, np.ndarray) for v in payload["model"].values())


def test_conv1_bias_is_folded_exactly_into_running_mean(r50_pkl):
    net = converter.read_net(R50.prototxt, R50.caffemodel)
    layers = {layer.name: layer for layer in net.layers}
    mean, _, factor = (b.astype(np.float64) for b in layers["bn_conv1"].blobs)
    bias = layers["conv1"].blobs[1].astype(np.float64)
    assert np.any(bias != 0)  # the fixture's conv1 really has a bias to fold
    with open(r50_pkl, "rb") as handle:
        state = pickle.load(handle)["model"]
    expected = (mean / factor[0] - bias).astype(np.float32)
    assert np.array_equal(state["stem.conv1.norm.running_mean"], expected)
    assert np.array_equal(state["stem.conv1.weight"], layers["conv1"].blobs[0])
    assert not any(key.endswith("conv1.bias") for key in state)


def test_detectron2_stem_with_frozen_bn_equals_caffe_conv1(r50_pkl):
    """FrozenBN semantics (eps 1e-5) on the bias-free conv reproduce Caffe's conv1 blob."""
    with open(r50_pkl, "rb") as handle:
        state = {k: torch.from_numpy(v).double() for k, v in pickle.load(handle)["model"].items()}
    x = torch.from_numpy(R50.input).double()
    y = nn.functional.conv2d(x, state["stem.conv1.weight"], stride=2, padding=3)
    scale = state["stem.conv1.norm.weight"] * (state["stem.conv1.norm.running_var"] + 1e-5).rsqrt()
    shift = state["stem.conv1.norm.bias"] - state["stem.conv1.norm.running_mean"] * scale
    y = torch.relu(y * scale[None, :, None, None] + shift[None, :, None, None])
    assert rel_error(y.numpy(), R50.blobs["conv1"]) <= R50.tolerance


def test_eps_is_folded_into_running_var():
    net = converter.read_net(R50.prototxt, R50.caffemodel)
    config = recognize(net)
    from converter.resnet import resnet_arrays

    arrays = resnet_arrays(net, config)
    odd = dataclasses.replace(config, bn_eps=1e-3)
    folded = folded_arrays(odd, arrays)
    var = arrays["layer1.0.bn1.running_var"]
    assert np.allclose(
        np.sqrt(folded["layer1.0.bn1.running_var"].astype(np.float64) + 1e-5),
        np.sqrt(var + 1e-3),
        rtol=1e-7,
    )


def _framework_resnet(state: dict, config: ResNetConfig, framework_pool: bool) -> CaffeResNet:
    """ECOSYSTEM.md's style='caffe' ResNet with torchvision names: CaffeResNet without conv
    biases, BN eps 1e-5, and (framework_pool) their stem max-pool."""
    plain = dataclasses.replace(config, conv_bias=[], bn_eps=1e-5, bn_eps_overrides={})
    model = CaffeResNet(plain)
    model.load_state_dict(state, strict=True)
    if framework_pool:
        model.maxpool = nn.MaxPool2d(3, 2, padding=1)
    return model.eval()


def test_mmdet_checkpoint_and_printed_settings(tmp_path, capsys):
    path = tmp_path / "r50.pth"
    args = ["--format", "mmdet", "--input", str(R50.folder / "input.npy")]
    args += ["--mean", "103.53,116.28,123.675"]
    assert convert(R50, path, *args) == 0
    out = capsys.readouterr().out
    payload = torch.load(path, weights_only=True)  # how mmengine reads it
    assert set(payload) == {"state_dict", "meta"}
    config = recognize(converter.read_net(R50.prototxt))
    reference = converter.load(R50.prototxt, R50.caffemodel)
    assert set(payload["state_dict"]) == set(reference.state_dict()) - {"conv1.bias"}
    for setting in ("depth=50", "base_channels=8", "style='caffe'", "requires_grad=False"):
        assert setting in out
    assert "norm_eval=True" in out and "std=[1.0, 1.0, 1.0], bgr_to_rgb=False" in out
    assert "mean=[103.530, 116.280, 123.675]" in out
    assert "pad 1, floor mode" in out and "pad 0, ceil mode" in out

    # With Caffe's pool the checkpoint computes Caffe's blobs under the documented semantics.
    x = torch.from_numpy(R50.input)
    names = ["res5c", "fc1000"]
    with torch.no_grad():
        exact = _framework_resnet(payload["state_dict"], config, False).forward_blobs(x, names)
        theirs = _framework_resnet(payload["state_dict"], config, True).forward_blobs(x, names)
    for name in names:
        assert rel_error(exact[name].numpy(), R50.blobs[name]) <= R50.tolerance
    # ... and the printed numbers are what the frameworks' pool changes.
    printed = dict(re.findall(r"(res5c|fc1000) (\d\.\d+e[+-]\d+)", out))
    for name in names:
        measured = rel_error(theirs[name].numpy(), exact[name].numpy())
        assert measured > 1e-2  # the difference is real, not rounding
        assert float(printed[name]) == pytest.approx(measured, rel=1e-2)


def test_detectron2_settings_printed(tmp_path, capsys):
    assert convert(R50, tmp_path / "r50.pkl") == 0
    out = capsys.readouterr().out
    for setting in (
        "MODEL.RESNETS.DEPTH: 50",
        "MODEL.RESNETS.STRIDE_IN_1X1: True",
        'MODEL.RESNETS.NORM: "FrozenBN"',
        "MODEL.RESNETS.WIDTH_PER_GROUP: 8",
        'INPUT.FORMAT: "BGR"',
        "MODEL.PIXEL_STD: [1.0, 1.0, 1.0]",
        "Folded exactly: the bias of conv1",
    ):
        assert setting in out, setting
    assert re.search(r"res5c \d\.\d\de[+-]\d\d, fc1000 \d\.\d\de[+-]\d\d", out)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "detectron2", "--generic"], "--generic was asked for"),
        (["--format", "mmdet", "--fuse-bn"], "folded"),
        (["--format", "detectron2", "--verify"], "--verify runs what caffe2torch can load"),
        (["--format", "detectron2", "--tol", "1e-3"], "--verify runs what caffe2torch can load"),
    ],
)
def test_refusals_write_nothing(tmp_path, capsys, extra, message):
    name = "out.pth" if "mmdet" in extra else "out.pkl"
    assert convert(R50, tmp_path / name, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_non_resnet_is_refused(tmp_path, capsys):
    pool = load_case("pool_ceil")
    assert convert(pool, tmp_path / "out.pkl") == 2
    assert "needs a ResNet of Kaiming's form" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _mmpretrain_resnet():
    """mmpretrain's ResNet backbone class, imported without the package's __init__ (which
    needs torchvision); skips when mmpretrain is not installed."""
    spec = importlib.util.find_spec("mmpretrain")
    if spec is None or importlib.util.find_spec("mmcv") is None:
        pytest.skip("mmpretrain (and mmcv) not installed: pip install mmpretrain mmcv-lite")
    root = Path(spec.origin).parent
    for name, folder in [
        ("mmpretrain", root),
        ("mmpretrain.models", root / "models"),
        ("mmpretrain.models.backbones", root / "models" / "backbones"),
    ]:
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
    from mmpretrain.models.backbones.resnet import ResNet

    return ResNet


def test_real_mmpretrain_resnet_loads_the_checkpoint(tmp_path):
    resnet = _mmpretrain_resnet()
    from mmengine.runner.checkpoint import load_checkpoint

    path = tmp_path / "r50.pth"
    assert convert(R50, path, "--format", "mmdet") == 0
    frozen = {"type": "BN", "requires_grad": False}
    model = resnet(
        depth=50, base_channels=8, stem_channels=8, style="caffe", norm_cfg=frozen, out_indices=(3,)
    )
    model.eval()  # (mmpretrain's train() returns None, so eval() cannot be chained)
    load_checkpoint(model, str(path), map_location="cpu", strict=False)
    model.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True)  # Caffe's pool put back
    with torch.no_grad():
        res5c = model(torch.from_numpy(R50.input))[-1]
    assert rel_error(res5c.numpy(), R50.blobs["res5c"]) <= R50.tolerance
