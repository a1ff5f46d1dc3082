"""Fuzzing the readers: any bytes either read or raise ConverterError, fast and in bounded memory.

Inputs come from four generators: raw bytes and text; protobuf wire messages built field by
field (every wire type, overlong lengths, huge and negative varints, field number 0); real
Caffe files with random damage; prototxts generated from caffe.proto's own descriptors.
``EXAMPLES`` is the number of inputs each test tries per run (3,300 in all).
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES
from converter import caffe_pb2
from converter.errors import ConverterError
from converter.inspect import layer_table
from converter.io.caffemodel import read_blob, read_caffemodel
from converter.io.prototxt import parse_prototxt, read_prototxt
from converter.net import net_from_param, read_net, write_caffemodel

EXAMPLES = {
    "raw_caffemodel": 600,
    "wire_caffemodel": 300,
    "damaged_real_caffemodel": 500,
    "blob": 400,
    "huge_shapes": 200,
    "raw_prototxt": 800,
    "generated_prototxt": 500,
}

BN = FIXTURES / "bn_variants"
REAL_PROTOTXT = BN / "bn_variants.prototxt"
REAL_CAFFEMODEL = (BN / "bn_variants.caffemodel").read_bytes()


def fuzz(name: str):
    """Hypothesis settings for one fuzz test: its example count and a deadline that catches
    hangs (an input taking seconds) without tripping on a busy 2-core machine."""
    return settings(
        max_examples=EXAMPLES[name],
        deadline=3000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def read_or_reject(read, *args):
    """Call a reader; a ConverterError is an accepted answer, anything else fails the test."""
    try:
        result = read(*args)
    except ConverterError as exc:
        assert str(exc) and "\n" not in str(exc)
        event(f"{read.__name__}: rejected")
        return None
    event(f"{read.__name__}: accepted")
    return result


# ----------------------------------------------------------------------------- wire format


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers as protobuf encodes an int64
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint((number << 3) | wire)


# Declared lengths are usually right; sometimes short, long, or absurd.
length_errors = st.sampled_from([0] * 150 + [-1, 1, 3, 1 << 31, (1 << 63) - 1])


@st.composite
def delimited(draw, number: int, payload: bytes) -> bytes:
    size = max(len(payload) + draw(length_errors), 0)
    return key(number, 2) + varint(size) + payload


dims = st.one_of(
    st.integers(-3, 12),
    st.sampled_from([0, (1 << 31) - 1, 1 << 31, 1 << 32, 1 << 40, 1 << 62, (1 << 63) - 1]),
    st.integers(-(1 << 63), (1 << 64) - 1),
)


@st.composite
def junk_field(draw) -> bytes:
    """Any field: any number (0 included), any wire type (3, 4, 6, 7 included), any payload."""
    number = draw(st.integers(1, 20) | st.sampled_from([0, 100, 1000, (1 << 29) - 1]))
    wire = draw(st.integers(0, 7))
    if wire == 0:
        body = varint(draw(st.integers(0, (1 << 64) - 1)))
    elif wire == 1:
        body = draw(st.binary(min_size=0, max_size=8))
    elif wire == 2:
        return draw(delimited(number, draw(st.binary(max_size=16))))
    elif wire == 5:
        body = draw(st.binary(min_size=0, max_size=4))
    else:
        body = draw(st.binary(max_size=4))
    return key(number, wire) + body


# BlobProto data fields: kind -> (field number, wire type, bytes per value)
_DATA_FIELDS = {
    "data": (5, 2, 4),
    "data_unpacked": (5, 5, 4),
    "double": (8, 2, 8),
    "double_unpacked": (8, 1, 8),
}


@st.composite
def blob_message(draw) -> bytes:
    """BlobProto bytes: shapes (packed, unpacked, legacy), float/double data, junk."""
    parts = []
    kinds = st.sampled_from(
        ["consistent"] * 8
        + ["shape", "shape_unpacked", "legacy", "data", "data_unpacked", "double"]
        + ["double_unpacked", "junk"]
    )
    for kind in draw(st.lists(kinds, max_size=3)):
        if kind == "consistent":  # a well-formed blob, so the success path is fuzzed too
            shape = draw(st.lists(st.integers(0, 3), max_size=3))
            packed = b"".join(varint(d) for d in shape)
            size = 4 * math.prod(shape)
            floats = np.frombuffer(draw(st.binary(min_size=size, max_size=size)), "<f4")
            parts.append(draw(delimited(7, draw(delimited(1, packed)))))
            parts.append(draw(delimited(5, floats.tobytes())))
        elif kind == "shape":
            packed = b"".join(varint(d) for d in draw(st.lists(dims, max_size=5)))
            parts.append(draw(delimited(7, draw(delimited(1, packed)))))
        elif kind == "shape_unpacked":
            body = b"".join(key(1, 0) + varint(d) for d in draw(st.lists(dims, max_size=5)))
            parts.append(draw(delimited(7, body)))
        elif kind == "legacy":
            parts.append(key(draw(st.integers(1, 4)), 0) + varint(draw(dims)))
        elif kind in _DATA_FIELDS:  # float (5) or double (8) data, packed or one by one
            number, wire, width = _DATA_FIELDS[kind]
            if wire == 2:
                parts.append(draw(delimited(number, draw(st.binary(max_size=96)))))
            else:
                count = draw(st.integers(0, 6))
                value = st.binary(min_size=width, max_size=width)
                parts.append(b"".join(key(number, wire) + draw(value) for _ in range(count)))
        else:
            parts.append(draw(junk_field()))
    return b"".join(parts)


names = st.sampled_from([b"conv1", b"fc", b"bn_eps", b"", b"\xc3\xa9"] * 3 + [b"\xff", b"c"])


@st.composite
def layer_message(draw) -> bytes:
    """A LayerParameter (name 1, type 2, blobs 7) with junk and a copied pooling_param."""
    parts = [draw(delimited(1, draw(names))), draw(delimited(2, draw(names)))]
    parts += [draw(delimited(7, blob)) for blob in draw(st.lists(blob_message(), max_size=3))]
    if draw(st.booleans()):  # pooling_param (121) with field 13 set, as forks and BVLC write it
        parts.append(draw(delimited(121, key(13, 0) + varint(draw(st.integers(0, 3))))))
    if draw(st.integers(0, 3)) == 0:
        parts.append(draw(junk_field()))
    return shuffled(draw, parts)


@st.composite
def v1_layer_message(draw) -> bytes:
    """A V1LayerParameter (name 4, enum type 5, blobs 6) or one wrapping a V0 layer (field 1)."""
    blobs = draw(st.lists(blob_message(), max_size=2))
    if draw(st.booleans()):
        v0 = draw(delimited(1, draw(names))) + draw(delimited(2, draw(names)))
        v0 += b"".join(draw(delimited(50, blob)) for blob in blobs)
        return draw(delimited(1, v0))
    parts = [draw(delimited(4, draw(names))), key(5, 0) + varint(draw(st.integers(0, 60)))]
    parts += [draw(delimited(6, blob)) for blob in blobs]
    return shuffled(draw, parts)


@st.composite
def net_message(draw) -> bytes:
    parts = [draw(delimited(1, draw(names)))]
    for _ in range(draw(st.sampled_from([1, 2, 3, 0]))):
        if draw(st.integers(0, 3)) == 0:
            parts.append(draw(delimited(2, draw(v1_layer_message()))))
        else:
            parts.append(draw(delimited(100, draw(layer_message()))))
    if draw(st.integers(0, 3)) == 0:
        parts.append(draw(junk_field()))
    return shuffled(draw, parts)


def shuffled(draw, parts: list[bytes]) -> bytes:
    """The fields in a drawn rotation: cheaper to draw than a full permutation."""
    turn = draw(st.integers(0, len(parts) - 1)) if parts else 0
    return b"".join(parts[turn:] + parts[:turn])


def check_layers(layers) -> None:
    """What a successful read returns must be usable: named layers, blobs that sum."""
    for layer in layers:
        assert isinstance(layer.name, str)
        for blob in layer.blobs:
            assert blob.size == math.prod(blob.shape)
            with np.errstate(all="ignore"):  # random bits make NaN and Inf
                float(np.sum(blob, dtype=np.float64))


def blob_in_layer(blob: bytes) -> bytes:
    """A net with one layer named 'x' holding ``blob``."""
    layer = key(1, 2) + varint(1) + b"x" + key(7, 2) + varint(len(blob)) + blob
    return key(100, 2) + varint(len(layer)) + layer


def shape(*dims: int) -> bytes:
    packed = b"".join(varint(d) for d in dims)
    inner = key(1, 2) + varint(len(packed)) + packed
    return key(7, 2) + varint(len(inner)) + inner


def floats(count: int) -> bytes:
    return key(5, 2) + varint(4 * count) + b"\0" * (4 * count)


HOSTILE = {
    # name: (bytes of a caffemodel, words the error must contain)
    "field number 0": (key(0, 0) + varint(1), "field number 0"),
    "wire type 3 (start group)": (key(100, 3), "wire type 3"),
    "wire type 4 (end group)": (key(100, 4), "wire type 4"),
    "wire type 6": (key(5, 6), "wire type 6"),
    "wire type 7": (key(5, 7), "wire type 7"),
    "length past the end": (
        key(100, 2) + varint(1000) + b"abc",
        "truncated caffemodel: a length field runs 997 bytes past the end of the 7-byte file",
    ),
    "length of 2^63": (key(100, 2) + varint((1 << 63) - 1), "past the end of the 11-byte file"),
    "length past the end of a layer": (
        key(100, 2) + varint(5) + key(7, 2) + varint(9) + b"abc",
        "not a valid caffemodel: field 7 runs 6 bytes past its end",  # damage, not a cut
    ),
    "truncated varint": (key(100, 2) + b"\xff\xff", "truncated .*ends inside a field header"),
    "varint longer than 10 bytes": (b"\xff" * 11 + b"\x01", "varint"),
    "truncated fixed32": (key(5, 5) + b"\x00\x00", "truncated"),
    "negative dim": (blob_in_layer(shape(-1, 4) + floats(4)), "negative"),
    "dims whose product overflows": (blob_in_layer(shape(1 << 62, 1 << 62, 8)), "values"),
    "2^40 values declared, 2 present": (
        blob_in_layer(shape(1 << 20, 1 << 20) + floats(2)),
        "2 values",
    ),
    "legacy dims of 2^31 - 1": (
        blob_in_layer(key(1, 0) + varint((1 << 31) - 1) + floats(1)),
        "values",
    ),
    "float data not a multiple of 4": (
        blob_in_layer(key(5, 2) + varint(3) + b"abc"),
        "multiple of 4",
    ),
    "float and double data": (blob_in_layer(shape(1) + floats(1) + key(8, 1) + b"\0" * 8), "both"),
    "layer name not UTF-8": (key(100, 2) + varint(3) + key(1, 2) + varint(1) + b"\xff", "UTF-8"),
    "no layers": (key(1, 2) + varint(3) + b"net", "no layers"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_wire_fields(scratch, case):
    data, words = HOSTILE[case]
    path = scratch / "hostile.caffemodel"
    path.write_bytes(data)
    with pytest.raises(ConverterError, match=r"hostile\.caffemodel: .*" + words):
        read_caffemodel(path)


@fuzz("raw_caffemodel")
@given(data=st.binary(max_size=2048))
def test_any_bytes_as_caffemodel(scratch, data):
    path = scratch / "raw.caffemodel"
    path.write_bytes(data)
    layers = read_or_reject(read_caffemodel, path)
    if layers is not None:
        check_layers(layers)


@fuzz("wire_caffemodel")
@given(data=net_message())
def test_protobuf_shaped_caffemodel(scratch, data):
    path = scratch / "wire.caffemodel"
    path.write_bytes(data)
    layers = read_or_reject(read_caffemodel, path)
    if layers is not None:
        check_layers(layers)
    read_or_reject(read_net, REAL_PROTOTXT, path)


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """``original`` after 1-4 random edits: bit flips, cuts, inserts, deletes, overwrites."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["flip", "cut", "insert", "delete", "overwrite"]))
        if edit == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "cut":
            del data[at:]
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
    return bytes(data)


@fuzz("damaged_real_caffemodel")
@given(data=damaged(REAL_CAFFEMODEL))
def test_damaged_real_caffemodel(scratch, data):
    path = scratch / "damaged.caffemodel"
    path.write_bytes(data)
    net = read_or_reject(read_net, REAL_PROTOTXT, path)
    if net is not None:  # damage the reader cannot see (a float's bits) leaves a usable net
        layer_table(net)


@fuzz("blob")
@given(data=st.one_of(blob_message(), st.binary(max_size=512)))
def test_any_bytes_as_binaryproto(scratch, data):
    path = scratch / "mean.binaryproto"
    path.write_bytes(data)
    array = read_or_reject(read_blob, path)
    if array is not None:
        assert array.size > 0 and array.flags.writeable


@fuzz("huge_shapes")
@given(
    shape=st.lists(st.integers(1, 1000), max_size=5).flatmap(
        lambda small: st.integers(1 << 24, (1 << 63) - 1).flatmap(
            lambda huge: st.permutations([*small, huge])
        )
    ),
    values=st.integers(0, 64),
)
def test_huge_declared_shapes_allocate_nothing(scratch, shape, values):
    blob = caffe_pb2.BlobProto(data=[1.0] * values)
    blob.shape.dim.extend(shape)
    net = caffe_pb2.NetParameter()
    net.layer.add(name="huge", type="Convolution").blobs.append(blob)
    path = scratch / "huge.caffemodel"
    path.write_bytes(net.SerializeToString())
    tracemalloc.start()
    try:
        with pytest.raises(ConverterError, match=r"layer 'huge', blob 0: .*values"):
            read_caffemodel(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"reading a {path.stat().st_size}-byte file peaked at {peak} bytes"


# ----------------------------------------------------------------------------- prototxt


@fuzz("raw_prototxt")
@given(data=st.one_of(st.binary(max_size=512), st.text(max_size=512).map(str.encode)))
def test_any_bytes_as_prototxt(scratch, data):
    path = scratch / "raw.prototxt"
    path.write_bytes(data)
    param = read_or_reject(read_prototxt, path)
    if param is not None:
        net = read_or_reject(net_from_param, param, str(path))
        if net is not None:
            read_or_reject(net.shapes)


LAYER_TYPES = {
    "Convolution": ("convolution_param", "num_output: {a} kernel_size: {b}"),
    "Deconvolution": ("convolution_param", "num_output: {a} kernel_size: {b}"),
    "InnerProduct": ("inner_product_param", "num_output: {a}"),
    "Pooling": ("pooling_param", "kernel_size: {b} stride: {a}"),
    "BatchNorm": ("batch_norm_param", ""),
    "Scale": ("scale_param", ""),
    "Bias": ("bias_param", ""),
    "PReLU": ("prelu_param", ""),
    "ReLU": ("relu_param", ""),
    "Eltwise": ("eltwise_param", ""),
    "Concat": ("concat_param", ""),
    "Slice": ("slice_param", ""),
    "Split": ("", ""),
    "Flatten": ("flatten_param", ""),
    "Reshape": ("reshape_param", "shape {{ dim: 0 dim: -1 }}"),
    "Softmax": ("softmax_param", ""),
    "Dropout": ("dropout_param", ""),
    "Frobnicate": ("", ""),
}
_F = FieldDescriptor
_INTS = (_F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32, _F.TYPE_UINT64)
# Mostly values the schema accepts, so inputs get past the parser; some that it rejects.
small_ints = (
    st.integers(0, 4) | st.integers(0, 4) | st.integers(0, 4) | st.sampled_from([-1, 1 << 32])
)
floats_text = st.sampled_from(["0", "1", "-1", "0.5", "1e-5", "nan", "inf", "-inf", "1e40"])


@st.composite
def message_text(draw, descriptor, depth: int = 0) -> str:
    """Text-format fields of ``descriptor`` with random values, valid and not."""
    out = []
    fields = st.sampled_from(list(descriptor.fields))
    for fd in draw(st.lists(fields, max_size=2, unique_by=lambda fd: fd.name)):
        if fd.type == _F.TYPE_MESSAGE:
            if depth < 2:
                out.append(f"{fd.name} {{ {draw(message_text(fd.message_type, depth + 1))} }}")
            continue
        if fd.type in _INTS:
            value = str(draw(small_ints))
        elif fd.type in (_F.TYPE_FLOAT, _F.TYPE_DOUBLE):
            value = draw(floats_text)
        elif fd.type == _F.TYPE_BOOL:
            value = draw(st.sampled_from(["true", "false"]))
        elif fd.type == _F.TYPE_ENUM:
            value = draw(st.sampled_from([v.name for v in fd.enum_type.values] * 4 + ["BOGUS"]))
        else:
            value = '"' + draw(st.sampled_from(["", "data", "x y"])) + '"'
        out.append(f"{fd.name}: {value}")
    return " ".join(out)


@st.composite
def prototxt_net(draw) -> str:
    """A net that often makes sense: an Input, then layers reading blobs made before them."""
    shape = " ".join(f"dim: {d}" for d in draw(st.lists(st.integers(-1, 6), max_size=5)))
    lines = [
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {shape} }} }} }}'
    ]
    blobs = ["data"]
    for index in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(sorted(LAYER_TYPES)))
        field, base = LAYER_TYPES[kind]
        bottoms = draw(
            st.lists(st.sampled_from([*blobs] * 4 + ["missing"]), min_size=1, max_size=3)
        )
        if draw(st.integers(0, 3)) == 0:
            tops = bottoms[:1]  # in place
        else:
            tops = [f"b{index}_{j}" for j in range(draw(st.integers(0, 2)))]
        params = ""
        if field:
            body = base.format(a=draw(st.integers(1, 4)), b=draw(st.integers(1, 3)))
            descriptor = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name[field].message_type
            body += " " + draw(message_text(descriptor))
            if kind == "Pooling" and draw(st.booleans()):
                body += " ceil_mode: " + draw(st.sampled_from(["true", "false", "true", "2"]))
            params = f"{field} {{ {body} }}"
        text = f'layer {{ name: "l{index}" type: "{kind}" '
        text += " ".join(f'bottom: "{b}"' for b in bottoms) + " "
        text += " ".join(f'top: "{t}"' for t in tops) + f" {params} }}"
        lines.append(text)
        blobs += tops
    return "\n".join(lines)


@fuzz("generated_prototxt")
@given(text=prototxt_net(), seed=st.integers(0, 2**32 - 1))
@example(  # found by this test: write_caffemodel failed on a weight with a 0 in its shape
    text='layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 0 dim: 0 } } }'
    '\nlayer { name: "l0" type: "Convolution" bottom: "data" top: "data" '
    "convolution_param { num_output: 1 kernel_size: 1 } }",
    seed=0,
)
def test_generated_prototxt_and_its_weights(scratch, text, seed):
    """Parse, build, infer shapes; when that works, weights of the implied shapes written by
    ``write_caffemodel`` must read back exactly (a pair that matches must be accepted)."""
    param = read_or_reject(parse_prototxt, text, "gen.prototxt")
    net = param and read_or_reject(net_from_param, param, "gen.prototxt")
    shapes = net and read_or_reject(net.shapes)
    if not shapes:
        return
    layer_table(net)
    sizes = [math.prod(s) for entry in shapes for s in (entry.param_shapes or [])]
    if any(entry.param_shapes is None for entry in shapes) or sum(sizes, 0) > 1 << 16:
        return
    rng = np.random.default_rng(seed)
    for layer, entry in zip(net.layers, shapes):
        layer.blobs = [rng.standard_normal(s).astype(np.float32) for s in entry.param_shapes]
    (scratch / "gen.prototxt").write_text(text)
    write_caffemodel(net, scratch / "gen.caffemodel")
    again = read_net(scratch / "gen.prototxt", scratch / "gen.caffemodel")
    event("weights written and read back")
    for ours, theirs in zip(net.layers, again.layers):
        assert len(ours.blobs) == len(theirs.blobs)
        for a, b in zip(ours.blobs, theirs.blobs):
            assert np.array_equal(a, b)
