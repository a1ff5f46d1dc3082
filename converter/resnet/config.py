"""The ResNet configuration: everything that defines a CaffeResNet, as plain data.

Kept apart from the modules (and from torch) so that recognising a net and converting its
weights never import PyTorch: ``caffe2torch convert`` then starts in a fraction of the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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


# ----------------------------------------------------------------------------- Kaiming's nets

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
