"""CaffeResNet: a torchvision-shaped ResNet that computes exactly what a Caffe ResNet computes.

The module keeps torchvision's attribute names (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ``fc``) but follows Caffe where the two differ: the stride of a
bottleneck can sit on its first 1x1 conv (``stride_in_1x1``), convs may carry biases, the
max-pool rounds up, pool5 is whatever the net says, and the net may end in a Softmax.
Everything needed to rebuild it lives in a JSON-friendly ``ResNetConfig``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from converter.errors import ConverterError
from converter.resnet.config import (
    PoolConfig,
    ResNetConfig,
    StageConfig,
    block_specs,
    kaiming_config,
)

# ----------------------------------------------------------------------------- modules


class _Recorder:
    """Collects the tensors at the taps ``forward_blobs`` asked for, or hands each to
    ``hand_over(tap, value)`` instead of keeping it."""

    def __init__(
        self,
        wanted: set[str],
        hand_over: Callable[[str, torch.Tensor], None] | None = None,
    ):
        self.wanted = wanted
        self.values: dict[str, torch.Tensor] = {}
        self.hand_over = hand_over

    def put(self, tap: str, value: torch.Tensor) -> None:
        if tap in self.wanted:
            if self.hand_over is not None:
                self.hand_over(tap, value)
            else:
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
    (``prob`` when the net ends in Softmax), its one output (``output_names``, as the
    generic module has); ``forward_blobs`` returns named Caffe blobs.
    """

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        self.input_names = [config.input_name]
        self.output_name = config.output_name
        self.output_names = [config.output_name]
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
        self,
        x: torch.Tensor,
        names: list[str] | None = None,
        on_final: Callable[[str, torch.Tensor], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """What Caffe's ``net.blobs[name]`` holds after a forward pass, for each name.

        With ``on_final``, each blob is handed to ``on_final(name, value)`` as soon as the
        layer giving its final value has run, and is not kept: the result is empty.
        """
        wanted = list(self.blob_taps) if names is None else list(names)
        unknown = [name for name in wanted if name not in self.blob_taps]
        if unknown:
            raise ConverterError(
                f"the model exposes no Caffe blob named {', '.join(map(repr, unknown))}; "
                f"it has {', '.join(self.blob_taps)}"
            )
        if on_final is not None:
            blobs_at: dict[str, list[str]] = {}
            for name in wanted:
                blobs_at.setdefault(self.blob_taps[name], []).append(name)

            def hand_over(tap: str, value: torch.Tensor) -> None:
                for name in blobs_at.get(tap, ()):
                    on_final(name, value)

            self.run(x, _Recorder(set(blobs_at), hand_over))
            return {}
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
    from_file = isinstance(weights, (str, os.PathLike))
    if from_file:
        from converter.export import read_converted

        _check_not_caffe(weights, depth)
        state_dict, metadata = read_converted(weights)
        stored = metadata.get("config") if isinstance(metadata, Mapping) else None
        if isinstance(stored, str):  # files keep metadata as strings: the config is JSON
            try:
                stored = json.loads(stored)
            except json.JSONDecodeError:
                stored = None
        if isinstance(stored, Mapping) and stored.get("architecture") == "generic":
            source = metadata.get("source_prototxt") or "its prototxt"
            raise ConverterError(
                f"{weights}: holds a generic net converted from {source}, not a ResNet of "
                f"Kaiming's form; load it with converter.load({str(weights)!r})"
            )
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
    with torch.device("meta"):  # no random initialisation: every tensor comes from weights
        model = CaffeResNet(config)
    if from_file:  # the file's tensors become the model's, as in converter.load
        state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    else:  # the caller keeps its tensors: the model gets copies
        model = model.to_empty(device="cpu")
    try:
        model.load_state_dict(state_dict, strict=True, assign=from_file)
    except RuntimeError as exc:
        raise ConverterError(f"{source}: do not fit ResNet-{depth}: {exc}") from None
    return model.eval()


def _check_not_caffe(weights: str | os.PathLike, depth: int) -> None:
    """A Caffe file given where a converted one is wanted: say what to call instead."""
    suffix = os.path.splitext(os.fspath(weights))[1].lower()
    if suffix in (".caffemodel", ".prototxt", ".h5"):
        raise ConverterError(
            f"{weights}: is a Caffe file, not a converted one; call "
            f"converter.load('deploy.prototxt', 'model.caffemodel') for the pair, or convert "
            f"it first (caffe2torch convert deploy.prototxt model.caffemodel -o "
            f"resnet{depth}.safetensors) and pass that file"
        )


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
