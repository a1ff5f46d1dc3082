"""What a file really is, from its first bytes: the files people pass for a Caffe model.

Downloads go wrong in a few well-known ways: a web page saved instead of the file, a Git
LFS pointer from a clone without LFS, a server's short error text, an archive nobody
unpacked, another framework's file, or the two arguments given the wrong way round. Each is
recognised from its content (magic numbers and structure, never the file name) and named in
one line that says what the file is and what to do.

``identify`` names the kind; ``impostor_message`` words the error for the role the file was
given ("prototxt" or "caffemodel"). The readers call them before parsing, so a user never
sees a message about protobuf wire types for a file that was never a model.
"""

from __future__ import annotations

import os
import re
import tarfile
import zipfile
from pathlib import Path

from converter.errors import ConverterError, file_error

HEAD_BYTES = 4096  # enough for every signature below, and for a short text's first line
SHORT_TEXT_BYTES = 1024  # a text this short in a model's place is a server's reply
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# kind -> (what it is, as a noun phrase)
WHAT = {
    "html": "an HTML web page",
    "xml": "an XML document",
    "lfs": "a Git LFS pointer",
    "gzip": "gzip-compressed data",
    "bz2": "bzip2-compressed data",
    "xz": "xz-compressed data",
    "zstd": "zstd-compressed data",
    "zip": "a zip archive",
    "7z": "a 7-Zip archive",
    "rar": "a RAR archive",
    "tar": "a tar archive",
    "hdf5": "an HDF5 file",
    "npy": "a NumPy .npy array",
    "npz": "a NumPy .npz archive of arrays",
    "pytorch": "a PyTorch file (torch.save)",
    "pickle": "a Python pickle (e.g. an older PyTorch .pt/.pth file)",
    "safetensors": "a safetensors file",
    "onnx": "an ONNX model",
}
COMPRESSED = {"gzip": "gzip", "bz2": "bzip2", "xz": "xz", "zstd": "zstd"}  # kind -> tool
ARCHIVES = {"zip", "7z", "rar", "tar"}
_ROLE_NOUN = {"prototxt": "prototxt (text net definition)", "caffemodel": "caffemodel"}


def read_head(path: str | os.PathLike, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of a file; a file that cannot be read is a ConverterError."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise file_error(path, exc) from None


def identify(head: bytes) -> str | None:
    """The kind of file whose first bytes are ``head`` (a key of ``WHAT``), or None when
    nothing here recognises it (a caffemodel, a prototxt, or unknown bytes)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()  # a BOM and blank lines may precede
    if text.startswith((b"<!doctype html", b"<html")) or (
        text.startswith(b"<!--") and b"<html" in text
    ):
        return "html"
    if text.startswith(b"<?xml"):
        return "xml"
    if head.startswith(b"version https://git-lfs"):
        return "lfs"
    signatures = (
        (b"\x1f\x8b", "gzip"),
        (b"BZh", "bz2"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"PK\x03\x04", "zip"),
        (b"PK\x05\x06", "zip"),
        (b"7z\xbc\xaf\x27\x1c", "7z"),
        (b"Rar!\x1a\x07", "rar"),
        (HDF5_SIGNATURE, "hdf5"),
        (b"\x93NUMPY", "npy"),
    )
    for signature, kind in signatures:
        if head.startswith(signature):
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"  # PROTO opcode: what torch.save wrote before its zip format
    if _is_safetensors(head):
        return "safetensors"
    if _is_onnx(head):
        return "onnx"
    return None


def _is_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length, then a JSON object."""
    return len(head) > 10 and head[8:10] == b'{"' and 2 <= int.from_bytes(head[:8], "little")


def _is_onnx(head: bytes) -> bool:
    """ONNX's ModelProto starts with ir_version (field 1, varint: byte 0x08, a small number)
    and then another of its fields. A caffemodel never starts with 0x08: its field 1 is the
    net's name, a string (0x0a)."""
    return (
        len(head) > 3
        and head[0] == 0x08
        and 1 <= head[1] <= 20
        and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x4A, 0x52, 0x72)
    )


def zip_kind(path: str | os.PathLike) -> tuple[str, list[str]]:
    """("pytorch" | "npz" | "zip", member names) for a zip file."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "zip", []
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "pytorch", names
    if names and all(name.endswith(".npy") for name in names):
        return "npz", names
    return "zip", names


def tar_members(path: str | os.PathLike) -> list[str]:
    try:
        with tarfile.open(path) as archive:
            return archive.getnames()
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return []


def is_text(head: bytes) -> bool:
    """Printable UTF-8 text with words in it (tabs and line breaks allowed), as far as
    ``head`` goes: a few stray printable bytes are not text."""
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(head) < HEAD_BYTES or exc.start < len(head) - 3:
            return False  # not merely a character cut where the head ends
        text = head[: exc.start].decode("utf-8")
    printable = all(c.isprintable() or c in "\t\n\r\f\v" for c in text)
    return printable and re.search(r"[^\W\d_]{2}", text) is not None


_PROTOTXT_START = re.compile(
    r"^\s*(name|layers?|input|input_dim|input_shape|state|force_backward|debug_info)\s*[:{]",
    re.MULTILINE,
)


def looks_like_prototxt(head: bytes) -> bool:
    """Text whose lines start the way a NetParameter in text format does."""
    return is_text(head) and bool(_PROTOTXT_START.search(head.decode("utf-8", "replace")))


def looks_like_caffemodel(head: bytes) -> bool:
    """Binary protobuf whose top-level fields are a NetParameter's, with at least one layer.

    Only the first bytes are walked: a field that runs past them is taken on trust.
    """
    # NetParameter field number -> wire type: name, V1 layers, input, input_dim,
    # force_backward, state, debug_info, input_shape, layer
    wire_of = {1: 2, 2: 2, 3: 2, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 100: 2}
    pos, layers = 0, False
    while pos < len(head):
        key, pos = _varint(head, pos)
        if key is None:
            break
        number, wire = key >> 3, key & 7
        if wire_of.get(number) != wire:
            return False
        value, pos = _varint(head, pos)
        if value is None:
            break
        if wire == 2:
            layers |= number in (2, 100)
            pos += value
    return layers


def _varint(buf: bytes, pos: int) -> tuple[int | None, int]:
    result = shift = 0
    while pos < len(buf) and shift < 70:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    return None, pos


def _quote(text: str, limit: int = 60) -> str:
    """``text`` quoted on one line, shortened to ``limit`` characters."""
    line = " ".join(text.split())
    return "'" + (line[: limit - 3] + "..." if len(line) > limit else line) + "'"


def _lfs_facts(head: bytes) -> str:
    text = head.decode("utf-8", "replace")
    oid = re.search(r"^oid sha256:([0-9a-f]{64})\s*$", text, re.MULTILINE)
    size = re.search(r"^size (\d+)\s*$", text, re.MULTILINE)
    facts = []
    if oid:
        facts.append(f"sha256 {oid.group(1)[:12]}...")
    if size:
        facts.append(f"{int(size.group(1)):,} bytes")
    return f" ({', '.join(facts)})" if facts else ""


def _xml_detail(head: bytes) -> str:
    text = head.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]{1,60})</Code>", text)
    return f" (a storage server's error: {code.group(1)})" if code else ""


def impostor_message(path: str | os.PathLike, role: str, kind: str, head: bytes) -> str:
    """One line for a file of ``kind`` given as the ``role`` file: what it is, what to do."""
    noun = _ROLE_NOUN[role]
    what = WHAT[kind]
    if kind == "html":
        return (
            f"{path}: is an HTML web page, not a {noun}: the download saved the page instead "
            "of the file; download the raw file (on GitHub: the 'Raw' link, "
            "raw.githubusercontent.com)"
        )
    if kind == "xml":
        return (
            f"{path}: is an XML document{_xml_detail(head)}, not a {noun}: a server answered "
            "with an error instead of the file; check the address and download it again"
        )
    if kind == "lfs":
        return (
            f"{path}: is a Git LFS pointer, not the {noun}: the real file{_lfs_facts(head)} was "
            "not downloaded; run `git lfs install && git lfs pull` in the repository"
        )
    if kind in COMPRESSED:
        tool = COMPRESSED[kind]
        target = Path(path).with_suffix("") if Path(path).suffix else f"{path}.out"
        return (
            f"{path}: is {what}, not a {noun}: decompress it first "
            f"(`{tool} -dc {path} > {target}`) and pass the result"
        )
    if kind in ARCHIVES:
        members = tar_members(path) if kind == "tar" else []
        if kind == "zip":
            kind, members = zip_kind(path)
            if kind != "zip":
                return impostor_message(path, role, kind, head)
        listed = ", ".join(_quote(m, 40) for m in members[:3]) + (
            " ..." if len(members) > 3 else ""
        )
        inside = f" holding {listed}" if members else ""
        command = {"zip": "unzip", "7z": "7z x", "rar": "unrar x", "tar": "tar -xf"}[kind]
        return (
            f"{path}: is {what}{inside}, not a {noun}: unpack it first (`{command} {path}`) "
            f"and pass the {'prototxt' if role == 'prototxt' else 'caffemodel'} inside"
        )
    if kind == "hdf5":
        if role == "prototxt":
            return (
                f"{path}: is an HDF5 file (Caffe's HDF5 weights?), not a prototxt: give the "
                "prototxt first and the weights second"
            )
        return f"{path}: is an HDF5 file but not Caffe's HDF5 weights"
    advice = {
        "npy": "an input array goes to `verify --input`",
        "npz": "saved Caffe blobs go to `verify --reference`",
        "pytorch": "caffe2torch reads Caffe models; a converted .pt loads with converter.load "
        "or `verify --converted`",
        "pickle": "caffe2torch reads Caffe models (a .prototxt and a .caffemodel)",
        "safetensors": "a converted model loads with converter.load or `verify --converted`",
        "onnx": "caffe2torch reads Caffe models (a .prototxt and a .caffemodel)",
    }[kind]
    return f"{path}: is {what}, not a {noun}: {advice}"


def check_not_impostor(path: str | os.PathLike, role: str, head: bytes) -> str | None:
    """Raise for a file recognised as something other than a model file; returns its kind
    when it is one of the kinds the caller may handle itself (HDF5 and compressed data
    given as weights), else None."""
    kind = identify(head)
    if kind is None:
        return None
    if role == "caffemodel" and kind in ("hdf5", "gzip", "bz2", "xz"):
        return kind
    raise ConverterError(impostor_message(path, role, kind, head))


def short_text_message(path: str | os.PathLike, role: str, data: bytes) -> str:
    """A text that is no model: a server's reply ("404: Not Found") or some other text."""
    text = data.decode("utf-8", "replace")
    first = next((line for line in text.splitlines() if line.strip()), "")
    noun = _ROLE_NOUN[role]
    if len(data) <= SHORT_TEXT_BYTES:
        return (
            f"{path}: is a {len(data)}-byte text ({_quote(first)}), not a {noun}: the download "
            "failed and saved the server's reply; download the file again"
        )
    return f"{path}: is a text file starting {_quote(first)}, not a {noun}"


def binaryproto_message(path: str | os.PathLike, role: str, shape: tuple[int, ...]) -> str:
    return (
        f"{path}: is a single blob of shape {shape} (a .binaryproto, e.g. a mean image), "
        f"not a {_ROLE_NOUN[role]}: a mean file goes to `verify --mean`"
    )


def swapped_message(prototxt: str | os.PathLike, caffemodel: str | os.PathLike) -> str:
    return (
        f"the arguments look swapped: {prototxt} holds binary weights and {caffemodel} a "
        f"prototxt; give the prototxt first: {caffemodel} {prototxt}"
    )


def check_pair(prototxt: str | os.PathLike, caffemodel: str | os.PathLike) -> None:
    """Raise when the net definition and the weights were given the wrong way round."""
    try:
        proto_head, model_head = read_head(prototxt), read_head(caffemodel)
    except ConverterError:
        return  # the reader of each file says what is wrong with it
    binary_weights = identify(proto_head) == "hdf5" or (
        not is_text(proto_head) and looks_like_caffemodel(proto_head)
    )
    if binary_weights and looks_like_prototxt(model_head):
        raise ConverterError(swapped_message(prototxt, caffemodel))
