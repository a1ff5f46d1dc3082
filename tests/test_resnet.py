"""CaffeResNet, the topology recognizer and the weight mapping against real-Caffe outputs.

Nets without Caffe outputs (renamed, re-wired or generated here) are checked against
``caffe_forward64``: a plain float64 interpreter of the Caffe layers, itself checked against
real Caffe on resnet18_w8.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

from conftest import (
    FIXTURES,
    KAIMING,
    RESNET_CASES,
    SHARED_FIXTURES,
    load_case,
    rel_error,
    shared_case,
    shared_cases,
)
from converter import caffe_pb2, read_net, write_caffemodel
from converter.errors import ConverterError
from converter.io.prototxt import parse_prototxt
from converter.layers import conv_geometry, pool_geometry
from converter.net import Layer, Net, net_from_param
from converter.resnet import (
    CaffeResNet,
    ResNetConfig,
    kaiming_config,
    recognize,
    resnet18_caffe,
    resnet34_caffe,
    resnet50_caffe,
    resnet101_caffe,
    resnet152_caffe,
    resnet_state_dict,
    state_shapes,
)

SHARED_RESNETS = shared_cases("resnet")
BN_FACTOR = np.float32(999.98)


# ----------------------------------------------------------------------------- helpers


def convert(net: Net) -> CaffeResNet:
    config = recognize(net)
    model = CaffeResNet(config)
    model.load_state_dict(resnet_state_dict(net, config), strict=True)
    return model


def blob_errors(model: CaffeResNet, x: np.ndarray, ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative error per reference blob; a blob of the wrong shape counts as infinitely wrong."""
    with torch.no_grad():
        ours = model.forward_blobs(torch.from_numpy(x), list(ref))
    return {
        name: rel_error(ours[name].numpy(), ref[name])
        if tuple(ours[name].shape) == ref[name].shape
        else math.inf
        for name in ref
    }


def caffe_forward64(net: Net, x: np.ndarray) -> dict[str, np.ndarray]:
    """Caffe's forward pass in float64, layer by layer, straight from the Caffe definitions."""
    blobs: dict[str, np.ndarray] = {}
    for layer in net.layers:
        p = layer.param
        w = [np.asarray(b, dtype=np.float64) for b in layer.blobs]
        if layer.type == "Input":
            blobs[layer.tops[0]] = np.asarray(x, dtype=np.float64)
            continue
        v = blobs[layer.bottoms[0]]
        if layer.type == "Convolution":
            cp = p.convolution_param
            _, stride, pad, dilation = conv_geometry(cp, 2, layer.name)
            bias = torch.from_numpy(w[1]) if cp.bias_term else None
            y = F.conv2d(torch.from_numpy(v), torch.from_numpy(w[0]), bias, stride, pad, dilation)
            y = y.numpy()
        elif layer.type == "BatchNorm":
            s = w[2].reshape(-1)[0]
            factor = 0.0 if s == 0 else 1.0 / s
            mean, var = w[0] * factor, w[1] * factor
            eps = float(np.float32(p.batch_norm_param.eps))
            y = (v - mean[:, None, None]) / np.sqrt(var + eps)[:, None, None]
        elif layer.type == "Scale":
            y = v * w[0][:, None, None] + (w[1][:, None, None] if len(w) > 1 else 0.0)
        elif layer.type == "ReLU":
            y = np.where(v > 0, v, v * p.relu_param.negative_slope)
        elif layer.type == "Eltwise":
            y = sum(blobs[b] for b in layer.bottoms)
        elif layer.type == "Pooling":
            y = _pool64(v, p.pooling_param)
        elif layer.type == "InnerProduct":
            flat = v.reshape(v.shape[0], -1)
            weight = w[0].T if p.inner_product_param.transpose else w[0]
            y = flat @ weight.T + (w[1] if p.inner_product_param.bias_term else 0.0)
        elif layer.type == "Softmax":
            e = np.exp(v - v.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        else:
            raise AssertionError(layer.type)
        blobs[layer.tops[0]] = y
    return blobs


def _pool64(v: np.ndarray, pp) -> np.ndarray:
    """Caffe's pooling loops: windows clipped to input + pad for the AVE divisor, then input."""
    n, c, height, width = v.shape
    g = pool_geometry(pp, height, width, "pool")
    out = np.zeros((n, c) + g.output)
    for i in range(g.output[0]):
        for j in range(g.output[1]):
            h0, w0 = i * g.stride[0] - g.pad[0], j * g.stride[1] - g.pad[1]
            h1, w1 = (
                min(h0 + g.kernel[0], height + g.pad[0]),
                min(w0 + g.kernel[1], width + g.pad[1]),
            )
            size = (h1 - h0) * (w1 - w0)
            window = v[:, :, max(h0, 0) : min(h1, height), max(w0, 0) : min(w1, width)]
            if pp.pool == caffe_pb2.PoolingParameter.MAX:
                out[:, :, i, j] = window.max(axis=(2, 3))
            else:
                out[:, :, i, j] = window.sum(axis=(2, 3)) / size
    return out


def save_net(net: Net, folder, name: str) -> Net:
    """Write ``net`` as prototxt + caffemodel and read it back, as a user's files would be."""
    param = caffe_pb2.NetParameter(name=net.name)
    for layer in net.layers:
        param.layer.add().CopyFrom(layer.param)
    prototxt, caffemodel = folder / f"{name}.prototxt", folder / f"{name}.caffemodel"
    prototxt.write_text(text_format.MessageToString(param))
    write_caffemodel(net, caffemodel)
    return read_net(prototxt, caffemodel)


def rewrite(net: Net, in_place: bool = True, bias_everywhere: bool = False, seed: int = 0):
    """A copy of ``net`` with every layer and blob renamed (names that mean nothing).

    ``in_place=False`` gives every layer a fresh top; ``bias_everywhere`` adds random biases
    to every convolution. Returns the new net and {old blob: new blob holding its final value}.
    """
    rng = np.random.RandomState(seed)
    current: dict[str, str] = {}
    layers = []
    for index, layer in enumerate(net.layers):
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(layer.param)
        param.name = f"op_{index:03d}_{rng.randint(1 << 30):08x}"
        del param.bottom[:], param.top[:]
        param.bottom.extend(current[b] for b in layer.bottoms)
        tops = []
        for top in layer.tops:
            if in_place and top in current:
                tops.append(current[top])
            else:
                tops.append(f"t{len(current):03d}_{index}" if in_place else f"v{index:03d}")
            current[top] = tops[-1]
        param.top.extend(tops)
        blobs = [np.array(b) for b in layer.blobs]
        if (
            bias_everywhere
            and layer.type == "Convolution"
            and not param.convolution_param.bias_term
        ):
            param.convolution_param.bias_term = True
            blobs.append(rng.normal(0, 0.5, blobs[0].shape[0]).astype(np.float32))
        layers.append(Layer(param.name, layer.type, list(param.bottom), tops, param, blobs))
    return Net(net.name + "_renamed", layers, net.source), current


def resnet_prototxt(
    stages=((1, 4, 16, 1), (2, 6, 20, 2), (1, 8, 24, 2), (1, 10, 28, 2)),
    block: str = "bottleneck",
    stem=(6, 3, 2, 1),
    maxpool=(3, 2, 0),
    pool5: str = "global AVE",
    size: int = 40,
    batch: int = 2,
    in_place: bool = True,
    stride_in_1x1: bool = True,
    header: str = "input",
    classes: int = 5,
    softmax: bool = True,
    fc_transpose: bool = False,
) -> str:
    """A ResNet prototxt with names in the conv_stage0_block0_branch2a style.

    ``stages``: (blocks, width, out_channels, stride) each; ``stem``: (channels, kernel,
    stride, pad); ``pool5``: "global AVE", "global MAX" or "AVE k [s [p]]" / "MAX k [s [p]]".
    """
    lines: list[str] = []
    if header == "legacy":
        lines.append(
            f'input: "img" input_dim: {batch} input_dim: 3 input_dim: {size} input_dim: {size}'
        )
    else:
        lines.append(
            f'layer {{ name: "img_in" type: "Input" top: "img" input_param {{ shape {{ '
            f"dim: {batch} dim: 3 dim: {size} dim: {size} }} }} }}"
        )

    def layer(name: str, kind: str, bottoms: list[str], top: str, params: str = "") -> str:
        bottom = " ".join(f'bottom: "{b}"' for b in bottoms)
        lines.append(f'layer {{ name: "{name}" type: "{kind}" {bottom} top: "{top}" {params} }}')
        return top

    def follow(name: str, kind: str, bottom: str, params: str = "") -> str:
        return layer(name, kind, [bottom], bottom if in_place else f"{name}_out", params)

    def unit(name: str, bottom: str, cout: int, k: int, s: int, p: int, relu: bool, bias=False):
        conv = (
            f"convolution_param {{ num_output: {cout} kernel_size: {k} stride: {s} pad: {p} "
            f"{'' if bias else 'bias_term: false'} }}"
        )
        top = layer(name, "Convolution", [bottom], name, conv)
        top = follow(f"{name}_bn", "BatchNorm", top)
        top = follow(f"{name}_scale", "Scale", top, "scale_param { bias_term: true }")
        return follow(f"{name}_relu", "ReLU", top) if relu else top

    c, k, s, p = stem
    x = unit("conv_stem", "img", c, k, s, p, relu=True, bias=True)
    mk, ms, mp = maxpool
    x = layer(
        "pool_stem",
        "Pooling",
        [x],
        "pool_stem",
        f"pooling_param {{ pool: MAX kernel_size: {mk} stride: {ms} pad: {mp} }}",
    )
    cin = c
    for si, (blocks, width, cout, stride) in enumerate(stages):
        for bi in range(blocks):
            name = f"stage{si}_block{bi}"
            st = stride if bi == 0 else 1
            shortcut = x
            if bi == 0 and (st != 1 or cin != cout):
                shortcut = unit(f"conv_{name}_branch1", x, cout, 1, st, 0, relu=False)
            if block == "bottleneck":
                s1, s3 = (st, 1) if stride_in_1x1 else (1, st)
                y = unit(f"conv_{name}_branch2a", x, width, 1, s1, 0, relu=True)
                y = unit(f"conv_{name}_branch2b", y, width, 3, s3, 1, relu=True)
                y = unit(f"conv_{name}_branch2c", y, cout, 1, 1, 0, relu=False)
            else:
                y = unit(f"conv_{name}_branch2a", x, cout, 3, st, 1, relu=True)
                y = unit(f"conv_{name}_branch2b", y, cout, 3, 1, 1, relu=False)
            x = layer(f"sum_{name}", "Eltwise", [shortcut, y], f"sum_{name}")
            x = follow(f"sum_{name}_relu", "ReLU", x)
            cin = cout
    if pool5.startswith("global"):
        params = f"pooling_param {{ pool: {pool5.split()[1]} global_pooling: true }}"
    else:
        mode, kernel, stride, pad = (pool5.split() + ["1", "0"])[:4]
        params = (
            f"pooling_param {{ pool: {mode} kernel_size: {kernel} stride: {stride} pad: {pad} }}"
        )
    x = layer("pool_head", "Pooling", [x], "pool_head", params)
    transpose = "transpose: true" if fc_transpose else ""
    x = layer(
        "classifier",
        "InnerProduct",
        [x],
        "logits",
        f"inner_product_param {{ num_output: {classes} {transpose} }}",
    )
    if softmax:
        layer("probabilities", "Softmax", [x], "probabilities")
    return "\n".join(lines)


def random_net(text: str, seed: int = 0) -> Net:
    """Parse ``text`` and give every layer random weights (BN stored x999.98, as Caffe does)."""
    rng = np.random.RandomState(seed)
    net = net_from_param(parse_prototxt(text, "generated.prototxt"), "generated.prototxt")
    for layer, shapes in zip(net.layers, net.shapes()):
        blobs = []
        for index, shape in enumerate(shapes.param_shapes or []):
            if layer.type == "BatchNorm":
                value = [rng.normal(0, 0.3, shape), rng.uniform(0.5, 2, shape), [1.0]][index]
                blobs.append((np.asarray(value) * BN_FACTOR).reshape(shape))
            elif layer.type == "Scale":
                blobs.append(
                    rng.uniform(0.5, 1.5, shape) if index == 0 else rng.normal(0, 0.2, shape)
                )
            elif index == 0:
                fan_in = int(np.prod(shape[1:])) if layer.type == "Convolution" else min(shape)
                blobs.append(rng.normal(0, 1.4 / math.sqrt(fan_in), shape))
            else:
                blobs.append(rng.normal(0, 0.3, shape))
        layer.blobs = [np.asarray(b, dtype=np.float32) for b in blobs]
    return net


def assert_matches_reference(model: CaffeResNet, net: Net, x: np.ndarray, tol: float = 2e-5):
    """Every blob of the net (as Caffe names it) within ``tol`` of the float64 interpreter."""
    ref = caffe_forward64(net, x)
    assert set(model.blob_taps) == set(ref), "the model should expose every Caffe blob"
    errors = blob_errors(model, x.astype(np.float32), ref)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tol, (worst, errors[worst])


# ----------------------------------------------------------------------------- real Caffe


def check_case(name: str, root=FIXTURES) -> dict[str, float]:
    case = load_case(name, root)
    net = read_net(case.prototxt, case.caffemodel)
    model = convert(net)
    ref = case.blobs
    errors = blob_errors(model, case.input, ref)
    assert set(ref) <= set(model.blob_taps)
    bad = {k: v for k, v in errors.items() if not v <= case.tolerance}
    assert not bad, f"{name}: blobs over tolerance {case.tolerance}: {bad}"
    if "calibrated" in name:
        with torch.no_grad():
            prob = model(torch.from_numpy(case.input)).numpy()
        assert np.array_equal(prob.argmax(1), ref["prob"].argmax(1))
    return errors


@pytest.mark.parametrize("name", RESNET_CASES)
def test_bundled_resnets_match_caffe(name):
    check_case(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED_RESNETS)
def test_shared_resnets_match_caffe(name):
    shared_case(name)  # skips when ../shared/fixtures is absent
    errors = check_case(name, SHARED_FIXTURES)
    print(f"{name}: worst {max(errors.values()):.2e} at {max(errors, key=errors.get)}")


def test_reference_interpreter_matches_caffe():
    """The float64 interpreter used below agrees with real Caffe, so it is a fair reference."""
    case = load_case("resnet18_w8")
    net = read_net(case.prototxt, case.caffemodel)
    ours = caffe_forward64(net, case.input)
    for name, ref in case.blobs.items():
        assert rel_error(ours[name], ref) <= case.tolerance, name


def test_forward_returns_caffe_output_and_names():
    case = load_case("resnet50_w8_calibrated")
    net = read_net(case.prototxt, case.caffemodel)
    model = convert(net)
    assert model.input_names == ["data"] and model.output_name == "prob"
    assert set(net.blob_names()) == set(model.blob_taps)
    x = torch.from_numpy(case.input)
    with torch.no_grad():
        out = model(x)
        some = model.forward_blobs(x, ["res2a_branch1", "prob", "conv1"])
    assert list(some) == ["res2a_branch1", "prob", "conv1"]
    assert torch.equal(out, some["prob"])
    assert rel_error(out.numpy(), case.blobs["prob"]) <= case.tolerance
    assert not model.training and not model.bn1.training
    with pytest.raises(ConverterError, match="no Caffe blob named 'nope'"):
        model.forward_blobs(x, ["nope"])


def test_every_blob_and_every_layer_output_is_what_caffe_holds():
    """'res2a_branch1' = bn(conv) of the shortcut, 'res2a_branch2a' = relu(bn(conv)), ...,
    and layer by layer: conv1 before BN, after BN (before Scale), after Scale, after ReLU."""
    folder = SHARED_FIXTURES / "resnet50_w8"
    if not (folder / "layer_outputs.npz").exists():
        pytest.skip("needs ../shared/fixtures/resnet50_w8 (every blob, every layer output)")
    case = shared_case("resnet50_w8")
    net = read_net(case.prototxt, case.caffemodel)
    model = convert(net)
    with np.load(folder / "blobs_all.npz") as data:
        ref = dict(data)
    assert set(ref) == set(net.blob_names()) == set(model.blob_taps)
    errors = blob_errors(model, case.input, ref)
    assert max(errors.values()) <= case.tolerance
    with np.load(folder / "layer_outputs.npz") as data:
        after = {key.removeprefix("after:"): value for key, value in data.items()}
    tap_of_layer = dict(
        zip((layer.name for layer in net.layers), (t for t, _ in model.config.blobs))
    )
    wanted = {tap_of_layer[name]: value for name, value in after.items() if name in tap_of_layer}
    assert {"bn1.norm", "bn1", "layer1.0.downsample.1.norm", "layer1.0.add"} <= set(wanted)
    with torch.no_grad():
        ours = model.forward_taps(torch.from_numpy(case.input), list(wanted))
    for tap, value in wanted.items():
        assert rel_error(ours[tap].numpy(), value) <= case.tolerance, tap


# ----------------------------------------------------------------------------- the checks bite


def test_stride_on_the_3x3_fails():
    case = load_case("resnet50_w8_calibrated")
    net = read_net(case.prototxt, case.caffemodel)
    config = dataclasses.replace(recognize(net), stride_in_1x1=False)
    model = CaffeResNet(config)
    model.load_state_dict(resnet_state_dict(net, config))
    errors = blob_errors(model, case.input, case.blobs)
    assert errors["res2c"] <= case.tolerance  # stage 1 has no stride: unchanged
    assert errors["fc1000"] > 100 * case.tolerance and errors["res5c"] > 100 * case.tolerance


def test_ignoring_the_bn_scale_factor_fails():
    case = load_case("resnet18_w8")
    net = read_net(case.prototxt, case.caffemodel)
    config = recognize(net)
    state = resnet_state_dict(net, config)
    for key in state:
        if key.endswith(("running_mean", "running_var")):
            state[key] = state[key] * BN_FACTOR  # the stored moving sums, undivided
    model = CaffeResNet(config)
    model.load_state_dict(state)
    errors = blob_errors(model, case.input, case.blobs)
    assert errors["conv1"] > 100 * case.tolerance and errors["fc1000"] > 100 * case.tolerance


def test_floor_mode_pooling_fails():
    case = load_case("resnet18_w8")
    net = read_net(case.prototxt, case.caffemodel)
    config = recognize(net)
    assert config.maxpool.ceil_mode
    floor = dataclasses.replace(
        config, maxpool=dataclasses.replace(config.maxpool, ceil_mode=False)
    )
    model = CaffeResNet(floor)
    model.load_state_dict(resnet_state_dict(net, config))
    errors = blob_errors(model, case.input, case.blobs)
    assert errors["conv1"] <= case.tolerance
    assert errors["pool1"] == math.inf  # 55x55 instead of Caffe's 56x56
    assert errors["res3b"] > 100 * case.tolerance and errors["fc1000"] > 100 * case.tolerance


# ----------------------------------------------------------------------------- recognizer


def test_kaiming_prototxts_are_the_builders():
    for depth in (50, 101, 152):
        config = recognize(read_net(KAIMING / f"ResNet-{depth}-deploy.prototxt"))
        assert config == kaiming_config(depth), depth
    net = read_net(FIXTURES / "resnet18_w8" / "resnet18_w8.prototxt")
    assert recognize(net) == kaiming_config(18, 10, base_width=8, input_shape=(2, 3, 224, 224))
    resnet34 = SHARED_FIXTURES / "resnet34_w8" / "resnet34_w8.prototxt"
    if resnet34.exists():
        config = kaiming_config(34, 10, base_width=8, input_shape=(2, 3, 224, 224))
        assert recognize(read_net(resnet34)) == config


def test_recognizes_the_structure():
    config = recognize(read_net(KAIMING / "ResNet-101-deploy.prototxt"))
    assert config.block == "bottleneck" and config.layers == [3, 4, 23, 3]
    assert [s.width for s in config.stages] == [64, 128, 256, 512]
    assert [s.out_channels for s in config.stages] == [256, 512, 1024, 2048]
    assert [s.stride for s in config.stages] == [1, 2, 2, 2]
    assert config.stride_in_1x1 and config.softmax and config.num_classes == 1000
    assert config.caffe_layers["layer3.22.bn3"] == ["bn4b22_branch2c", "scale4b22_branch2c"]
    assert dict(map(tuple, config.blobs))["layer2.0.downsample.1"] == "res3a_branch1"


def test_renamed_net_converts_and_matches(tmp_path):
    case = load_case("resnet18_w8")
    original = read_net(case.prototxt, case.caffemodel)
    renamed, names = rewrite(original)
    net = save_net(renamed, tmp_path, "renamed")
    assert not {layer.name for layer in net.layers} & {layer.name for layer in original.layers}
    assert not set(net.blob_names()) & set(original.blob_names())
    config, first = recognize(net), recognize(original)
    plain = {"blobs", "caffe_layers", "input_name", "output_name"}
    for field in dataclasses.fields(ResNetConfig):
        if field.name not in plain:
            assert getattr(config, field.name) == getattr(first, field.name), field.name
    model = convert(net)
    ref = {names[name]: value for name, value in case.blobs.items()}
    assert max(blob_errors(model, case.input, ref).values()) <= case.tolerance


def test_not_in_place_net_converts_and_matches(tmp_path):
    case = load_case("resnet18_w8")
    original = read_net(case.prototxt, case.caffemodel)
    renamed, names = rewrite(original, in_place=False)
    net = save_net(renamed, tmp_path, "separate")
    assert not any(layer.in_place for layer in net.layers)
    model = convert(net)
    ref = {names[name]: value for name, value in case.blobs.items()}
    assert max(blob_errors(model, case.input, ref).values()) <= case.tolerance
    # every intermediate is now a blob of its own: conv output, BN before Scale, after Scale...
    assert len(model.blob_taps) == len(net.layers)
    assert_matches_reference(model, net, case.input)


def test_biases_on_every_conv(tmp_path):
    case = load_case("resnet18_w8")
    renamed, _ = rewrite(read_net(case.prototxt, case.caffemodel), bias_everywhere=True)
    net = save_net(renamed, tmp_path, "biased")
    model = convert(net)
    assert len(model.config.conv_bias) == sum(layer.type == "Convolution" for layer in net.layers)
    assert all(m.bias is not None for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert_matches_reference(model, net, case.input)


@pytest.mark.parametrize(
    "options",
    [
        {},  # stages [1, 2, 1, 1], odd widths, Input layer, global AVE pool5, stride in 1x1
        {"stride_in_1x1": False, "in_place": False, "header": "legacy", "softmax": False},
        {
            "block": "basic",
            "stages": ((2, 5, 5, 1), (1, 7, 7, 2), (3, 9, 9, 2)),
            "pool5": "global MAX",
            "fc_transpose": True,
        },
        {
            "block": "basic",
            "stages": ((1, 6, 6, 1), (1, 12, 12, 2)),
            "size": 33,
            "stem": (6, 7, 2, 3),
            "maxpool": (3, 2, 1),
            "pool5": "AVE 3 2 1",
        },
    ],
    ids=[
        "bottleneck-1211",
        "stride-in-3x3-separate-legacy",
        "basic-3-stages-max",
        "ave-pad-divisor",
    ],
)
def test_generated_resnets(tmp_path, options):
    text = resnet_prototxt(**options)
    net = save_net(random_net(text), tmp_path, "generated")
    config = recognize(net)
    stages = options.get("stages", ((1, 4, 16, 1), (2, 6, 20, 2), (1, 8, 24, 2), (1, 10, 28, 2)))
    assert config.layers == [s[0] for s in stages]
    assert [s.width for s in config.stages] == [s[1] for s in stages]
    assert config.block == options.get("block", "bottleneck")
    assert config.stride_in_1x1 == options.get("stride_in_1x1", True)
    assert config.softmax == options.get("softmax", True)
    size = options.get("size", 40)
    x = np.random.RandomState(1).normal(0, 50, (2, 3, size, size)).astype(np.float32)
    model = convert(net)
    assert state_shapes(config) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert_matches_reference(model, net, x)
    if options.get("stride_in_1x1") is False:  # the stride really sits on the 3x3 conv
        assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)


def test_bn_without_scale_scale_without_bias_and_zero_factor(tmp_path):
    text = resnet_prototxt(stages=((1, 4, 8, 1),), size=24)
    param = parse_prototxt(text, "edited.prototxt")
    layers = {layer.name: layer for layer in param.layer}
    layers["conv_stage0_block0_branch2a_scale"].scale_param.bias_term = False
    no_scale = "conv_stage0_block0_branch2b_scale"  # BN straight into the ReLU
    relu = layers["conv_stage0_block0_branch2b_relu"]
    relu.bottom[:] = ["conv_stage0_block0_branch2b"]
    kept = [layer for layer in param.layer if layer.name != no_scale]
    del param.layer[:]
    param.layer.extend(kept)
    net = random_net(text_format.MessageToString(param))
    net.layer("conv_stage0_block0_branch2c_bn").blobs[2][:] = 0  # Caffe then ignores mean/var
    net = save_net(net, tmp_path, "edited")
    config = recognize(net)
    state = resnet_state_dict(net, config)
    assert config.caffe_layers["layer1.0.bn2"] == ["conv_stage0_block0_branch2b_bn"]
    assert torch.equal(state["layer1.0.bn2.weight"], torch.ones(4))
    assert torch.equal(state["layer1.0.bn2.bias"], torch.zeros(4))
    assert torch.equal(state["layer1.0.bn1.bias"], torch.zeros(4))
    assert not state["layer1.0.bn1.weight"].eq(1).all()
    assert torch.equal(state["layer1.0.bn3.running_mean"], torch.zeros(8))
    assert torch.equal(state["layer1.0.bn3.running_var"], torch.zeros(8))
    mean = net.layer("conv_stem_bn").blobs[0] / BN_FACTOR
    assert np.allclose(state["bn1.running_mean"].numpy(), mean, rtol=1e-6)
    x = np.random.RandomState(2).normal(0, 50, (2, 3, 24, 24)).astype(np.float32)
    assert_matches_reference(convert(net), net, x)


def test_bn_eps_and_bias_flags_are_per_layer(tmp_path):
    text = resnet_prototxt(stages=((1, 4, 8, 1), (1, 4, 8, 2)), size=24)
    param = parse_prototxt(text, "eps.prototxt")
    for layer in param.layer:
        if layer.name == "conv_stage1_block0_branch2b_bn":
            layer.batch_norm_param.eps = 1e-3
    net = save_net(random_net(text_format.MessageToString(param)), tmp_path, "eps")
    config = recognize(net)
    assert config.bn_eps == 1e-5 and config.bn_eps_overrides == {"layer2.0.bn2": 0.001}
    assert config.conv_bias == ["conv1"]
    model = convert(net)
    assert model.layer2[0].bn2.eps == 0.001 and model.layer2[0].bn1.eps == 1e-5
    x = np.random.RandomState(3).normal(0, 50, (2, 3, 24, 24)).astype(np.float32)
    assert_matches_reference(model, net, x)


# ----------------------------------------------------------------------------- refusals


def test_non_resnet_is_refused_with_reason():
    case = load_case("conv_variants")
    net = read_net(case.prototxt, case.caffemodel)
    with pytest.raises(ConverterError) as error:
        recognize(net)
    message = str(error.value)
    assert message.startswith(f"{case.prototxt}: not a ResNet")
    assert "layer '" in message and "should" in message


def _edited(text: str, edit) -> Net:
    param = parse_prototxt(text, "bad.prototxt")
    edit({layer.name: layer for layer in param.layer})
    return net_from_param(param, "bad.prototxt")


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda ls: setattr(ls["conv_stem_relu"].relu_param, "negative_slope", 0.1),
            "negative_slope 0.1",
        ),
        (
            lambda ls: setattr(ls["sum_stage0_block0"].eltwise_param, "operation", 0),
            "layer 'sum_stage0_block0' \\(Eltwise\\) should be a plain SUM",
        ),
        (
            lambda ls: setattr(
                ls["conv_stage0_block0_branch2b_bn"].batch_norm_param, "use_global_stats", False
            ),
            "batch statistics",
        ),
        (
            lambda ls: setattr(ls["conv_stage0_block0_branch2b"].convolution_param, "group", 2),
            "group 2",
        ),
        (lambda ls: setattr(ls["pool_stem"].pooling_param, "pool", 1), "must be MAX pooling"),
        (
            lambda ls: ls["classifier"].bottom.__setitem__(0, "sum_stage0_block0"),
            "should start a residual block .* layer 'classifier' \\(InnerProduct\\)",
        ),
    ],
    ids=["leaky-relu", "eltwise-prod", "batch-stats", "grouped-conv", "ave-stem-pool", "skip-head"],
)
def test_refusals_name_what_did_not_fit(edit, expected):
    text = resnet_prototxt(stages=((1, 4, 8, 1), (1, 4, 8, 2)), size=24)
    net = _edited(text, edit)
    with pytest.raises(ConverterError, match=expected) as error:
        recognize(net)
    assert str(error.value).startswith("bad.prototxt: not a ResNet")


def test_pool_rounding_torch_cannot_reproduce_is_refused():
    # kernel 1, stride 2 on 4x4: Caffe's ceil rule gives 3 windows, torch's ceil_mode 2
    text = resnet_prototxt(stages=((1, 4, 8, 1),), size=8, maxpool=(1, 2, 0))
    with pytest.raises(ConverterError, match=r"\(3, 3\) for a 4x4 input in Caffe but \(2, 2\)"):
        recognize(_edited(text, lambda layers: None))


def test_weights_must_match_the_config():
    case = load_case("resnet18_w8")
    net = read_net(case.prototxt, case.caffemodel)
    with pytest.raises(ConverterError, match="caffemodel"):
        resnet_state_dict(read_net(case.prototxt), recognize(net))
    other = recognize(read_net(KAIMING / "ResNet-50-deploy.prototxt"))
    with pytest.raises(ConverterError):
        resnet_state_dict(net, other)


def test_state_dict_copies_blobs_and_keeps_bn_statistics_exact():
    case = load_case("resnet18_w8")
    net = read_net(case.prototxt, case.caffemodel)
    state = resnet_state_dict(net, recognize(net))
    stats = {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}
    others = {k: v for k, v in state.items() if k not in stats and "num_batches" not in k}
    assert all(v.dtype == torch.float32 for v in others.values())
    # blob / scale factor in float64, so a float64 model carries Caffe's statistics exactly
    assert all(v.dtype == torch.float64 for v in stats.values())
    mean, _, factor = net.layer("bn_conv1").blobs
    expected = mean.astype(np.float64) / float(factor[0])
    assert np.allclose(state["bn1.running_mean"].numpy(), expected, rtol=1e-15, atol=0)
    before = net.layer("conv1").blobs[0].copy()
    state["conv1.weight"].add_(1.0)  # writable, and not the caffemodel's memory
    assert np.array_equal(net.layer("conv1").blobs[0], before)
    assert torch.equal(state["conv1.bias"], torch.from_numpy(np.array(net.layer("conv1").blobs[1])))


# ----------------------------------------------------------------------------- config, builders


def test_config_round_trips_through_json():
    case = load_case("resnet18_w8")
    net = read_net(case.prototxt, case.caffemodel)
    model = convert(net)
    assert model.config.to_dict() == dataclasses.asdict(model.config)
    stored = json.loads(json.dumps(model.caffe_config()))
    assert stored["architecture"] == "resnet"
    assert ResNetConfig.from_dict(stored) == model.config
    again = CaffeResNet.from_config(stored)
    again.load_state_dict(model.state_dict())
    x = torch.from_numpy(case.input)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    with pytest.raises(ConverterError, match="missing or unknown field"):
        ResNetConfig.from_dict({**stored, "colour": "red"})


def _variants(config: ResNetConfig) -> list[ResNetConfig]:
    return [
        config,
        dataclasses.replace(config, fused_bn=True),
        dataclasses.replace(config, conv_bias=["conv1", "layer1.0.conv2", "layer2.0.downsample.0"]),
        dataclasses.replace(config, fc_bias=False, num_classes=7, stride_in_1x1=False),
        dataclasses.replace(config, input_shape=[1, 1, 64, 64], stem_kernel=[5, 3]),
    ]


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_state_shapes_are_the_modules_state_dict(depth):
    """Conversions plan from state_shapes without building modules: it must not drift."""
    for config in _variants(kaiming_config(depth, base_width=8)):
        with torch.device("meta"):
            model = CaffeResNet(config)
        expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        assert state_shapes(config) == expected
        assert list(state_shapes(config)) == list(expected)  # same order as well


@pytest.mark.parametrize(
    "builder, params",
    [
        (resnet18_caffe, 11_689_512 + 64),  # torchvision's count plus the conv1 bias
        (resnet34_caffe, 21_797_672 + 64),
        (resnet50_caffe, 25_557_032 + 64),
        (resnet101_caffe, 44_549_160),  # Kaiming's 101/152 conv1 has no bias
        (resnet152_caffe, 60_192_808),
    ],
)
def test_builders_have_kaiming_architecture(builder, params):
    model = builder()
    assert sum(p.numel() for p in model.parameters()) == params
    assert not model.training
    assert model.maxpool.ceil_mode and model.maxpool.padding == [0, 0]
    assert model.avgpool.kernel_size == [7, 7] and model.softmax is not None
    if hasattr(model.layer2[0], "conv3"):  # bottleneck: Caffe's stride on the first 1x1
        assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    assert resnet50_caffe(num_classes=7).fc.out_features == 7


def test_builder_loads_state_dict_and_converted_file(tmp_path):
    from converter.export import write_converted

    source = resnet18_caffe(num_classes=3)
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.running_var, 0.5, 2.0)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = source(x)
        assert torch.equal(resnet18_caffe(source.state_dict(), num_classes=3)(x), expected)
    path = tmp_path / "r18.safetensors"
    write_converted(source.state_dict(), {"config": json.dumps(source.caffe_config())}, path)
    with torch.no_grad():
        assert torch.equal(resnet18_caffe(path, num_classes=3)(x), expected)
    with pytest.raises(ConverterError, match="not a Kaiming ResNet-34"):
        resnet34_caffe(path, num_classes=3)
    with pytest.raises(ConverterError, match="num_classes"):
        resnet18_caffe(path)
    with pytest.raises(ConverterError, match="do not fit ResNet-18"):
        resnet18_caffe(resnet34_caffe(num_classes=3).state_dict(), num_classes=3)


# ----------------------------------------------------------------------------- export


def small_model() -> tuple[CaffeResNet, torch.Tensor]:
    text = resnet_prototxt(stages=((1, 4, 8, 1), (1, 4, 8, 2)), size=32, batch=1)
    model = convert(random_net(text))
    return model, torch.from_numpy(np.random.RandomState(4).normal(0, 50, (1, 3, 32, 32))).float()


def test_torch_export():
    model, x = small_model()
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notice
def test_onnx_export(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    model, x = small_model()
    path = tmp_path / "small.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["data"])
    onnx.checker.check_model(onnx.load(str(path)))
    (out,) = ReferenceEvaluator(str(path)).run(None, {"data": x.numpy()})
    with torch.no_grad():
        assert np.allclose(out, model(x).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # inductor compiles C++ (about 25 s on 2 cores)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit notices from inside torch
def test_torch_compile_matches_eager():
    model, x = small_model()
    compiled = torch.compile(model)
    with torch.no_grad():
        eager = model(x)
        out = compiled(x)
    assert rel_error(out.numpy(), eager.numpy()) <= 1e-5
