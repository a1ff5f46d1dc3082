"""Converted files: safetensors (default) or a plain ``.pt`` state dict, both with metadata.

The safetensors file is written by streaming each tensor's bytes straight to disk, so a
250 MB model is never held twice in memory. Both formats load without unpickling code:
``.pt`` files hold only tensors and strings and are read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from converter.errors import ConverterError, article
from converter.io.atomic import atomic_write

if TYPE_CHECKING:
    import torch

# Every format convert writes, with the file extensions that name it (the first is the one a
# default output name gets). A name must end with one of its format's extensions, so that
# the file it names is read back as what it is; ``code`` writes a folder, of any name, and is
# chosen by ``--format code`` only. A ``.pth`` name is a ``pt`` file unless --format mmdet.
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "safetensors": (".safetensors",),
    "pt": (".pt", ".pth"),
    "code": (),
    "pt2": (".pt2",),
    "onnx": (".onnx",),
    "detectron2": (".pkl",),
    "mmdet": (".pth", ".pt"),
}
FORMATS = tuple(FORMAT_EXTENSIONS)
DEFAULT_FORMAT = "safetensors"


def _torch_dtypes() -> dict:
    """torch dtype -> safetensors dtype (a function: torch is imported only when needed)."""
    import torch

    return {
        torch.float32: "F32",
        torch.float64: "F64",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.uint8: "U8",
        torch.bool: "BOOL",
    }


def _is_tensor(value: object) -> bool:
    """A torch tensor? Without importing torch: if torch is not loaded, nothing is one."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def output_format(path: str | os.PathLike, format: str | None) -> str:
    """The format to write to ``path``: ``format`` if given, else the one its extension names.

    ConverterError when the extension names no format this tool writes, or another format
    than ``format`` (``FORMAT_EXTENSIONS`` is the table).
    """
    if format is not None and format not in FORMAT_EXTENSIONS:
        raise ConverterError(f"unknown format '{format}': choose one of {', '.join(FORMATS)}")
    path = Path(path)
    suffix = path.suffix.lower()
    named = [name for name, extensions in FORMAT_EXTENSIONS.items() if suffix in extensions]
    if format == "code":  # a folder: any name but another format's file name
        if named:
            raise ConverterError(
                f"{path}: --format code writes a folder, and '{suffix}' names "
                f"{article(named[0])} {named[0]} file; name the folder without it "
                f"(-o {path.with_suffix('')}) or drop --format code to write {named[0]}"
            )
        return format
    if format is not None and format in named:
        return format
    if format is None and named:
        return named[0]
    known = "; ".join(
        f"{name}: {', '.join(ext) or 'a folder'}" for name, ext in FORMAT_EXTENSIONS.items()
    )
    what = f"a '{suffix}' name" if suffix else "a name without extension"
    wanted = format or DEFAULT_FORMAT
    raise ConverterError(
        f"{path}: {what} for {article(wanted)} {wanted} file; name it "
        f"{path.stem}{FORMAT_EXTENSIONS[wanted][0]} (extensions by format: {known})"
    )


# Suffixes of weight files, taken off (all of them: x.caffemodel.h5, x.caffemodel.gz) to name
# the output after the model
WEIGHT_SUFFIXES = (".caffemodel", ".h5", ".hdf5", ".gz", ".bz2", ".xz", ".binaryproto")


def default_output(caffemodel: str | os.PathLike, format: str | None) -> Path:
    """The output name when none is given: the caffemodel's, in this folder, without its
    weight-file suffixes (``WEIGHT_SUFFIXES``), with the format's first extension."""
    extensions = FORMAT_EXTENSIONS[format or DEFAULT_FORMAT]
    name = Path(caffemodel).name
    while Path(name).suffix.lower() in WEIGHT_SUFFIXES and Path(name).stem:
        name = Path(name).stem
    if name == Path(caffemodel).name:  # another suffix (x.bin): replaced, as before
        name = Path(name).stem
    return Path(name + (extensions[0] if extensions else ""))


def owned_tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Tensors that own a copy of each array (sources may be read-only memory maps)."""
    import torch

    return {name: torch.from_numpy(np.array(value, copy=True)) for name, value in arrays.items()}


def write_converted(
    state_dict: Mapping[str, torch.Tensor | np.ndarray],
    metadata: Mapping[str, str],
    path: str | os.PathLike,
    format: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    late_metadata: Callable[[], Mapping[str, str]] | None = None,
) -> Path:
    """Write tensors plus string metadata atomically; ``progress(done, total)`` gets bytes.

    ``late_metadata()`` adds entries that are still being computed (source hashes): a
    safetensors file asks for them only after its tensors are written, so the work overlaps.
    """
    path = Path(path)
    meta = _strings(metadata)
    if output_format(path, format) == "pt":
        import torch

        tensors = {name: _as_tensor(value) for name, value in state_dict.items()}
        meta.update(_strings(late_metadata()) if late_metadata else {})
        with atomic_write(path, defer_errors=True) as handle:
            torch.save({"state_dict": tensors, "metadata": meta}, handle)
    else:
        _write_safetensors(state_dict, meta, path, progress, late_metadata)
    return path


def _strings(metadata: Mapping[str, str]) -> dict[str, str]:
    return {str(k): str(v) for k, v in metadata.items()}


def _as_tensor(value: torch.Tensor | np.ndarray) -> torch.Tensor:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    # native byte order, C order; unlike ascontiguousarray, keeps a 0-d array 0-d
    value = np.asarray(value).astype(value.dtype.newbyteorder("="), order="C", copy=False)
    if not value.flags.writeable:  # a view of a read-only memory map: only read for writing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(value)
    return torch.from_numpy(value)


# (kind, itemsize) -> safetensors dtype: ``dtype.name`` costs microseconds per call
_NUMPY_DTYPES = {
    ("f", 4): "F32",
    ("f", 8): "F64",
    ("f", 2): "F16",
    ("i", 8): "I64",
    ("i", 4): "I32",
    ("u", 1): "U8",
    ("b", 1): "BOOL",
}


def _stored_bytes(name: str, value: torch.Tensor | np.ndarray, path: Path):
    """(safetensors dtype, shape, the values to store as a flat little-endian array)."""
    if _is_tensor(value):
        import torch

        tensor = value.detach().cpu().contiguous()
        dtypes = _torch_dtypes()
        if tensor.dtype not in dtypes:
            raise ConverterError(f"{path}: cannot store tensor '{name}' of dtype {tensor.dtype}")
        flat = tensor.reshape(-1)  # NumPy has no bfloat16: those go as raw bytes
        flat = flat.view(torch.uint8).numpy() if flat.dtype == torch.bfloat16 else flat.numpy()
        return dtypes[tensor.dtype], list(tensor.shape), flat
    array = np.asarray(value)
    dtype = _NUMPY_DTYPES.get((array.dtype.kind, array.dtype.itemsize))
    if dtype is None:
        raise ConverterError(f"{path}: cannot store tensor '{name}' of dtype {array.dtype}")
    flat = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(-1)
    return dtype, list(array.shape), flat


def _write_safetensors(
    state_dict: Mapping[str, torch.Tensor | np.ndarray],
    metadata: Mapping[str, str],
    path: Path,
    progress: Callable[[int, int], None] | None,
    late_metadata: Callable[[], Mapping[str, str]] | None = None,
) -> None:
    """Header, then each tensor's bytes written straight from its memory (a view of the
    caffemodel: nothing is copied in Python), in pieces of at most ``WRITE_PIECE_BYTES``.
    With ``late_metadata`` the header is written with room to spare and rewritten in place
    once the tensors are on disk.

    Tried and not kept: ``os.copy_file_range`` from the caffemodel per tensor (kernel to
    kernel, as ``shutil.copyfile``): slower end to end than writing from the mapping."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    ordered = []
    for name in sorted(state_dict):
        dtype, shape, data = _stored_bytes(name, state_dict[name], path)
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + data.nbytes],
        }
        offset += data.nbytes
        ordered.append(data)
    encoded = _encode_header(header, LATE_METADATA_BYTES if late_metadata else 0)
    total = offset
    done = 0
    with atomic_write(path, buffered=False) as handle:
        _write_all(handle, len(encoded).to_bytes(8, "little") + encoded)
        for data in ordered:
            step = max(1, WRITE_PIECE_BYTES // data.itemsize)
            for start in range(0, data.size, step):
                _write_all(handle, memoryview(data[start : start + step]).cast("B"))
            done += data.nbytes
            if progress is not None:
                progress(done, total)
        if late_metadata is not None:
            header["__metadata__"] = {**dict(metadata), **_strings(late_metadata())}
            final = _encode_header(header, 0)
            if len(final) > len(encoded):
                raise ConverterError(
                    f"{path}: late metadata exceeds the {LATE_METADATA_BYTES} bytes kept for it"
                )
            handle.seek(8)
            _write_all(handle, final + b" " * (len(encoded) - len(final)))


# One write() per piece of at most this size. Writing ResNet-152's tensors (241 MB) from
# the caffemodel's memory map, fresh processes: whole tensors 0.145 s, 1 MiB pieces
# 0.119 s, 256 KiB pieces 0.116 s (7 runs each, medians).
WRITE_PIECE_BYTES = 1 << 18


def _write_all(handle: BinaryIO, data: bytes | memoryview) -> None:
    """An unbuffered write may be short (a signal, a nearly full disk): finish it."""
    view = memoryview(data)
    while view:
        view = view[handle.write(view) :]


# Room kept in a safetensors header for late metadata (two sha256 entries need ~190 bytes).
LATE_METADATA_BYTES = 1024


def _encode_header(header: Mapping[str, object], spare: int) -> bytes:
    """The JSON header padded with spaces (allowed by the format) to keep the data 8-byte
    aligned, with at least ``spare`` bytes of padding."""
    encoded = json.dumps(header, separators=(",", ":")).encode() + b" " * spare
    return encoded + b" " * (-len(encoded) % 8)


def read_converted(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict and metadata of a file written by ``write_converted``, recognised by
    its content (safetensors or a torch .pt file); any other file or a folder (another of
    convert's formats, a caffemodel, ...) is a ConverterError saying what it is and what to
    call instead."""
    path = Path(path)
    if stored_format(path) == "pt":
        return _read_pt(path)
    return _read_safetensors(path)


def stored_format(path: str | os.PathLike) -> str:
    """ "safetensors" or "pt": how ``read_converted`` reads ``path``, told by its content
    (unknown bytes by the name, whose reader then says why it cannot read them).
    ConverterError for a missing file and for anything recognised as another kind of file."""
    from converter.io import sniff

    path = Path(path)
    if not path.exists():
        raise ConverterError(f"{path}: no such file")
    kind = sniff.identify_path(path)
    if kind == "safetensors":
        return kind
    if kind in ("caffe2torch_pt", "pytorch", "pickle"):  # _read_pt says what else it holds
        return "pt"
    if kind is None:
        return "pt" if path.suffix in (".pt", ".pth") else "safetensors"
    head = b"" if path.is_dir() else sniff.read_head(path)
    raise ConverterError(sniff.impostor_message(path, "converted", kind, head))


def read_converted_header(
    path: str | os.PathLike,
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor name -> shape, and the metadata, of a file written by ``write_converted``.

    A safetensors file is read from its header alone; a ``.pt`` file is loaded.
    """
    path = Path(path)
    if stored_format(path) == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = dict(handle.metadata() or {})
                shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise ConverterError(f"{path}: not a readable safetensors file ({exc})") from None
        _check_metadata(path, metadata)
        return shapes, metadata
    tensors, metadata = read_converted(path)
    return {name: tuple(tensor.shape) for name, tensor in tensors.items()}, metadata


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ConverterError(f"{path}: not a readable safetensors file ({exc})") from None
    _check_metadata(path, metadata)
    return tensors, metadata


def _read_pt(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):  # a torch file, but with more than tensors and strings
            raise ConverterError(
                f"{path}: holds Python objects other than tensors and strings; they are not "
                "loaded, since unpickling them could run code (caffe2torch writes plain state "
                "dicts)"
            ) from None
        raise ConverterError(f"{path}: not a torch .pt file (damaged or another format)") from None
    except Exception as exc:  # zip, struct and EOF errors of every kind end here
        reason = str(exc).split("\n")[0].split(". ")[0]
        raise ConverterError(f"{path}: not a readable caffe2torch .pt file ({reason})") from None
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("state_dict"), dict)
        and isinstance(payload.get("metadata"), dict)
        and all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    ):
        raise ConverterError(
            f"{path}: expected a dict with 'state_dict' (tensors) and 'metadata' (strings), "
            "as written by caffe2torch convert"
        )
    metadata = {str(k): str(v) for k, v in payload["metadata"].items()}
    _check_metadata(path, metadata)
    return dict(payload["state_dict"]), metadata


def _check_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    if "config" not in metadata:
        raise ConverterError(
            f"{path}: has no caffe2torch architecture metadata ('config'); "
            "was it written by caffe2torch convert?"
        )
    try:
        json.loads(metadata["config"])
    except json.JSONDecodeError as exc:
        raise ConverterError(f"{path}: damaged 'config' metadata ({exc})") from None
