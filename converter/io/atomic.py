"""Atomic output files: a failed write never leaves a partial file or clobbers an old one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from converter.errors import ConverterError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, buffered: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary handle on a temporary file beside ``path``; rename it into place on
    success, delete it on any failure (including a full disk while writing or closing).
    An unbuffered handle (``buffered=False``) writes large pieces without copying them."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConverterError(f"{path}: is a directory, expected an output file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise ConverterError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb", buffering=-1 if buffered else 0) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ConverterError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
