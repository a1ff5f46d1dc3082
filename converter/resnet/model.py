"""CaffeResNet: a torchvision-shaped ResNet that computes exactly what a Caffe ResNet computes.

The module keeps torchvision's attribute names (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ``fc``) but follows Caffe where the two differ: the stride of a
bottleneck can sit on its first 1x1 conv (``stride_in_1x1``), convs may carry biases, the
max-pool rounds up, pool5 is whatever the net says, and the net may end in a Softmax.
Everything needed to rebuild it lives in a JSON-friendly ``ResNetConfig``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from converter.errors import ConverterError

BLOCK_KINDS = ("basic", "bottleneck")
DEFAULT_BN_EPS = 1e-5


@dataclass
class StageConfig:
    """One ``layerN``: ``blocks`` blocks; the first has ``stride`` and, if set, a projection."""

    blocks: int
    width: int  # channels of the inner convs (a basic block's only width)
    out_channels: int
    stride: int
    downsample: bool


@dataclass
class PoolConfig:
    """A Caffe Pooling layer as torch runs it; ``ceil_mode`` was checked to give Caffe's size."""

    mode: str  # "MAX" or "AVE"
    global_pool: bool
    kernel: list[int]
    stride: list[int]
    pad: list[int]
    ceil_mode: bool


@dataclass
class ResNetConfig:
    """Everything that defines a CaffeResNet, plus where each output lives in the Caffe net.

    ``blobs`` lists ``[tap, caffe_blob]`` pairs in Caffe's layer order: a tap is a point of
    the torch forward pass (``"conv1"``, ``"layer1.0.bn1.norm"`` = BN before its Scale,
    ``"layer1.0.add"`` = the Eltwise sum, ``"layer1.0"`` = the block output after ReLU, ...).
    For an in-place chain the last pair naming a blob gives its final value, as in Caffe.
    ``caffe_layers`` maps each torch module with parameters to the Caffe layers that fill it.
    """

    block: str
    stages: list[StageConfig]
    stride_in_1x1: bool
    input_name: str
    input_shape: list[int]
    stem_channels: int
    stem_kernel: list[int]
    stem_stride: list[int]
    stem_pad: list[int]
    maxpool: PoolConfig
    pool5: PoolConfig
    fc_in_features: int
    num_classes: int
    fc_bias: bool
    softmax: bool
    output_name: str
    conv_bias: list[str] = field(default_factory=list)
    bn_eps: float = DEFAULT_BN_EPS
    bn_eps_overrides: dict[str, float] = field(default_factory=dict)
    blobs: list[list[str]] = field(default_factory=list)
    caffe_layers: dict[str, list[str]] = field(default_factory=dict)
    fused_bn: bool = False  # BatchNorm+Scale folded into the convs (every conv has a bias)

    @property
    def layers(self) -> list[int]:
        """Blocks per stage, as torchvision's ``layers`` argument."""
        return [stage.blocks for stage in self.stages]

    def eps(self, bn_name: str) -> float:
        return self.bn_eps_overrides.get(bn_name, self.bn_eps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready deep copy. Built by hand: ``dataclasses.asdict`` copies the blob
        table one object at a time, ~10 ms for ResNet-152, a tenth of a conversion."""
        values: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, list):
                value = [list(v) if isinstance(v, list) else v for v in value]
            elif isinstance(value, dict):
                value = {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
            values[item.name] = value
        values["stages"] = [dataclasses.asdict(stage) for stage in self.stages]
        values["maxpool"] = dataclasses.asdict(self.maxpool)
        values["pool5"] = dataclasses.asdict(self.pool5)
        return values

    def caffe_config(self) -> dict[str, Any]:
        """What a converted file stores to rebuild the model (``CaffeResNet.from_config``)."""
        return {"architecture": "resnet", **self.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResNetConfig:
        try:
            values = dict(data)
            values.pop("architecture", None)
            values["stages"] = [StageConfig(**stage) for stage in values["stages"]]
            values["maxpool"] = PoolConfig(**values["maxpool"])
            values["pool5"] = PoolConfig(**values["pool5"])
            config = cls(**values)
        except (KeyError, TypeError) as exc:
            raise ConverterError(f"ResNet config: missing or unknown field ({exc})") from None
        if config.block not in BLOCK_KINDS:
            raise ConverterError(f"ResNet config: block must be one of {BLOCK_KINDS}")
        return config


# ----------------------------------------------------------------------------- structure


@dataclass
class BlockSpec:
    """One residual block: where it sits, what it takes in, and whether it projects."""

    name: str  # "layer2.0"
    inplanes: int
    stage: StageConfig
    stride: int
    downsample: bool


def block_specs(config: ResNetConfig) -> list[BlockSpec]:
    """The blocks of ``config`` in order, after checking that they fit together."""
    if config.block not in BLOCK_KINDS:
        raise ConverterError(f"ResNet config: block must be one of {BLOCK_KINDS}")
    specs = []
    inplanes = config.stem_channels
    for index, stage in enumerate(config.stages):
        stage_name = f"layer{index + 1}"
        if config.block == "basic" and stage.width != stage.out_channels:
            raise ConverterError(f"ResNet config: {stage_name} basic blocks need width == out")
        for b in range(stage.blocks):
            name = f"{stage_name}.{b}"
            stride = stage.stride if b == 0 else 1
            downsample = b == 0 and stage.downsample
            if not downsample and (stride != 1 or inplanes != stage.out_channels):
                raise ConverterError(
                    f"ResNet config: block {name} changes shape but has no projection shortcut"
                )
            specs.append(BlockSpec(name, inplanes, stage, stride, downsample))
            inplanes = stage.out_channels
    return specs


def state_shapes(config: ResNetConfig) -> dict[str, tuple[int, ...]]:
    """The state dict of ``CaffeResNet(config)`` as name -> shape, without building modules
    (building ResNet-152, even on the meta device, costs ~0.1 s: more than a conversion's
    mapping)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, kernel) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        shapes[f"{name}.weight"] = (cout, cin, kh, kw)
        if config.fused_bn or name in config.conv_bias:
            shapes[f"{name}.bias"] = (cout,)

    def bn(name: str, channels: int) -> None:
        if config.fused_bn:
            return
        for key in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{key}"] = (channels,)
        shapes[f"{name}.num_batches_tracked"] = ()

    conv("conv1", config.input_shape[1], config.stem_channels, config.stem_kernel)
    bn("bn1", config.stem_channels)
    for spec in block_specs(config):
        width, out = spec.stage.width, spec.stage.out_channels
        if config.block == "basic":
            units = [(spec.inplanes, out, 3), (out, out, 3)]
        else:
            units = [(spec.inplanes, width, 1), (width, width, 3), (width, out, 1)]
        for j, (cin, cout, kernel) in enumerate(units, start=1):
            conv(f"{spec.name}.conv{j}", cin, cout, kernel)
            bn(f"{spec.name}.bn{j}", cout)
        if spec.downsample:
            conv(f"{spec.name}.downsample.0", spec.inplanes, out, 1)
            bn(f"{spec.name}.downsample.1", out)
    shapes["fc.weight"] = (config.num_classes, config.fc_in_features)
    if config.fc_bias:
        shapes["fc.bias"] = (config.num_classes,)
    return shapes


# ----------------------------------------------------------------------------- modules


class _Recorder:
    """Collects the tensors at the taps ``forward_blobs`` asked for."""

    def __init__(self, wanted: set[str]):
        self.wanted = wanted
        self.values: dict[str, torch.Tensor] = {}

    def put(self, tap: str, value: torch.Tensor) -> None:
        if tap in self.wanted:
            self.values[tap] = value


def _conv(config: ResNetConfig, name: str, cin: int, cout: int, kernel, stride, pad) -> nn.Conv2d:
    bias = config.fused_bn or name in config.conv_bias
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, bias=bias)


def _bn(config: ResNetConfig, name: str, channels: int) -> nn.Module:
    if config.fused_bn:  # folded into the conv before it
        return nn.Identity()
    return nn.BatchNorm2d(channels, eps=config.eps(name))


def _pool(pool: PoolConfig) -> nn.Module:
    if pool.global_pool:
        return nn.AdaptiveMaxPool2d(1) if pool.mode == "MAX" else nn.AdaptiveAvgPool2d(1)
    if pool.mode == "MAX":
        return nn.MaxPool2d(pool.kernel, pool.stride, pool.pad, ceil_mode=pool.ceil_mode)
    # count_include_pad=True divides by the window clipped to input + pad: Caffe's rule.
    return nn.AvgPool2d(pool.kernel, pool.stride, pool.pad, ceil_mode=pool.ceil_mode)


def _unit(
    x: torch.Tensor,
    conv: nn.Conv2d,
    bn: nn.Module,
    relu: nn.Module | None,
    rec: _Recorder | None,
    conv_tap: str,
    bn_tap: str,
    relu_tap: str,
) -> torch.Tensor:
    """conv -> BN(+Scale) -> optional ReLU, recording each intermediate when asked."""
    y = conv(x)
    if rec is not None:
        rec.put(conv_tap, y)
        if f"{bn_tap}.norm" in rec.wanted and isinstance(bn, nn.BatchNorm2d):
            # Caffe's BatchNorm top before its Scale layer
            norm = F.batch_norm(y, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)
            rec.put(f"{bn_tap}.norm", norm)
    y = bn(y)
    if rec is not None:
        rec.put(bn_tap, y)
    if relu is not None:
        y = relu(y)
        if rec is not None:
            rec.put(relu_tap, y)
    return y


def _downsample(config: ResNetConfig, name: str, cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        _conv(config, f"{name}.downsample.0", cin, cout, 1, stride, 0),
        _bn(config, f"{name}.downsample.1", cout),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs; the stride sits on the first, as in Kaiming-style Caffe nets."""

    def __init__(
        self,
        config: ResNetConfig,
        name: str,
        inplanes: int,
        stage: StageConfig,
        stride: int,
        downsample: nn.Module | None,
    ):
        super().__init__()
        self.name = name
        planes = stage.out_channels
        self.conv1 = _conv(config, f"{name}.conv1", inplanes, planes, 3, stride, 1)
        self.bn1 = _bn(config, f"{name}.bn1", planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv(config, f"{name}.conv2", planes, planes, 3, 1, 1)
        self.bn2 = _bn(config, f"{name}.bn2", planes)
        self.downsample = downsample

    def run(self, x: torch.Tensor, rec: _Recorder | None) -> torch.Tensor:
        p = self.name
        out = _unit(x, self.conv1, self.bn1, self.relu, rec, f"{p}.conv1", f"{p}.bn1", f"{p}.relu1")
        out = _unit(out, self.conv2, self.bn2, None, rec, f"{p}.conv2", f"{p}.bn2", "")
        return _join(self, x, out, rec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, None)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1; the stride is on the first 1x1 when ``stride_in_1x1`` (Caffe)."""

    def __init__(
        self,
        config: ResNetConfig,
        name: str,
        inplanes: int,
        stage: StageConfig,
        stride: int,
        downsample: nn.Module | None,
    ):
        super().__init__()
        self.name = name
        width, out = stage.width, stage.out_channels
        s1, s3 = (stride, 1) if config.stride_in_1x1 else (1, stride)
        self.conv1 = _conv(config, f"{name}.conv1", inplanes, width, 1, s1, 0)
        self.bn1 = _bn(config, f"{name}.bn1", width)
        self.conv2 = _conv(config, f"{name}.conv2", width, width, 3, s3, 1)
        self.bn2 = _bn(config, f"{name}.bn2", width)
        self.conv3 = _conv(config, f"{name}.conv3", width, out, 1, 1, 0)
        self.bn3 = _bn(config, f"{name}.bn3", out)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def run(self, x: torch.Tensor, rec: _Recorder | None) -> torch.Tensor:
        p = self.name
        out = _unit(x, self.conv1, self.bn1, self.relu, rec, f"{p}.conv1", f"{p}.bn1", f"{p}.relu1")
        out = _unit(
            out, self.conv2, self.bn2, self.relu, rec, f"{p}.conv2", f"{p}.bn2", f"{p}.relu2"
        )
        out = _unit(out, self.conv3, self.bn3, None, rec, f"{p}.conv3", f"{p}.bn3", "")
        return _join(self, x, out, rec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, None)


def _join(
    block: BasicBlock | Bottleneck, x: torch.Tensor, out: torch.Tensor, rec: _Recorder | None
) -> torch.Tensor:
    """Shortcut (identity or projection), Eltwise SUM, ReLU."""
    p = block.name
    identity = x
    if block.downsample is not None:
        conv, bn = block.downsample[0], block.downsample[1]
        identity = _unit(x, conv, bn, None, rec, f"{p}.downsample.0", f"{p}.downsample.1", "")
    out = out + identity
    if rec is not None:
        rec.put(f"{p}.add", out)
    out = block.relu(out)
    if rec is not None:
        rec.put(p, out)
    return out


class CaffeResNet(nn.Module):
    """A ResNet in eval mode whose every exposed blob equals the Caffe net's blob of that name.

    ``forward(x)`` returns what Caffe's ``net.forward()`` returns for the net's last top
    (``prob`` when the net ends in Softmax); ``forward_blobs`` returns named Caffe blobs.
    """

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        self.input_names = [config.input_name]
        self.output_name = config.output_name
        c = config
        self.conv1 = _conv(
            c, "conv1", c.input_shape[1], c.stem_channels, c.stem_kernel, c.stem_stride, c.stem_pad
        )
        self.bn1 = _bn(c, "bn1", c.stem_channels)
        self.relu = nn.ReLU()
        self.maxpool = _pool(c.maxpool)
        block_class = BasicBlock if c.block == "basic" else Bottleneck
        stages: dict[str, list[nn.Module]] = {}
        for spec in block_specs(c):
            downsample = None
            if spec.downsample:
                downsample = _downsample(
                    c, spec.name, spec.inplanes, spec.stage.out_channels, spec.stride
                )
            block = block_class(c, spec.name, spec.inplanes, spec.stage, spec.stride, downsample)
            stages.setdefault(spec.name.split(".")[0], []).append(block)
        self.stage_names: list[str] = list(stages)
        for stage_name, blocks in stages.items():
            setattr(self, stage_name, nn.Sequential(*blocks))
        self.avgpool = _pool(c.pool5)
        self.fc = nn.Linear(c.fc_in_features, c.num_classes, bias=c.fc_bias)
        self.softmax = nn.Softmax(dim=1) if c.softmax else None
        # Caffe blob -> the tap holding its final value (the last in-place writer wins).
        self.blob_taps: dict[str, str] = {blob: tap for tap, blob in c.blobs}
        self.eval()

    def run(self, x: torch.Tensor, rec: _Recorder | None) -> torch.Tensor:
        if rec is not None:
            rec.put("input", x)
        x = _unit(x, self.conv1, self.bn1, self.relu, rec, "conv1", "bn1", "relu")
        x = self.maxpool(x)
        if rec is not None:
            rec.put("maxpool", x)
        for stage_name in self.stage_names:
            for block in getattr(self, stage_name):
                x = block.run(x, rec)
        x = self.avgpool(x)
        if rec is not None:
            rec.put("avgpool", x)
        x = self.fc(torch.flatten(x, 1))
        if rec is not None:
            rec.put("fc", x)
        if self.softmax is not None:
            x = self.softmax(x)
            if rec is not None:
                rec.put("softmax", x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, None)

    def forward_blobs(
        self, x: torch.Tensor, names: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """What Caffe's ``net.blobs[name]`` holds after a forward pass, for each name."""
        wanted = list(self.blob_taps) if names is None else list(names)
        unknown = [name for name in wanted if name not in self.blob_taps]
        if unknown:
            raise ConverterError(
                f"the model exposes no Caffe blob named {', '.join(map(repr, unknown))}; "
                f"it has {', '.join(self.blob_taps)}"
            )
        values = self.forward_taps(x, {self.blob_taps[name] for name in wanted})
        return {name: values[self.blob_taps[name]] for name in wanted}

    def forward_taps(
        self, x: torch.Tensor, taps: list[str] | set[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The output of each Caffe layer by tap, before later in-place layers overwrite it.

        ``config.blobs`` pairs taps with Caffe layers' tops in layer order, so this gives a
        layer-by-layer view even where Caffe itself keeps only the last in-place value.
        """
        wanted = [tap for tap, _ in self.config.blobs] if taps is None else list(taps)
        known = {tap for tap, _ in self.config.blobs}
        unknown = [tap for tap in wanted if tap not in known]
        if unknown:
            raise ConverterError(f"the model has no tap {', '.join(map(repr, unknown))}")
        rec = _Recorder(set(wanted))
        self.run(x, rec)
        return {tap: rec.values[tap] for tap in wanted}

    def caffe_config(self) -> dict[str, Any]:
        return self.config.caffe_config()

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> CaffeResNet:
        architecture = data.get("architecture", "resnet")
        if architecture != "resnet":
            raise ConverterError(f"config describes a '{architecture}', not a 'resnet'")
        return cls(ResNetConfig.from_dict(data))


# ----------------------------------------------------------------------------- builders

_KAIMING = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}


def _kaiming_block_suffix(depth: int, stage: int, index: int) -> str:
    """'a', 'b', 'c'... or, in ResNet-101/152's res3 and res4, 'a', 'b1', 'b2'..."""
    if depth in (101, 152) and stage in (1, 2) and index > 0:
        return f"b{index}"
    return chr(ord("a") + index)


def kaiming_config(
    depth: int,
    num_classes: int = 1000,
    base_width: int = 64,
    input_shape: tuple[int, ...] = (1, 3, 224, 224),
) -> ResNetConfig:
    """The config of Kaiming He's ResNet-``depth`` deploy net, with his layer and blob names.

    ``base_width`` scales every channel count (64 in the released models). Only ResNet-50's
    ``conv1`` has a bias (101 and 152 say ``bias_term: false``); ResNet-18/34 follow the
    ResNet-50 conventions (stride on ``branch2a``, ``conv1`` with a bias).
    """
    if depth not in _KAIMING:
        raise ConverterError(f"no Kaiming ResNet of depth {depth}; choose one of {list(_KAIMING)}")
    block, layers = _KAIMING[depth]
    expansion = 1 if block == "basic" else 4
    stages = []
    for index, blocks in enumerate(layers):
        width = base_width * 2**index
        stages.append(StageConfig(blocks, width, width * expansion, 1 if index == 0 else 2, True))
    if block == "basic":
        stages[0].downsample = False  # 64 -> 64 at stride 1: Kaiming-style nets use identity
    blobs: list[list[str]] = [["input", "data"]]
    caffe_layers: dict[str, list[str]] = {"conv1": ["conv1"], "bn1": ["bn_conv1", "scale_conv1"]}
    blobs += [["conv1", "conv1"], ["bn1.norm", "conv1"], ["bn1", "conv1"], ["relu", "conv1"]]
    blobs.append(["maxpool", "pool1"])
    branches = ["2a", "2b"] if block == "basic" else ["2a", "2b", "2c"]
    for s, stage in enumerate(stages):
        for b in range(stage.blocks):
            res = f"{s + 2}{_kaiming_block_suffix(depth, s, b)}"
            prefix = f"layer{s + 1}.{b}"
            if b == 0 and stage.downsample:
                blob = f"res{res}_branch1"
                caffe_layers[f"{prefix}.downsample.0"] = [blob]
                caffe_layers[f"{prefix}.downsample.1"] = [f"bn{res}_branch1", f"scale{res}_branch1"]
                blobs += [[f"{prefix}.downsample.0", blob], [f"{prefix}.downsample.1.norm", blob]]
                blobs.append([f"{prefix}.downsample.1", blob])
            for j, branch in enumerate(branches, start=1):
                blob = f"res{res}_branch{branch}"
                caffe_layers[f"{prefix}.conv{j}"] = [blob]
                suffix = f"{res}_branch{branch}"
                caffe_layers[f"{prefix}.bn{j}"] = [f"bn{suffix}", f"scale{suffix}"]
                blobs += [[f"{prefix}.conv{j}", blob], [f"{prefix}.bn{j}.norm", blob]]
                blobs.append([f"{prefix}.bn{j}", blob])
                if j < len(branches):
                    blobs.append([f"{prefix}.relu{j}", blob])
            blobs += [[f"{prefix}.add", f"res{res}"], [prefix, f"res{res}"]]
    blobs += [["avgpool", "pool5"], ["fc", "fc1000"], ["softmax", "prob"]]
    caffe_layers["fc"] = ["fc1000"]
    return ResNetConfig(
        block=block,
        stages=stages,
        stride_in_1x1=True,
        input_name="data",
        input_shape=list(input_shape),
        stem_channels=base_width,
        stem_kernel=[7, 7],
        stem_stride=[2, 2],
        stem_pad=[3, 3],
        maxpool=PoolConfig("MAX", False, [3, 3], [2, 2], [0, 0], True),
        pool5=PoolConfig("AVE", False, [7, 7], [1, 1], [0, 0], True),
        fc_in_features=stages[-1].out_channels,
        num_classes=num_classes,
        fc_bias=True,
        softmax=True,
        output_name="prob",
        conv_bias=["conv1"] if depth <= 50 else [],  # as in Kaiming's released prototxts
        bn_eps=DEFAULT_BN_EPS,
        blobs=blobs,
        caffe_layers=caffe_layers,
    )


_STRUCTURE = ("block", "layers", "widths", "stride_in_1x1", "stem", "num_classes")


def _structure(config: ResNetConfig) -> dict[str, Any]:
    """The fields that decide which architecture a config is, ignoring Caffe names."""
    return {
        "block": config.block,
        "layers": config.layers,
        "widths": [(s.width, s.out_channels, s.stride, s.downsample) for s in config.stages],
        "stride_in_1x1": config.stride_in_1x1,
        "stem": (config.stem_channels, config.stem_kernel, config.stem_stride, config.stem_pad),
        "num_classes": config.num_classes,
    }


def _build(depth: int, weights, num_classes: int) -> CaffeResNet:
    config = kaiming_config(depth, num_classes)
    if weights is None:
        return CaffeResNet(config)
    if isinstance(weights, (str, os.PathLike)):
        from converter.export import read_converted

        state_dict, metadata = read_converted(weights)
        stored = metadata.get("config") if isinstance(metadata, Mapping) else None
        if isinstance(stored, str):  # files keep metadata as strings: the config is JSON
            try:
                stored = json.loads(stored)
            except json.JSONDecodeError:
                stored = None
        if not isinstance(stored, Mapping) or stored.get("architecture") != "resnet":
            raise ConverterError(f"{weights}: holds no ResNet config; was it made by caffe2torch?")
        file_config = ResNetConfig.from_dict(stored)
        want, have = _structure(config), _structure(file_config)
        differ = [key for key in _STRUCTURE if want[key] != have[key]]
        if differ:
            details = "; ".join(f"{k}: expected {want[k]}, found {have[k]}" for k in differ)
            raise ConverterError(f"{weights}: is not a Kaiming ResNet-{depth} ({details})")
        config, source = file_config, str(weights)
    else:
        state_dict, source = weights, "weights"
    model = CaffeResNet(config)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ConverterError(f"{source}: do not fit ResNet-{depth}: {exc}") from None
    return model.eval()


def resnet18_caffe(weights=None, num_classes: int = 1000) -> CaffeResNet:
    """Kaiming-style ResNet-18 (BasicBlock, Caffe semantics); ``weights``: state dict or file."""
    return _build(18, weights, num_classes)


def resnet34_caffe(weights=None, num_classes: int = 1000) -> CaffeResNet:
    """Kaiming-style ResNet-34 (BasicBlock, Caffe semantics); ``weights``: state dict or file."""
    return _build(34, weights, num_classes)


def resnet50_caffe(weights=None, num_classes: int = 1000) -> CaffeResNet:
    """Kaiming He's ResNet-50 (stride in the 1x1); ``weights``: state dict or converted file."""
    return _build(50, weights, num_classes)


def resnet101_caffe(weights=None, num_classes: int = 1000) -> CaffeResNet:
    """Kaiming He's ResNet-101 (stride in the 1x1); ``weights``: state dict or converted file."""
    return _build(101, weights, num_classes)


def resnet152_caffe(weights=None, num_classes: int = 1000) -> CaffeResNet:
    """Kaiming He's ResNet-152 (stride in the 1x1); ``weights``: state dict or converted file."""
    return _build(152, weights, num_classes)
