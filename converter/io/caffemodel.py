"""Read and write binary caffemodels without copying blob data through Python lists.

The reader walks the protobuf wire format itself: it only needs layer names, types and
blobs, and a packed float field can then be viewed in place (``np.frombuffer`` over a
memory map) instead of being decoded into millions of Python floats. Layer parameters
stored in a caffemodel are skipped on purpose: the prototxt alone decides structure.

``read_weight_file`` accepts every form Caffe's weights arrive in: binary caffemodels
(float, double, and NVIDIA Caffe's half-precision ``raw_data``), Caffe's HDF5 weights
(``converter.io.hdf5``), and a caffemodel compressed with gzip, bzip2 or xz, which is read
directly. Files of other kinds are recognised from their first bytes
(``converter.io.sniff``) and named in the error.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import mmap
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter.errors import ConverterError, file_error
from converter.io import sniff
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
# NVIDIA Caffe's BlobProto: raw_data_type (enum Type) and raw_data (bytes)
_BLOB_RAW_TYPE, _BLOB_RAW_DATA = 10, 12
_RAW_TYPES = {0: ("<f8", "float64"), 1: ("<f4", "float32"), 2: ("<f2", "float16")}
_RAW_TYPE_NAMES = {3: "INT", 4: "UINT", 5: "BOOL"}  # NVIDIA's other Type values
_SHAPE_DIM = 1

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


@dataclass
class StoredLayer:
    """One layer as a caffemodel stores it: what the readers need, nothing more."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)
    legacy_dims: list[bool] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)  # as stored: float32, float16, float64


@dataclass
class WeightFile:
    """The layers of a weights file, and the form they came in.

    ``format``: "caffemodel", "gzip-compressed caffemodel" (or bzip2, xz) or "hdf5". Which net
    layer of a repeated name receives a stored layer depends on it (``net.attach_weights``).
    """

    layers: list[StoredLayer]
    format: str


class _WireError(Exception):
    """Malformed protobuf bytes; turned into a ConverterError naming the file."""


class _PastEnd(_WireError):
    """A length field runs past the end of the message holding it."""

    def __init__(self, number: int, key_at: int, overrun: int):
        super().__init__(f"field {number} runs {overrun} bytes past its end")
        self.number, self.key_at, self.overrun = number, key_at, overrun


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
            key_at = self.pos
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
                    raise _PastEnd(number, key_at, size - (self.end - start))
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


def _parse_blob(buf, start: int, end: int) -> tuple[np.ndarray, bool, str]:
    """Return (array in the blob's declared shape, whether legacy 4-D dims were used, the
    stored dtype's name). Half-precision ``raw_data`` is widened to float32."""
    reader = _Reader(buf, start, end)
    legacy = {}
    dims: list[int] = []
    chunks: list[np.ndarray] = []
    double_chunks: list[np.ndarray] = []
    raw: list[tuple[int, int]] = []
    raw_type = 0  # the proto2 default of NVIDIA's enum Type: its first value, DOUBLE
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
        elif number == _BLOB_RAW_TYPE and wire == _VARINT:
            raw_type = a
        elif number == _BLOB_RAW_DATA and wire == _LEN:
            raw.append((a, b))
    if legacy:
        shape = [legacy.get(n, 0) for n in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH)]
    else:
        shape = dims
    if any(d < 0 for d in shape):
        raise _WireError(f"negative dimension in blob shape {tuple(shape)}")
    if chunks and double_chunks:
        raise _WireError("blob has both float and double data")
    if raw and (chunks or double_chunks):
        raise _WireError("blob has both raw_data and float or double data")
    expected = 1
    for d in shape:
        expected *= d
    if raw:
        data, dtype = _raw_values(buf, raw, raw_type, expected)
    else:
        parts = chunks or double_chunks
        data = (
            parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, "<f4")
        )
        dtype = "float64" if double_chunks else "float32"
    if data.size != expected:
        raise _WireError(
            f"blob declares shape {tuple(shape)} ({expected} values) but holds {data.size} values"
        )
    return data.reshape(shape), bool(legacy), dtype


def _raw_values(buf, spans: list[tuple[int, int]], raw_type: int, expected: int):
    """(float array, stored dtype name) of NVIDIA Caffe's ``raw_data`` bytes (the last
    ``raw_data`` field wins, as protobuf merges a singular bytes field)."""
    if raw_type not in _RAW_TYPES:
        name = _RAW_TYPE_NAMES.get(raw_type, str(raw_type))
        raise _WireError(f"raw_data of type {name} is not a weight type (FLOAT16, FLOAT, DOUBLE)")
    code, dtype = _RAW_TYPES[raw_type]
    a, b = spans[-1]
    width = np.dtype(code).itemsize
    if (b - a) % width:
        raise _WireError(f"{dtype} raw_data of {b - a} bytes is not a multiple of {width}")
    if (b - a) // width != expected:
        raise _WireError(
            f"blob declares {expected} values but its {dtype} raw_data holds {(b - a) // width}"
        )
    values = np.frombuffer(buf, code, count=(b - a) // width, offset=a)
    return (values.astype(np.float32) if dtype == "float16" else values), dtype


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
            array, legacy, dtype = _parse_blob(buf, a, b)
        except _WireError as exc:
            raise _WireError(f"layer '{layer.name}', blob {index}: {exc}") from None
        layer.blobs.append(array)
        layer.legacy_dims.append(legacy)
        layer.dtypes.append(dtype)
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
    """Every layer stored in a weights file, in file order, with its blobs as NumPy arrays.

    Float blobs are read-only views of a memory map of the file; legacy blobs keep
    their 4-D ``num/channels/height/width`` shape (``read_net`` reshapes them to the
    net's shapes, as Caffe does). Every form ``read_weight_file`` reads is accepted.
    """
    return read_weight_file(path).layers


def read_weight_file(path: str | os.PathLike) -> WeightFile:
    """The layers of a caffemodel in any form Caffe's weights come in, recognised by content.

    Binary caffemodels (float, double or half-precision blobs), Caffe's HDF5 weights, and a
    caffemodel compressed with gzip, bzip2 or xz (decompressed in memory). Anything else,
    and a truncated file, is a ConverterError that says what the file is.
    """
    path = Path(path)
    sniff.check_not_code_folder(path, "caffemodel")
    buf = _map_file(path)
    head = bytes(buf[: sniff.HEAD_BYTES])
    kind = sniff.check_not_impostor(path, "caffemodel", head)
    if kind == "hdf5":
        from converter.io.hdf5 import read_hdf5_weights

        return WeightFile(read_hdf5_weights(path), "hdf5")
    if kind is not None:
        data = _decompress(path, kind)
        inner = sniff.identify(data[: sniff.HEAD_BYTES])
        what = sniff.COMPRESSED[kind]
        if inner == "tar":
            raise ConverterError(
                f"{path}: is a {what}-compressed tar archive, not a caffemodel: unpack it "
                f"first (`tar -xf {path}`) and pass the caffemodel inside"
            )
        if inner is not None:
            raise ConverterError(
                f"{path}: holds {sniff.WHAT[inner]}, {what}-compressed, not a caffemodel: "
                f"decompress it first (`{what} -dc {path}`) and look at what it is"
            )
        return WeightFile(
            _parse_net(data, path, f" ({what}-compressed)"), f"{what}-compressed caffemodel"
        )
    if sniff.is_text(head):
        if sniff.looks_like_prototxt(head):
            raise ConverterError(
                f"{path}: is a prototxt (network definition in text format), not binary "
                "weights: pass it as the model definition and give the .caffemodel as weights"
            )
        raise ConverterError(sniff.short_text_message(path, "caffemodel", bytes(buf[:4096])))
    return WeightFile(_parse_net(buf, path), "caffemodel")


def _decompress(path: Path, kind: str) -> bytes:
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[kind]
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise ConverterError(
            f"{path}: is {sniff.COMPRESSED[kind]}-compressed, but the compressed data is "
            f"damaged or truncated ({exc}); download or copy it again"
        ) from None


def _parse_net(buf, path: Path, within: str = "") -> list[StoredLayer]:
    """The stored layers of binary NetParameter bytes; errors name ``path``."""
    layers: list[StoredLayer] = []
    fields = _Reader(buf, 0, len(buf)).fields()
    try:
        while True:
            try:
                number, wire, a, b = next(fields)
            except StopIteration:
                break
            except _WireError as exc:  # at the top level: where a truncated file shows
                raise ConverterError(
                    _top_level_problem(buf, path, exc, len(layers), within)
                ) from None
            if wire == _LEN and number in (_NET_LAYER, _NET_LAYERS_V1):
                layers.append(_parse_layer(buf, a, b, v1=number == _NET_LAYERS_V1))
    except (_WireError, ValueError, OverflowError) as exc:
        raise ConverterError(f"{path}: not a valid caffemodel{within}: {exc}") from None
    if not layers:
        blob = blob_shape(buf)
        if blob is not None:
            raise ConverterError(sniff.binaryproto_message(path, "caffemodel", blob))
        raise ConverterError(f"{path}: not a valid caffemodel{within}: it holds no layers")
    return layers


def _top_level_problem(buf, path: Path, exc: _WireError, done: int, within: str) -> str:
    """The message for a malformed top-level field: a truncated file says by how much."""
    size = len(buf)
    if isinstance(exc, _PastEnd) or str(exc) == "truncated varint":
        where = f"layer {done + 1}" + (f" ('{name}')" if (name := _name_at(buf, exc)) else "")
        if isinstance(exc, _PastEnd):
            how = (
                f"a length field runs {exc.overrun:,} bytes past the end of the {size:,}-byte file"
            )
        else:
            how = f"the {size:,}-byte file ends inside a field header"
        return (
            f"{path}: truncated caffemodel{within}: {how} (it stops in {where}); download or "
            "copy it again"
        )
    return f"{path}: not a valid caffemodel{within}: {exc}"


def _name_at(buf, exc: _WireError) -> str | None:
    """The name of the layer that a top-level field running past the end begins, when the
    bytes that are there hold a printable one."""
    if not isinstance(exc, _PastEnd) or exc.number not in (_NET_LAYER, _NET_LAYERS_V1):
        return None
    name_field = _V1_NAME if exc.number == _NET_LAYERS_V1 else _LAYER_NAME
    reader = _Reader(buf, exc.key_at, len(buf))
    try:
        reader.varint()  # the key
        reader.varint()  # the length that runs past the end
        for number, wire, a, b in reader.fields():
            if number == name_field and wire == _LEN:
                name = _text(buf, a, b)
                return name if name.isprintable() else None
    except _WireError:
        return None
    return None


def blob_shape(buf) -> tuple[int, ...] | None:
    """The shape of ``buf`` read as one BlobProto holding data (a .binaryproto), else None."""
    try:
        array, _, _ = _parse_blob(buf, 0, len(buf))
    except (_WireError, ValueError, OverflowError):
        return None
    return tuple(array.shape) if array.size else None


def read_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Map each layer name of a weights file to its blobs, in Caffe's blob order.

    A name stored again without blobs (Caffe saves every layer, so a net with repeated
    names saves them repeatedly) is skipped; a name stored twice with blobs is an error.
    """
    weights: dict[str, list[np.ndarray]] = {}
    for layer in read_caffemodel(path):
        if layer.name in weights and layer.blobs and weights[layer.name]:
            raise ConverterError(f"{path}: layer '{layer.name}' is stored twice")
        if layer.blobs or layer.name not in weights:
            weights[layer.name] = layer.blobs
    return weights


def read_blob(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.binaryproto`` file (one BlobProto, e.g. a mean image) as a NumPy array.
    Another kind of file (a caffemodel, an image, ...) is a ConverterError saying what it is."""
    path = Path(path)
    sniff.check_not_code_folder(path, "mean")
    buf = _map_file(path)
    head = bytes(buf[: sniff.HEAD_BYTES])
    sniff.check_not_impostor(path, "mean", head)
    if sniff.looks_like_caffemodel(head) or sniff.is_text(head):
        kind = "caffemodel" if sniff.looks_like_caffemodel(head) else "prototxt"
        if kind == "prototxt" and not sniff.looks_like_prototxt(head):
            raise ConverterError(sniff.short_text_message(path, "mean", bytes(buf[:4096])))
        raise ConverterError(sniff.impostor_message(path, "mean", kind, head))
    try:
        array, _, _ = _parse_blob(buf, 0, len(buf))
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
