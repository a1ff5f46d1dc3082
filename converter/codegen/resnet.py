"""model.py for a recognised ResNet: torchvision's shape, Caffe's semantics, only torch.

The generated file reads like torchvision's ``models/resnet.py`` (block classes,
``_make_layer``, ``ResNet``), with the net's numbers written in and one ``stride_in_1x1``
knob. Its state dict has CaffeResNet's keys (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``fc``), so the converted arrays fill it unchanged. Nets whose biases or BatchNorm eps
vary from conv to conv cannot be written in this form: ``resnet_source`` refuses them.
"""

from __future__ import annotations

from converter.codegen.common import LOADER, fill, header, literal, quote
from converter.errors import ConverterError
from converter.resnet.config import DEFAULT_BN_EPS, PoolConfig, ResNetConfig, block_specs

_EXPANSION = {"basic": 1, "bottleneck": 4}


def _irregular(config: ResNetConfig) -> str:
    """Why ``config`` does not fit the torchvision form ('' when it does)."""
    if config.fused_bn:
        return "its BatchNorm is folded into the convs (--fuse-bn)"
    if config.bn_eps_overrides:
        return "its BatchNorm layers use different eps values"
    expansion = _EXPANSION[config.block]
    for index, stage in enumerate(config.stages):
        if stage.out_channels != stage.width * expansion:
            return (
                f"stage {index + 1} has {stage.out_channels} outputs for width {stage.width} "
                f"(a {config.block} block expands by {expansion})"
            )
    biased = set(config.conv_bias) - {"conv1"}
    block_convs = {
        name
        for spec in block_specs(config)
        for name in [f"{spec.name}.conv{j}" for j in range(1, 4 - (config.block == "basic"))]
        + ([f"{spec.name}.downsample.0"] if spec.downsample else [])
    }
    if biased and biased != block_convs:
        return "some of its block convs have a bias and others do not"
    for spec in block_specs(config):
        natural = spec.stride != 1 or spec.inplanes != spec.stage.out_channels
        if spec.downsample != natural:
            return f"block {spec.name} has a projection shortcut where none is needed"
    if config.pool5.mode != "AVE":
        return "its head pools by MAX"
    return ""


def fits_resnet_form(config: ResNetConfig) -> bool:
    """Can ``resnet_source`` write this net?"""
    return not _irregular(config)


def _pool(attribute: str, pool: PoolConfig, what: str) -> list[str]:
    """Lines setting ``attribute`` to the torch module computing Caffe's pooling (ceil_mode
    was checked to give Caffe's size when the net was recognised), as CaffeResNet does."""
    if pool.global_pool:
        kind = "Max" if pool.mode == "MAX" else "Avg"
        return [f"        self.{attribute} = nn.Adaptive{kind}Pool2d(1)  # {what}: global"]
    kind = "MaxPool2d" if pool.mode == "MAX" else "AvgPool2d"
    args = [literal(pool.kernel), literal(pool.stride)]
    if any(pool.pad):
        args.append(literal(pool.pad))
    if pool.ceil_mode:
        args.append("ceil_mode=True")
        why = "Caffe rounds the output size up"
    else:
        why = "round_mode: FLOOR"
    return [f"        # {what}: {why}", f"        self.{attribute} = nn.{kind}({', '.join(args)})"]


def _bn(channels: str, eps: float) -> str:
    if eps == DEFAULT_BN_EPS:
        return f"nn.BatchNorm2d({channels})"
    return f"nn.BatchNorm2d({channels}, eps={eps!r})"


_BASIC = '''
class BasicBlock(nn.Module):
    """Two 3x3 convs; the stride sits on the first."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias={bias})
        self.bn1 = {bn_planes}
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias={bias})
        self.bn2 = {bn_planes}
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias={bias}),
                {bn_planes},
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)
'''

_BOTTLENECK = '''
class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1. Caffe's ResNets stride the first 1x1 (``stride_in_1x1``);
    torchvision's stride the 3x3. The weights are not interchangeable."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, stride_in_1x1: bool = True
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride_1x1, bias={bias})
        self.bn1 = {bn_planes}
        self.conv2 = nn.Conv2d(planes, planes, 3, stride_3x3, 1, bias={bias})
        self.bn2 = {bn_planes}
        self.conv3 = nn.Conv2d(planes, out, 1, bias={bias})
        self.bn3 = {bn_out}
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias={bias}), {bn_out}
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)
'''


def _block_class(config: ResNetConfig) -> str:
    bias = str(bool(set(config.conv_bias) - {"conv1"}))
    text = _BASIC if config.block == "basic" else _BOTTLENECK
    return text.format(
        bias=bias, bn_planes=_bn("planes", config.bn_eps), bn_out=_bn("out", config.bn_eps)
    )


def _resnet_class(config: ResNetConfig) -> str:
    c = config
    block = "BasicBlock" if c.block == "basic" else "Bottleneck"
    bottleneck = c.block == "bottleneck"
    lines = [
        "class ResNet(nn.Module):",
        '    """The converted net; ``ResNet()`` builds it with uninitialised weights."""',
        "",
        f"    output_names = ({quote(c.output_name)},)  # the blob forward() returns",
        "",
        "    def __init__(",
        "        self,",
        f"        layers: tuple[int, ...] = {literal(tuple(s.blocks for s in c.stages))},",
        f"        num_classes: int = {c.num_classes},",
    ]
    if bottleneck:
        lines.append(f"        stride_in_1x1: bool = {c.stride_in_1x1},")
    lines += [
        "    ) -> None:",
        "        super().__init__()",
        f"        self.block = {block}",
    ]
    if bottleneck:
        lines.append("        self.stride_in_1x1 = stride_in_1x1")
    in_channels = c.input_shape[1]
    conv1 = ", ".join(
        [
            str(in_channels),
            str(c.stem_channels),
            literal(c.stem_kernel),
            literal(c.stem_stride),
            literal(c.stem_pad),
            f"bias={'conv1' in c.conv_bias}",
        ]
    )
    lines += [
        f"        self.inplanes = {c.stem_channels}",
        f"        self.conv1 = nn.Conv2d({conv1})",
        f"        self.bn1 = {_bn(str(c.stem_channels), c.bn_eps)}",
        "        self.relu = nn.ReLU(inplace=True)",
        *_pool("maxpool", c.maxpool, "pool1"),
    ]
    for index, stage in enumerate(c.stages):
        call = f"self._make_layer({stage.width}, layers[{index}], {stage.stride})"
        lines.append(f"        self.layer{index + 1} = {call}")
    last = c.stages[-1].out_channels
    fc_in = "self.inplanes" if c.fc_in_features == last else str(c.fc_in_features)
    fc_args = f"{fc_in}, num_classes" + ("" if c.fc_bias else ", bias=False")
    lines += _pool("avgpool", c.pool5, "pool5")
    lines += [
        f"        self.fc = nn.Linear({fc_args})",
        "",
        "    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:",
        "        layers = []",
        "        for index in range(blocks):",
        "            args = (self.inplanes, planes, stride if index == 0 else 1)",
    ]
    args = "*args, self.stride_in_1x1" if bottleneck else "*args"
    lines += [
        f"            layers.append(self.block({args}))",
        "            self.inplanes = planes * self.block.expansion",
        "        return nn.Sequential(*layers)",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        f'        """Blob {c.input_name!r} in, blob {c.output_name!r} out."""',
        "        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))",
    ]
    lines += [f"        x = self.layer{index + 1}(x)" for index in range(len(c.stages))]
    lines.append("        x = self.fc(torch.flatten(self.avgpool(x), 1))")
    lines.append("        return torch.softmax(x, dim=1)" if c.softmax else "        return x")
    return "\n".join(lines) + "\n"


def resnet_source(config: ResNetConfig, prototxt: str, caffemodel: str, version: str) -> str:
    """The text of model.py for ``config`` (a recognised ResNet).

    ``prototxt`` and ``caffemodel`` are the source file names written into the header.
    Raises ConverterError naming what does not fit when the net is not of the form
    (``fits_resnet_form``).
    """
    why = _irregular(config)
    if why:
        raise ConverterError(f"{prototxt}: cannot be written as a torchvision-style ResNet: {why}")
    depth = _depth(config)
    placement = (
        "the stride of a bottleneck sits on its first 1x1 conv (``stride_in_1x1``), "
        if config.block == "bottleneck" and config.stride_in_1x1
        else ""
    )
    shape = ", ".join(["N", *map(str, config.input_shape[1:])])
    summary = fill(
        f"A {depth} with Caffe's semantics, as a plain PyTorch module.\n\n"
        f"Where it differs from torchvision's, Caffe decides: {placement}"
        f"{'conv1 has a bias, ' if 'conv1' in config.conv_bias else ''}"
        "the max-pool has no padding and rounds its output size up"
        f"{', and the net ends in a softmax' if config.softmax else ''}.\n\n"
        f"Input: float32 ({shape}), Caffe's convention (BGR, 0-255, minus the mean; see "
        f"config.json). Output: blob {config.output_name!r}."
    )
    parts = [
        header(prototxt, caffemodel, version, summary),
        "import json\nfrom pathlib import Path\n\nimport torch\nfrom torch import nn\n",
        _block_class(config),
        "\n" + _resnet_class(config),
        LOADER.format(model="ResNet"),
    ]
    return "\n".join(parts)


def _depth(config: ResNetConfig) -> str:
    """'ResNet-50' for a net of a standard depth's shape, else a description."""
    convs = sum(stage.blocks for stage in config.stages) * (2 if config.block == "basic" else 3)
    return f"ResNet-{convs + 2}"
