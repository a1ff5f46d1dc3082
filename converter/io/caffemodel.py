"""Read and write binary caffemodels without copying blob data through Python lists.

The reader walks the protobuf wire format itself: it only needs layer names, types and
blobs, and a packed float field can then be viewed in place (``np.frombuffer`` over a
memory map) instead of being decoded into millions of Python floats. Layer parameters
stored in a caffemodel are skipped on purpose: the prototxt alone decides structure.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter.errors import ConverterError, file_error
from converter.io.atomic import atomic_write
from converter.io.upgrade import V1_TYPE_NAMES

# NetParameter fields
_NET_LAYER = 100  # LayerParameter
_NET_LAYERS_V1 = 2  # V1LayerParameter
# LayerParameter fields
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
# V1LayerParameter fields (V0LayerParameter nested at field 1 keeps name/type/blobs at 1/2/50)
_V1_NAME, _V1_TYPE, _V1_BLOBS, _V1_V0 = 4, 5, 6, 1
_V0_NAME, _V0_TYPE, _V0_BLOBS = 1, 2, 50
# BlobProto fields
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH = 1, 2, 3, 4
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
_SHAPE_DIM = 1

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


@dataclass
class StoredLayer:
    """One layer as a caffemodel stores it: what the readers need, nothing more."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)
    legacy_dims: list[bool] = field(default_factory=list)


class _WireError(Exception):
    """Malformed protobuf bytes; turned into a ConverterError naming the file."""


class _Reader:
    """Walks protobuf fields over a buffer, within [start, end)."""

    def __init__(self, buf: memoryview | bytes | mmap.mmap, start: int, end: int):
        self.buf, self.pos, self.end = buf, start, end

    def varint(self) -> int:
        result = shift = 0
        buf, pos, end = self.buf, self.pos, self.end
        while True:
            if pos >= end:
                raise _WireError("truncated varint")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift >= 70:
                raise _WireError("varint longer than 10 bytes")
        self.pos = pos
        return result

    def fields(self) -> Iterator[tuple[int, int, int, int]]:
        """Yield (field number, wire type, value or payload start, payload end)."""
        while self.pos < self.end:
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise _WireError("field number 0")
            if wire == _VARINT:
                value = self.varint()
                yield number, wire, value, self.pos
            elif wire == _LEN:
                size = self.varint()
                start = self.pos
                if size > self.end - start:
                    raise _WireError(
                        f"field {number} runs {size - (self.end - start)} bytes past its end"
                    )
                self.pos = start + size
                yield number, wire, start, self.pos
            elif wire in (_FIXED32, _FIXED64):
                width = 4 if wire == _FIXED32 else 8
                start = self.pos
                if start + width > self.end:
                    raise _WireError(f"truncated fixed-width field {number}")
                self.pos = start + width
                yield number, wire, start, self.pos
            else:
                raise _WireError(f"unsupported wire type {wire} for field {number}")


def _text(buf, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _WireError("a name is not valid UTF-8") from exc


def _packed_varints(buf, start: int, end: int) -> list[int]:
    reader = _Reader(buf, start, end)
    values = []
    while reader.pos < end:
        values.append(reader.varint())
    return values


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fixed_run(buf, reader: _Reader, first: int, tag: int, width: int, dtype: str) -> np.ndarray:
    """Collect a run of non-packed fixed-width values, each preceded by the same 1-byte tag."""
    stride = width + 1
    following = (reader.end - reader.pos) // stride
    run = 1
    if following:
        tags = np.ndarray((following,), np.uint8, buffer=buf, offset=reader.pos, strides=(stride,))
        mismatch = np.flatnonzero(tags != tag)
        run += int(mismatch[0]) if mismatch.size else following
    values = np.ndarray((run,), dtype, buffer=buf, offset=first, strides=(stride,)).copy()
    reader.pos = first + width + (run - 1) * stride
    return values


def _parse_blob(buf, start: int, end: int) -> tuple[np.ndarray, bool]:
    """Return (array in the blob's declared shape, whether legacy 4-D dims were used)."""
    reader = _Reader(buf, start, end)
    legacy = {}
    dims: list[int] = []
    chunks: list[np.ndarray] = []
    double_chunks: list[np.ndarray] = []
    for number, wire, a, b in reader.fields():
        if number in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH) and wire == _VARINT:
            legacy[number] = _signed64(a) if a >= 1 << 31 else a
        elif number == _BLOB_SHAPE and wire == _LEN:
            for dn, dw, da, db in _Reader(buf, a, b).fields():
                if dn != _SHAPE_DIM:
                    continue
                if dw == _LEN:
                    dims.extend(_signed64(v) for v in _packed_varints(buf, da, db))
                elif dw == _VARINT:
                    dims.append(_signed64(da))
        elif number == _BLOB_DATA and wire == _LEN:
            if (b - a) % 4:
                raise _WireError(f"packed float data of {b - a} bytes is not a multiple of 4")
            chunks.append(np.frombuffer(buf, "<f4", count=(b - a) // 4, offset=a))
        elif number == _BLOB_DATA and wire == _FIXED32:
            chunks.append(_fixed_run(buf, reader, a, (_BLOB_DATA << 3) | _FIXED32, 4, "<f4"))
        elif number == _BLOB_DOUBLE_DATA and wire == _LEN:
            if (b - a) % 8:
                raise _WireError(f"packed double data of {b - a} bytes is not a multiple of 8")
            double_chunks.append(np.frombuffer(buf, "<f8", count=(b - a) // 8, offset=a))
        elif number == _BLOB_DOUBLE_DATA and wire == _FIXED64:
            tag = (_BLOB_DOUBLE_DATA << 3) | _FIXED64
            double_chunks.append(_fixed_run(buf, reader, a, tag, 8, "<f8"))
    if legacy:
        shape = [legacy.get(n, 0) for n in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH)]
    else:
        shape = dims
    if any(d < 0 for d in shape):
        raise _WireError(f"negative dimension in blob shape {tuple(shape)}")
    if chunks and double_chunks:
        raise _WireError("blob has both float and double data")
    parts = chunks or double_chunks
    data = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, "<f4")
    expected = 1
    for d in shape:
        expected *= d
    if data.size != expected:
        raise _WireError(
            f"blob declares shape {tuple(shape)} ({expected} values) but holds {data.size} values"
        )
    return data.reshape(shape), bool(legacy)


def _parse_layer(buf, start: int, end: int, v1: bool) -> StoredLayer:
    name_field, type_field, blobs_field = (
        (_V1_NAME, _V1_TYPE, _V1_BLOBS) if v1 else (_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS)
    )
    layer = StoredLayer(name="", type="")
    blob_spans = []
    for number, wire, a, b in _Reader(buf, start, end).fields():
        if number == name_field and wire == _LEN:
            layer.name = _text(buf, a, b)
        elif number == type_field and v1 and wire == _VARINT:
            layer.type = V1_TYPE_NAMES.get(a, f"V1 type {a}")
        elif number == type_field and not v1 and wire == _LEN:
            layer.type = _text(buf, a, b)
        elif number == blobs_field and wire == _LEN:
            blob_spans.append((a, b))
        elif v1 and number == _V1_V0 and wire == _LEN:
            for n0, w0, a0, b0 in _Reader(buf, a, b).fields():
                if n0 == _V0_NAME and w0 == _LEN and not layer.name:
                    layer.name = _text(buf, a0, b0)
                elif n0 == _V0_TYPE and w0 == _LEN and not layer.type:
                    layer.type = _text(buf, a0, b0)
                elif n0 == _V0_BLOBS and w0 == _LEN:
                    blob_spans.append((a0, b0))
    for index, (a, b) in enumerate(blob_spans):
        try:
            array, legacy = _parse_blob(buf, a, b)
        except _WireError as exc:
            raise _WireError(f"layer '{layer.name}', blob {index}: {exc}") from None
        layer.blobs.append(array)
        layer.legacy_dims.append(legacy)
    return layer


def _map_file(path: Path) -> mmap.mmap | bytes:
    try:
        if path.is_dir():
            raise IsADirectoryError
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise ConverterError(f"{path}: file is empty")
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise file_error(path, exc) from None


def read_caffemodel(path: str | os.PathLike) -> list[StoredLayer]:
    """Every layer stored in a caffemodel, in file order, with its blobs as NumPy arrays.

    Float blobs are read-only views of a memory map of the file; legacy blobs keep
    their 4-D ``num/channels/height/width`` shape (``read_net`` reshapes them to the
    net's shapes, as Caffe does).
    """
    path = Path(path)
    buf = _map_file(path)
    layers: list[StoredLayer] = []
    try:
        for number, wire, a, b in _Reader(buf, 0, len(buf)).fields():
            if wire == _LEN and number in (_NET_LAYER, _NET_LAYERS_V1):
                layers.append(_parse_layer(buf, a, b, v1=number == _NET_LAYERS_V1))
    except _WireError as exc:
        raise ConverterError(f"{path}: not a valid caffemodel: {exc}") from None
    except (ValueError, OverflowError) as exc:
        raise ConverterError(f"{path}: not a valid caffemodel: {exc}") from None
    if not layers:
        raise ConverterError(f"{path}: not a valid caffemodel: it holds no layers")
    return layers


def read_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Map each layer name of a caffemodel to its blobs, in Caffe's blob order."""
    weights: dict[str, list[np.ndarray]] = {}
    for layer in read_caffemodel(path):
        if layer.name in weights:
            raise ConverterError(f"{path}: layer '{layer.name}' is stored twice")
        weights[layer.name] = layer.blobs
    return weights


def read_blob(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.binaryproto`` file (one BlobProto, e.g. a mean image) as a NumPy array."""
    path = Path(path)
    buf = _map_file(path)
    try:
        array, _ = _parse_blob(buf, 0, len(buf))
    except (_WireError, ValueError, OverflowError) as exc:
        raise ConverterError(f"{path}: not a valid binaryproto blob: {exc}") from None
    if array.size == 0:
        raise ConverterError(f"{path}: not a valid binaryproto blob: it holds no data")
    return np.array(array)


# ----------------------------------------------------------------------------- writing


def _key(number: int, wire: int) -> bytes:
    return _encode_varint((number << 3) | wire)


def _encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, payload_size: int) -> bytes:
    return _key(number, _LEN) + _encode_varint(payload_size)


def _blob_parts(array: np.ndarray) -> list[bytes | memoryview]:
    """BlobProto bytes for ``array``: shape then packed float32 data (big data not copied)."""
    array = np.asarray(array, dtype="<f4")
    dims = b"".join(_encode_varint(int(d)) for d in array.shape)
    shape_msg = _len_field(_SHAPE_DIM, len(dims)) + dims if array.ndim else b""
    # flat (ascontiguousarray also turns a 0-d array into 1-d: the shape comes from above)
    raw = memoryview(np.ascontiguousarray(array).reshape(-1)).cast("B")
    head = _len_field(_BLOB_SHAPE, len(shape_msg)) + shape_msg + _len_field(_BLOB_DATA, raw.nbytes)
    return [head, raw]


def _layer_parts(
    header: bytes, blobs: Iterable[np.ndarray]
) -> tuple[int, list[bytes | memoryview]]:
    parts: list[bytes | memoryview] = [header]
    for array in blobs:
        blob = _blob_parts(array)
        size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in blob)
        parts.append(_len_field(_LAYER_BLOBS, size))
        parts.extend(blob)
    size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    return size, parts


def write_layers(
    path: str | os.PathLike, name: str, layers: Iterable[tuple[bytes, list[np.ndarray]]]
) -> None:
    """Write a caffemodel from (serialized LayerParameter without blobs, blobs) pairs.

    The file is written to a temporary name and renamed, so a failure leaves nothing behind.
    """
    path = Path(path)
    name_bytes = name.encode()
    with atomic_write(path) as handle:
        if name_bytes:
            handle.write(_len_field(1, len(name_bytes)) + name_bytes)
        for header, blobs in layers:
            size, parts = _layer_parts(header, blobs)
            handle.write(_len_field(_NET_LAYER, size))
            for part in parts:
                handle.write(part)
