"""Find a ResNet's stem, blocks, shortcuts and head from the graph of a Caffe net.

Only topology and layer parameters are read, never names: any naming scheme, width, depth,
in-place or not. The walk runs on values rather than blob names (each layer's top is a new
value), so in-place layers cannot confuse which tensor a layer really reads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from converter import caffe_pb2
from converter.errors import ConverterError, counted, noun
from converter.layers import Shape, conv_geometry, pool_geometry
from converter.net import Net
from converter.resnet.config import DEFAULT_BN_EPS, PoolConfig, ResNetConfig, StageConfig

_POOL_MODES = {caffe_pb2.PoolingParameter.MAX: "MAX", caffe_pb2.PoolingParameter.AVE: "AVE"}


def torch_pool_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """Output size of torch's max/avg pooling (the rule in ATen's pooling_output_shape)."""
    out = (size + 2 * pad - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@dataclass
class _Unit:
    """conv -> BatchNorm -> optional Scale -> optional ReLU, as found in the graph."""

    conv: int  # layer index
    kernel: list[int]
    stride: list[int]
    pad: list[int]
    out_channels: int
    relu: bool
    out: int  # value id of the unit's result


@dataclass
class _Block:
    kind: str
    width: int
    out_channels: int
    stride: int
    projection: bool
    stride_in_1x1: bool | None  # None when the block has no stride to place
    out: int


class _Recognizer:
    def __init__(self, net: Net):
        self.net = net
        self.shapes = net.shapes()
        self.value_blob: list[str] = []
        self.value_shape: list[Shape] = []
        self.layer_inputs: list[list[int]] = []
        self.layer_outputs: list[list[int]] = []
        self.consumers: dict[int, list[int]] = {}
        current: dict[str, int] = {}
        for index, (layer, shapes) in enumerate(zip(net.layers, self.shapes)):
            inputs = [current[b] for b in layer.bottoms]
            for value in inputs:
                self.consumers[value].append(index)
            outputs = []
            for top, shape in zip(layer.tops, shapes.top_shapes):
                value = len(self.value_blob)
                self.value_blob.append(top)
                self.value_shape.append(tuple(shape))
                self.consumers[value] = []
                current[top] = value
                outputs.append(value)
            self.layer_inputs.append(inputs)
            self.layer_outputs.append(outputs)
        self.used: set[int] = set()
        self.taps: list[tuple[int, str, str]] = []  # (layer index, tap, blob)
        self.caffe_layers: dict[str, list[str]] = {}
        self.conv_bias: list[str] = []
        self.eps: dict[str, float] = {}

    # -- helpers

    def fail(self, message: str) -> ConverterError:
        return ConverterError(
            f"{self.net.source}: not a ResNet of the form this converter handles: {message}"
        )

    def describe(self, index: int) -> str:
        layer = self.net.layers[index]
        return f"layer '{layer.name}' ({layer.type})"

    def producer_of(self, value: int) -> int:
        for index, outputs in enumerate(self.layer_outputs):
            if value in outputs:
                return index
        raise AssertionError(value)

    def describe_value(self, value: int) -> str:
        return f"blob '{self.value_blob[value]}' from {self.describe(self.producer_of(value))}"

    def sole_consumer(self, value: int, expected: str | tuple[str, ...]) -> int:
        """The one layer reading ``value``; it must have one of the ``expected`` types."""
        expected = (expected,) if isinstance(expected, str) else expected
        readers = self.consumers[value]
        wanted = " or ".join(expected)
        if len(readers) != 1:
            found = ", ".join(self.describe(i) for i in readers) or "nothing"
            raise self.fail(
                f"{self.describe_value(value)} should feed exactly one {wanted} layer, "
                f"it feeds {found}"
            )
        if self.net.layers[readers[0]].type not in expected:
            raise self.fail(
                f"{self.describe_value(value)} should feed one {wanted} layer, "
                f"found {self.describe(readers[0])}"
            )
        return readers[0]

    def use(self, index: int, tap: str | None = None) -> None:
        layer = self.net.layers[index]
        if len(layer.tops) != 1 or (layer.type != "Eltwise" and len(layer.bottoms) != 1):
            raise self.fail(
                f"{self.describe(index)} has {counted(len(layer.bottoms), 'bottom')} and "
                f"{counted(len(layer.tops), 'top')}; expected one of each"
            )
        self.used.add(index)
        if tap is not None:
            self.taps.append((index, tap, layer.tops[0]))

    def out(self, index: int) -> int:
        return self.layer_outputs[index][0]

    # -- pieces

    def unit(self, conv: int, conv_name: str, bn_name: str, relu_tap: str) -> _Unit:
        """conv -> BatchNorm -> [Scale] -> [ReLU], recording taps, biases, eps and layers."""
        layer = self.net.layers[conv]
        where = f"{self.net.source}: {self.describe(conv)}"
        cp = layer.param.convolution_param
        kernel, stride, pad, dilation = conv_geometry(cp, 2, where)
        if cp.group != 1 or dilation != [1, 1] or cp.axis != 1:
            raise self.fail(
                f"{self.describe(conv)} has group {cp.group}, dilation {dilation}, axis {cp.axis}; "
                "expected group 1, dilation 1, axis 1"
            )
        self.use(conv, conv_name)
        self.caffe_layers[conv_name] = [layer.name]
        if cp.bias_term:
            self.conv_bias.append(conv_name)

        bn = self.sole_consumer(self.out(conv), "BatchNorm")
        bp = self.net.layers[bn].param.batch_norm_param
        if bp.HasField("use_global_stats") and not bp.use_global_stats:
            raise self.fail(
                f"{self.describe(bn)} uses batch statistics (use_global_stats: false); "
                "expected stored statistics"
            )
        self.eps[bn_name] = float(str(np.float32(bp.eps)))
        self.caffe_layers[bn_name] = [self.net.layers[bn].name]
        value = self.out(bn)
        readers = self.consumers[value]
        scale = readers[0] if len(readers) == 1 else None
        if scale is not None and self.net.layers[scale].type == "Scale":
            sp = self.net.layers[scale].param.scale_param
            if len(self.net.layers[scale].bottoms) != 1 or sp.axis != 1 or sp.num_axes != 1:
                raise self.fail(
                    f"{self.describe(scale)} should scale per channel (one bottom, axis 1, "
                    f"num_axes 1), found {counted(len(self.net.layers[scale].bottoms), 'bottom')}, "
                    f"axis {sp.axis}, num_axes {sp.num_axes}"
                )
            self.use(bn, f"{bn_name}.norm")
            self.use(scale, bn_name)
            self.caffe_layers[bn_name].append(self.net.layers[scale].name)
            value = self.out(scale)
        else:
            self.use(bn, bn_name)

        readers = self.consumers[value]
        relu = len(readers) == 1 and self.net.layers[readers[0]].type == "ReLU"
        if relu:
            self.check_relu(readers[0])
            self.use(readers[0], relu_tap)
            value = self.out(readers[0])
        return _Unit(conv, kernel, stride, pad, cp.num_output, relu, value)

    def check_relu(self, index: int) -> None:
        slope = self.net.layers[index].param.relu_param.negative_slope
        if slope != 0:
            raise self.fail(f"{self.describe(index)} has negative_slope {slope}; expected 0")

    def pool(self, index: int, what: str, modes: tuple[str, ...]) -> PoolConfig:
        layer = self.net.layers[index]
        pp = layer.param.pooling_param
        mode = _POOL_MODES.get(pp.pool)
        if mode not in modes:
            raise self.fail(f"{what} {self.describe(index)} must be {' or '.join(modes)} pooling")
        _, _, height, width = self.value_shape[self.layer_inputs[index][0]]
        where = f"{self.net.source}: {self.describe(index)}"
        geometry = pool_geometry(pp, height, width, where)
        kernel, stride, pad = list(geometry.kernel), list(geometry.stride), list(geometry.pad)
        if pp.global_pooling:
            return PoolConfig(mode, True, kernel, stride, pad, False)
        if any(p > k // 2 for p, k in zip(pad, kernel)):
            raise self.fail(f"{self.describe(index)}: pad {pad} exceeds half the kernel {kernel}")
        ceil_mode = pp.round_mode != caffe_pb2.PoolingParameter.FLOOR
        torch_out = tuple(
            torch_pool_size(size, k, s, p, ceil_mode)
            for size, k, s, p in zip((height, width), kernel, stride, pad)
        )
        if torch_out != geometry.output:
            raise self.fail(
                f"{self.describe(index)} gives {geometry.output} for a {height}x{width} input in "
                f"Caffe but {torch_out} in torch (ceil_mode={ceil_mode}); its last window would "
                "start outside the input"
            )
        return PoolConfig(mode, False, kernel, stride, pad, ceil_mode)

    def block(self, x: int, prefix: str) -> _Block:
        """One residual block reading value ``x``: main branch, shortcut, Eltwise SUM, ReLU."""
        readers = self.consumers[x]
        types = sorted(self.net.layers[i].type for i in readers)
        if types not in (["Convolution", "Eltwise"], ["Convolution", "Convolution"]):
            found = ", ".join(self.describe(i) for i in readers) or "nothing"
            raise self.fail(
                f"{self.describe_value(x)} should start a residual block (feed a convolution "
                f"and a shortcut) or the head (feed one Pooling layer); it feeds {found}"
            )
        projection = types == ["Convolution", "Convolution"]
        if projection:  # the shortcut's BN/Scale result goes straight into the Eltwise
            ends = {i: self.after_bn(i) for i in readers}
            shortcuts = [i for i in readers if ends[i] == "Eltwise"]
            if len(shortcuts) != 1:
                raise self.fail(
                    f"{self.describe_value(x)} feeds two convolutions, "
                    "but not one main branch and one projection shortcut"
                )
            shortcut = shortcuts[0]
            branch = next(i for i in readers if i != shortcut)
        else:
            branch = next(i for i in readers if self.net.layers[i].type == "Convolution")
            shortcut = None

        if shortcut is not None:
            sc = self.unit(shortcut, f"{prefix}.downsample.0", f"{prefix}.downsample.1", "")
            if sc.kernel != [1, 1] or sc.pad != [0, 0] or sc.stride[0] != sc.stride[1]:
                raise self.fail(
                    f"projection shortcut {self.describe(shortcut)} should be a 1x1 conv, pad 0, "
                    f"equal strides; found kernel {sc.kernel}, pad {sc.pad}, stride {sc.stride}"
                )
            shortcut_out = sc.out
        else:
            sc, shortcut_out = None, x

        units = []
        conv = branch
        while True:
            j = len(units) + 1
            unit = self.unit(conv, f"{prefix}.conv{j}", f"{prefix}.bn{j}", f"{prefix}.relu{j}")
            units.append(unit)
            if not unit.relu:
                break
            if len(units) == 3:
                raise self.fail(
                    f"the block starting at {self.describe(branch)} has more than 3 "
                    "conv-BN-ReLU stages before its Eltwise"
                )
            conv = self.sole_consumer(unit.out, "Convolution")

        join = self.sole_consumer(units[-1].out, "Eltwise")
        ep = self.net.layers[join].param.eltwise_param
        if (
            ep.operation != caffe_pb2.EltwiseParameter.SUM
            or any(c != 1 for c in ep.coeff)
            or sorted(self.layer_inputs[join]) != sorted([units[-1].out, shortcut_out])
        ):
            raise self.fail(
                f"{self.describe(join)} should be a plain SUM of the block's branch "
                f"({self.describe(units[-1].conv)}) and its shortcut"
            )
        self.use(join, f"{prefix}.add")
        relu = self.sole_consumer(self.out(join), "ReLU")
        self.check_relu(relu)
        self.use(relu, prefix)

        kind = {2: "basic", 3: "bottleneck"}.get(len(units))
        if kind is None:
            raise self.fail(
                f"the block starting at {self.describe(branch)} has {counted(len(units), 'conv')}; "
                "a basic block has 2, a bottleneck 3"
            )
        strides = [u.stride for u in units]
        if any(s[0] != s[1] for s in strides):
            raise self.fail(f"the block starting at {self.describe(branch)} has unequal strides")
        if kind == "basic":
            want = [([3, 3], [1, 1]), ([3, 3], [1, 1])]
            strided = [strides[0][0], 1]
        else:
            want = [([1, 1], [0, 0]), ([3, 3], [1, 1]), ([1, 1], [0, 0])]
            strided = [strides[0][0], strides[1][0], 1]
        found = [(u.kernel, u.pad) for u in units]
        if found != want or [s[0] for s in strides] != strided:
            raise self.fail(
                f"the {kind} block starting at {self.describe(branch)} has kernels/pads "
                f"{found} and strides {[s[0] for s in strides]}; expected kernels/pads {want} "
                f"and stride only on the {'first conv' if kind == 'basic' else 'first two'}"
            )
        stride = max(strided)
        stride_in_1x1 = None
        if kind == "bottleneck" and stride > 1:
            if strided[0] > 1 and strided[1] > 1:
                raise self.fail(
                    f"the block starting at {self.describe(branch)} has strides on both the "
                    "1x1 and the 3x3 conv"
                )
            stride_in_1x1 = strided[0] > 1
        if sc is not None and sc.stride[0] != stride:
            raise self.fail(
                f"shortcut {self.describe(shortcut)} has stride {sc.stride[0]}, the branch {stride}"
            )
        width = units[0].out_channels
        if kind == "bottleneck" and units[1].out_channels != width:
            raise self.fail(
                f"{self.describe(units[1].conv)} has {units[1].out_channels} outputs; "
                f"the bottleneck's first conv has {width}"
            )
        return _Block(
            kind,
            width,
            units[-1].out_channels,
            stride,
            projection,
            stride_in_1x1,
            self.out(relu),
        )

    def after_bn(self, conv: int) -> str:
        """Type of the layer after conv -> BatchNorm -> [Scale] (without recording anything)."""
        value = self.out(conv)
        for expected in ("BatchNorm", "Scale"):
            readers = self.consumers[value]
            if len(readers) != 1:
                return "?"
            if self.net.layers[readers[0]].type == expected:
                value = self.out(readers[0])
            elif expected == "BatchNorm":
                return "?"
        readers = self.consumers[value]
        return self.net.layers[readers[0]].type if len(readers) == 1 else "?"

    # -- the whole net

    def run(self) -> ResNetConfig:
        inputs = [i for i, layer in enumerate(self.net.layers) if layer.type == "Input"]
        if len(inputs) != 1 or len(self.net.layers[inputs[0]].tops) != 1:
            tops = [t for i in inputs for t in self.net.layers[i].tops]
            raise self.fail(f"expected one input blob, found {len(tops)} ({', '.join(tops)})")
        data = self.out(inputs[0])
        input_shape = list(self.value_shape[data])
        if len(input_shape) != 4:
            raise self.fail(f"the input '{self.value_blob[data]}' is {input_shape}, expected NCHW")
        self.used.add(inputs[0])
        self.taps.append((inputs[0], "input", self.value_blob[data]))

        stem_conv = self.sole_consumer(data, "Convolution")
        stem = self.unit(stem_conv, "conv1", "bn1", "relu")
        if not stem.relu:
            raise self.fail(f"the stem {self.describe(stem_conv)} should end in a ReLU")
        maxpool_index = self.sole_consumer(stem.out, "Pooling")
        maxpool = self.pool(maxpool_index, "the stem's", ("MAX",))
        self.use(maxpool_index, "maxpool")

        stages: list[StageConfig] = []
        kinds: set[str] = set()
        placements: set[bool] = set()
        x = self.out(maxpool_index)
        while not (
            len(self.consumers[x]) == 1 and self.net.layers[self.consumers[x][0]].type == "Pooling"
        ):
            readers = self.consumers[x]
            starts_stage = not stages or (
                len(readers) == 2 and all(self.net.layers[i].type == "Convolution" for i in readers)
            )
            stage_index = len(stages) if starts_stage else len(stages) - 1
            block_index = 0 if starts_stage else stages[-1].blocks
            block = self.block(x, f"layer{stage_index + 1}.{block_index}")
            kinds.add(block.kind)
            if block.stride_in_1x1 is not None:
                placements.add(block.stride_in_1x1)
            if starts_stage:
                stages.append(
                    StageConfig(1, block.width, block.out_channels, block.stride, block.projection)
                )
            else:
                stage = stages[-1]
                if (block.width, block.out_channels, block.stride) != (
                    stage.width,
                    stage.out_channels,
                    1,
                ):
                    raise self.fail(
                        f"block layer{stage_index + 1}.{block_index} (ending in blob "
                        f"'{self.value_blob[block.out]}') has width {block.width}, "
                        f"{block.out_channels} outputs, stride {block.stride}; the other blocks "
                        f"of its stage have {stage.width}, {stage.out_channels}, stride 1"
                    )
                stage.blocks += 1
            x = block.out
        if not stages:
            raise self.fail("found no residual block between the stem and the head")
        if len(kinds) > 1:
            raise self.fail("mixes basic and bottleneck blocks")
        if len(placements) > 1:
            raise self.fail("puts the stride on the 1x1 conv in some blocks, the 3x3 in others")

        pool5_index = self.consumers[x][0]
        pool5 = self.pool(pool5_index, "the head's", ("MAX", "AVE"))
        self.use(pool5_index, "avgpool")
        fc_index = self.sole_consumer(self.out(pool5_index), "InnerProduct")
        fc_layer = self.net.layers[fc_index]
        ip = fc_layer.param.inner_product_param
        pool5_shape = self.value_shape[self.out(pool5_index)]
        if ip.axis not in (1, -3):
            raise self.fail(f"{self.describe(fc_index)} has axis {ip.axis}; expected 1")
        self.use(fc_index, "fc")
        self.caffe_layers["fc"] = [fc_layer.name]
        output = self.out(fc_index)
        softmax = False
        if self.consumers[output]:
            soft = self.sole_consumer(output, "Softmax")
            if self.net.layers[soft].param.softmax_param.axis not in (1, -1):
                raise self.fail(f"{self.describe(soft)} should normalise over axis 1")
            self.use(soft, "softmax")
            softmax = True
            output = self.out(soft)
            if self.consumers[output]:
                raise self.fail(f"the net goes on after {self.describe(soft)}")

        unused = [self.describe(i) for i in range(len(self.net.layers)) if i not in self.used]
        if unused:
            raise self.fail(
                f"{counted(len(unused), 'layer')} {noun(len(unused), 'fits', 'fit')} nowhere in "
                f"it: {', '.join(unused[:5])}"
            )

        eps_counts = Counter(self.eps.values())
        bn_eps = DEFAULT_BN_EPS if DEFAULT_BN_EPS in eps_counts else eps_counts.most_common(1)[0][0]
        self.taps.sort(key=lambda item: item[0])
        return ResNetConfig(
            block=kinds.pop(),
            stages=stages,
            stride_in_1x1=placements.pop() if placements else True,
            input_name=self.value_blob[data],
            input_shape=input_shape,
            stem_channels=stem.out_channels,
            stem_kernel=stem.kernel,
            stem_stride=stem.stride,
            stem_pad=stem.pad,
            maxpool=maxpool,
            pool5=pool5,
            fc_in_features=int(np.prod(pool5_shape[1:])),
            num_classes=ip.num_output,
            fc_bias=ip.bias_term,
            softmax=softmax,
            output_name=self.value_blob[output],
            conv_bias=self.conv_bias,
            bn_eps=bn_eps,
            bn_eps_overrides={k: v for k, v in self.eps.items() if v != bn_eps},
            blobs=[[tap, blob] for _, tap, blob in self.taps],
            caffe_layers=self.caffe_layers,
        )


def recognize(net: Net) -> ResNetConfig:
    """The ResNetConfig of ``net``, or a ConverterError saying what does not fit a ResNet."""
    return _Recognizer(net).run()
