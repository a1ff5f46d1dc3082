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
import pickletools
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
    # what ``identify_path`` tells apart with more than the first bytes: this tool's outputs
    "pt2": "a torch.export program (.pt2)",
    "caffe2torch_pt": "a caffe2torch .pt file (converted weights)",
    "mmdet": "an mmdet / mmpretrain checkpoint",
    "detectron2": "a detectron2 checkpoint (.pkl)",
    "code": "a caffe2torch --format code folder",
    "folder": "a folder",
    "binaryproto": "a single blob (a .binaryproto, e.g. a mean image)",
    "caffemodel": "a binary caffemodel (Caffe weights)",
    "prototxt": "a prototxt (text net definition)",
    # a photo given where a model goes
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "bmp": "a BMP image",
    "webp": "a WebP image",
    "tiff": "a TIFF image",
}
IMAGES = {"png", "jpeg", "gif", "bmp", "webp", "tiff"}
COMPRESSED = {"gzip": "gzip", "bz2": "bzip2", "xz": "xz", "zstd": "zstd"}  # kind -> tool
ARCHIVES = {"zip", "7z", "rar", "tar"}
# role -> what the file was given as, for "not a ..."
_ROLE_NOUN = {
    "prototxt": "prototxt (text net definition)",
    "caffemodel": "caffemodel",
    "converted": "safetensors or .pt file of caffe2torch convert",
    "mean": "mean file (.binaryproto)",
    "input": "file for --input (an image or a .npy array)",
}


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
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff", "jpeg"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"II*\x00", "tiff"),
        (b"MM\x00*", "tiff"),
    )
    for signature, kind in signatures:
        if head.startswith(signature):
            return kind
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM") and len(head) > 26 and head[14] in (12, 40, 52, 56, 108, 124):
        return "bmp"  # the bitmap header's size says which header version follows
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
    """("pt2" | "pytorch" | "npz" | "zip", member names) for a zip file."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "zip", []
    if any(name.endswith("/archive_format") for name in names):
        return "pt2", names  # torch.export's archive (its content says "pt2")
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "pytorch", names
    if names and all(name.endswith(".npy") for name in names):
        return "npz", names
    return "zip", names


def identify_path(path: str | os.PathLike) -> str | None:
    """The kind of the file or folder at ``path`` (a key of ``WHAT``), by its content:
    ``identify`` of its first bytes, refined where that needs more (a zip: a torch.export
    program, a PyTorch file, a .npz; a PyTorch file: a caffe2torch .pt or an mmdet
    checkpoint; a pickle: a detectron2 checkpoint), and a caffemodel or a prototxt told by
    structure. A folder is "code" when it holds a --format code folder's model.py and
    config.json. None: unknown bytes. ConverterError when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        return "code" if all((path / name).is_file() for name in CODE_FILES) else "folder"
    head = read_head(path)
    kind = identify(head)
    if kind == "zip":
        kind = zip_kind(path)[0]
    if kind == "pytorch":
        kind = _pytorch_kind(path)
    if kind == "pickle" and b"__author__" in _tail(path):
        kind = "detectron2"  # its checkpointer's own key, written last
    if kind is None and looks_like_caffemodel(head):
        kind = "caffemodel"
    if kind is None and looks_like_prototxt(head):
        kind = "prototxt"
    if kind is None and os.path.getsize(path) <= BLOB_BYTES and not is_text(head):
        from converter.io.caffemodel import blob_shape

        kind = "binaryproto" if blob_shape(path.read_bytes()) is not None else None
    return kind


BLOB_BYTES = 64 << 20  # a larger file is not parsed whole to see whether it is one blob


CODE_FILES = ("model.py", "config.json")  # what makes a folder a --format code folder


def by_caffe2torch(path: str | os.PathLike, kind: str | None) -> bool:
    """Whether a file of ``kind`` says it was written by caffe2torch (its metadata names the
    producer): checked for the outputs of ``caffe2torch convert``."""
    path = Path(path)
    try:
        if kind == "pt2":
            with zipfile.ZipFile(path) as archive:
                return any(n.endswith("/extra/caffe2torch.json") for n in archive.namelist())
        if kind in ("caffe2torch_pt", "mmdet"):
            return b"caffe2torch" in _pickled_strings(path)
        if kind == "safetensors":
            return b'"producer":"caffe2torch' in read_head(path, 1 << 16).replace(b" ", b"")
        if kind in ("onnx", "detectron2"):
            return b"caffe2torch" in _tail(path)  # ONNX metadata and the pickle's last keys
    except (OSError, zipfile.BadZipFile, ValueError, ConverterError):
        return False
    return False


def _tail(path: Path, size: int = 512) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - size))
            return handle.read(size)
    except OSError:
        return b""


def _pickled_strings(path: Path) -> bytes:
    """The text strings a zipped PyTorch file's data.pkl holds (dict keys, metadata values),
    read with pickletools, which runs nothing."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
        data = archive.read(name)
    strings = []
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if isinstance(argument, str) and "UNICODE" in opcode.name:
                strings.append(argument)
    except (ValueError, EOFError):  # a damaged pickle: what was read so far
        pass
    return "\n".join(strings).encode("utf-8", "replace")


def _pytorch_kind(path: Path) -> str:
    """A zipped PyTorch file: "caffe2torch_pt" (``state_dict`` and ``metadata`` with an
    architecture ``config``), "mmdet" (``state_dict`` and ``meta``, mmengine's checkpoint), or
    any other "pytorch" file."""
    try:
        strings = set(_pickled_strings(path).decode("utf-8").split("\n"))
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError):
        return "pytorch"
    if {"state_dict", "metadata", "config"} <= strings:
        return "caffe2torch_pt"
    if {"state_dict", "meta"} <= strings:
        return "mmdet"
    return "pytorch"


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


def wide_text_encoding(head: bytes) -> str | None:
    """ "UTF-16" or "UTF-32" when ``head`` starts text in that encoding (as Windows editors
    save "Unicode" text): by its byte order mark, or by ASCII characters each followed
    (little-endian) or preceded (big-endian) by NUL bytes; None otherwise."""
    boms = (
        (b"\xff\xfe\x00\x00", "UTF-32"),
        (b"\x00\x00\xfe\xff", "UTF-32"),
        (b"\xff\xfe", "UTF-16"),
        (b"\xfe\xff", "UTF-16"),
    )
    for bom, encoding in boms:
        if head.startswith(bom):
            return encoding
    for encoding, width in (("UTF-32", 4), ("UTF-16", 2)):
        units = [head[i : i + width] for i in range(0, len(head) - len(head) % width, width)]
        if len(units) < 4:
            continue
        for ascii_at in (0, width - 1):  # little-endian, big-endian
            nul = bytes(width - 1)
            rest = [u[1:] if ascii_at == 0 else u[:-1] for u in units]
            chars = bytes(u[ascii_at] for u in units)
            if all(r == nul for r in rest) and is_text(chars):
                return encoding
    return None


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
            f"and pass the {_ROLE_NOUN[role].split(' (')[0]} inside"
        )
    if kind == "hdf5":
        if role == "caffemodel":
            return f"{path}: is an HDF5 file but not Caffe's HDF5 weights"
        if role == "prototxt":
            return (
                f"{path}: is an HDF5 file (Caffe's HDF5 weights?), not a prototxt: give the "
                "prototxt first and the weights second"
            )
        return f"{path}: is an HDF5 file (Caffe's HDF5 weights?), not a {noun}: " + _advice(
            path, "caffemodel"
        )
    ours = by_caffe2torch(path, kind)
    advice = _advice(path, kind)
    if kind in ("onnx", "safetensors") and not ours:
        advice = "caffe2torch reads Caffe models (a .prototxt and a .caffemodel); " + advice
    if role == "mean":
        advice += "; --mean takes a .binaryproto (one blob, e.g. a mean image) or B,G,R values"
    return f"{path}: is {what}{' (written by caffe2torch)' if ours else ''}, not a {noun}: {advice}"


def _advice(path: str | os.PathLike, kind: str) -> str:
    """Where a file of ``kind`` goes instead (what to call, or which argument takes it)."""
    check = f"`caffe2torch verify PROTOTXT CAFFEMODEL --converted {path}` checks it"
    framework = {"detectron2": "detectron2's DetectionCheckpointer", "mmdet": "mmengine's "
                 "load_checkpoint (mmdet / mmpretrain, ResNet style='caffe')"}  # fmt: skip
    if kind in framework:
        return (
            f"it loads in {framework[kind]}; caffe2torch loads the safetensors or .pt file "
            "that `caffe2torch convert` writes by default, and `caffe2torch verify PROTOTXT "
            "CAFFEMODEL` checks the net itself"
        )
    if kind in IMAGES:
        return "an image goes to `verify --input` (with --mean)"
    return {
        "npy": "an input array goes to `verify --input`",
        "npz": "saved Caffe blobs go to `verify --reference`",
        "pytorch": "caffe2torch reads Caffe models (a .prototxt and a .caffemodel) and the "
        "safetensors or .pt files it writes",
        "pickle": "caffe2torch reads Caffe models (a .prototxt and a .caffemodel) and the "
        "safetensors or .pt files it writes",
        "safetensors": f"a converted model loads with converter.load({str(path)!r}); {check}",
        "caffe2torch_pt": f"a converted model loads with converter.load({str(path)!r}); {check}",
        "onnx": f"run an ONNX model with onnxruntime (onnxruntime.InferenceSession); {check}",
        "pt2": f"load it with torch.export.load({str(path)!r}).module(); {check}",
        "code": "import its model.py (`from model import load`; load() gives the module), or "
        f"load its model.safetensors with converter.load; {check}",
        "folder": "give a file",
        "binaryproto": "a mean file goes to `verify --mean`",
        "caffemodel": "Caffe weights go with their prototxt: converter.load(PROTOTXT, "
        "CAFFEMODEL), `caffe2torch convert PROTOTXT CAFFEMODEL`",
        "prototxt": "a net definition goes with its weights: converter.load(PROTOTXT, "
        "CAFFEMODEL), `caffe2torch convert PROTOTXT CAFFEMODEL`",
    }.get(kind, "caffe2torch reads Caffe models (a .prototxt and a .caffemodel)")


def check_not_code_folder(path: str | os.PathLike, role: str) -> None:
    """Raise when ``path`` is a --format code folder given as the ``role`` file (any other
    folder is left to the file's reader: "is a directory")."""
    if Path(path).is_dir() and identify_path(path) == "code":
        raise ConverterError(impostor_message(path, role, "code", b""))


def check_not_impostor(path: str | os.PathLike, role: str, head: bytes) -> str | None:
    """Raise for a file recognised as something other than a model file; returns its kind
    when it is one of the kinds the caller may handle itself (HDF5 and compressed data
    given as weights), else None."""
    kind = identify(head)
    if kind is None:
        return None
    if kind in ("zip", "pytorch", "pickle"):  # which one: this tool's own outputs among them
        kind = identify_path(path)
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
