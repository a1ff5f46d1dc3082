"""Turn legacy Caffe net definitions into the current form, as Caffe's own upgrade does.

After this step nothing downstream knows that ``input:``/``input_dim:`` headers or V1
``layers`` ever existed. ``FORK_FIELDS`` lists prototxt fields of popular Caffe forks whose
meaning is known, with their BVLC translation (the prototxt reader applies it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from converter import caffe_pb2
from converter.errors import ConverterError

# V1LayerParameter.LayerType number -> the current layer type string.
V1_TYPE_NAMES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data",
    6: "Dropout", 7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output",
    11: "Im2col", 12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise",
    26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData",
    30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal",
    36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}  # fmt: skip

_LAYER_FIELDS = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name


def upgrade_net(net: caffe_pb2.NetParameter, source: str) -> caffe_pb2.NetParameter:
    """Return ``net`` with V1 layers and a legacy input header rewritten as current layers."""
    if net.layers and net.layer:
        raise ConverterError(
            f"{source}: mixes V1 'layers' and current 'layer' entries; Caffe rejects that too"
        )
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(net)
    if net.layers:
        del upgraded.layers[:]
        del upgraded.layer[:]
        for v1 in net.layers:
            upgraded.layer.append(_upgrade_v1_layer(v1, source))
    if net.input:
        _upgrade_input_header(upgraded, source)
    return upgraded


def _upgrade_v1_layer(v1: caffe_pb2.V1LayerParameter, source: str) -> caffe_pb2.LayerParameter:
    if v1.HasField("layer"):
        raise ConverterError(
            f"{source}: layer '{v1.layer.name or v1.name}' uses the V0 format (before 2014), "
            "which this tool does not read; upgrade it with Caffe's upgrade_net_proto_text"
        )
    layer = caffe_pb2.LayerParameter(name=v1.name, type=V1_TYPE_NAMES.get(v1.type, ""))
    if not layer.type:
        raise ConverterError(f"{source}: V1 layer '{v1.name}' has no known type ({v1.type})")
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.loss_weight.extend(v1.loss_weight)
    layer.blobs.extend(v1.blobs)
    for index in range(max(len(v1.param), len(v1.blobs_lr), len(v1.weight_decay))):
        spec = layer.param.add()
        if index < len(v1.param):
            spec.name = v1.param[index]
        if index < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[index]
        if index < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[index]
    for descriptor, value in v1.ListFields():
        name = descriptor.name
        if name.endswith("_param") and name in _LAYER_FIELDS:
            getattr(layer, name).CopyFrom(value)
    return layer


def _upgrade_input_header(net: caffe_pb2.NetParameter, source: str) -> None:
    """``input: "data"`` + ``input_dim``/``input_shape`` becomes a first layer named 'input'."""
    names = list(net.input)
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise ConverterError(
                f"{source}: {len(names)} inputs but {len(net.input_shape)} input_shape entries"
            )
        shapes = [list(shape.dim) for shape in net.input_shape]
    elif net.input_dim:
        if len(net.input_dim) != 4 * len(names):
            raise ConverterError(
                f"{source}: {len(names)} inputs need {4 * len(names)} input_dim values, "
                f"found {len(net.input_dim)}"
            )
        dims = list(net.input_dim)
        shapes = [dims[4 * i : 4 * i + 4] for i in range(len(names))]
    else:
        raise ConverterError(f"{source}: input {names} has no input_dim or input_shape")
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(names)
    for shape in shapes:
        layer.input_param.shape.add().dim.extend(shape)
    existing = list(net.layer)
    del net.layer[:]
    net.layer.append(layer)
    net.layer.extend(existing)
    del net.input[:]
    del net.input_dim[:]
    del net.input_shape[:]


# ----------------------------------------------------------------------------- fork fields


@dataclass(frozen=True)
class ForkField:
    """A prototxt field some Caffe fork added, and how to say the same thing in BVLC terms.

    ``translate`` maps the field's text value to BVLC text (``""`` drops a field that has no
    effect at inference), or to None when that value has no BVLC equivalent.
    """

    message: str
    field: str
    meaning: str
    translate: Callable[[str], str | None]


_TRUE, _FALSE = ("true", "True", "t", "1"), ("false", "False", "f", "0")


def _bool_value(value: str) -> bool | None:
    return True if value in _TRUE else False if value in _FALSE else None


def _ceil_mode(value: str) -> str | None:
    flag = _bool_value(value)
    return None if flag is None else "round_mode: CEIL" if flag else "round_mode: FLOOR"


def _drop_if(wanted: bool) -> Callable[[str], str | None]:
    return lambda value: "" if _bool_value(value) is wanted else None


def _drop_if_one(value: str) -> str | None:
    return "" if value.isdigit() and int(value) == 1 else None


# Keyed by (protobuf message name, field name) as text_format reports an unknown field.
FORK_FIELDS = {
    (f.message, f.field): f
    for f in (
        ForkField(
            "PoolingParameter",
            "ceil_mode",
            "true rounds the output size up (BVLC round_mode: CEIL), false down (FLOOR)",
            _ceil_mode,
        ),
        ForkField(
            "BatchNormParameter",
            "do_all_reduce",
            "a fork's training option; only false (its default) is known to equal BVLC BatchNorm",
            _drop_if(False),
        ),
        ForkField(
            "BatchNormParameter",
            "use_alpha_beta",
            "a fork's option; only false (its default) is known to equal BVLC BatchNorm",
            _drop_if(False),
        ),
        ForkField(
            "ConvolutionParameter",
            "width_group",
            "a fork's grouping along the width axis; only 1 (its default) is BVLC convolution",
            _drop_if_one,
        ),
        ForkField(
            "ConvolutionParameter",
            "height_group",
            "a fork's grouping along the height axis; only 1 (its default) is BVLC convolution",
            _drop_if_one,
        ),
    )
}
