"""Atomic outputs: a failed write never leaves a partial file or folder, or clobbers an old one."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import BinaryIO

from converter.errors import ConverterError


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, buffered: bool = True, defer_errors: bool = False
) -> Iterator[BinaryIO]:
    """Yield a binary handle on a temporary file beside ``path``; rename it into place on
    success, delete it on any failure (including a full disk while writing or closing):
    ConverterError "PATH: cannot write (why)".
    An unbuffered handle (``buffered=False``) writes large pieces without copying them.
    ``defer_errors``: for writers that cannot survive a failed write (``DeferredErrors``)."""
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
            if defer_errors:
                deferred = DeferredErrors(handle)
                yield deferred
                deferred.raise_kept()
            else:
                yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ConverterError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise


class DeferredErrors(io.RawIOBase):
    """A write handle that keeps the first failed write's OSError and skips later writes,
    until ``raise_kept``. torch's zip writers (``torch.save``, ``torch.export.save``) cannot
    survive a failed write: ``torch.export.save`` writes again while unwinding, fails again
    inside a C++ destructor and aborts the whole process (SIGABRT, a core dump and no
    message), and ``torch.save`` hides the OSError behind its own RuntimeError. Given this
    handle they finish writing into nothing, and the OSError is raised after them."""

    def __init__(self, handle: BinaryIO):
        super().__init__()
        self._handle = handle
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._handle.seekable()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def write(self, data) -> int:
        if self.error is None:
            try:
                return self._handle.write(data)
            except OSError as exc:
                self.error = exc
        return memoryview(data).nbytes

    def flush(self) -> None:
        if self.error is None and not self._handle.closed:
            try:
                self._handle.flush()
            except OSError as exc:
                self.error = exc

    def raise_kept(self) -> None:
        if self.error is not None:
            raise self.error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, replaceable: Collection[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path``.

    An existing ``path`` is replaced only when it holds nothing but ``replaceable`` names
    (the files a previous run wrote); otherwise, or when ``path`` is a file, ConverterError
    is raised before anything is written. On any failure the temporary folder is removed
    and an old ``path`` is left as it was.
    """
    path = Path(path)
    check_folder_replaceable(path, replaceable)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=parent))
    except OSError as exc:
        raise ConverterError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        _replace_folder(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_as(exc, tmp, path)


def _replace_folder(tmp: Path, path: Path) -> None:
    """Rename the folder ``tmp`` to ``path``, replacing an existing ``path`` (which is put
    back if the rename fails)."""
    parent = path.parent if str(path.parent) else Path(".")
    old = None
    try:
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not path.exists():  # put the previous folder back
            with contextlib.suppress(OSError):
                os.replace(old / path.name, path)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _raise_as(exc: BaseException, tmp: Path, path: Path):
    """Re-raise ``exc`` from work on the temporary ``tmp`` as the user will read it: an
    OSError as "PATH: cannot write", a ConverterError naming ``tmp`` naming ``path``."""
    if isinstance(exc, OSError):
        raise ConverterError(f"{path}: cannot write ({exc.strerror or exc})") from None
    if isinstance(exc, ConverterError) and str(tmp) in str(exc):
        # a file written inside the folder is named where the user will look for it
        raise ConverterError(str(exc).replace(str(tmp), str(path))) from None
    raise exc


@contextlib.contextmanager
def staged(
    path: str | os.PathLike, folder: bool = False, replaceable: Collection[str] = ()
) -> Iterator[Path]:
    """Yield a temporary name beside ``path``, for an output that is written and then
    checked before it may stand as ``path`` (``convert --verify``: a verification that ends
    in bad input must not leave the output, or replace an old one). The name ends with
    ``path``'s extension (writers tell the format by it); ``folder``: the name of an empty
    folder, else of an empty file, for an atomic writer to replace. When the block ends
    normally the temporary takes ``path``'s place (an existing folder only when it holds
    nothing but ``replaceable``, refused before the block runs); on any error it is removed,
    an old ``path`` is left as it was, and a message naming the temporary names ``path``."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if folder:
        check_folder_replaceable(path, replaceable)
    try:
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=parent))
        else:
            fd, name = tempfile.mkstemp(
                prefix=f".{path.name}.", suffix=f".part{path.suffix}", dir=parent
            )
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise ConverterError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        yield tmp
        if folder:
            _replace_folder(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        _raise_as(exc, tmp, path)


def check_writable(path: str | os.PathLike, folder: bool = False) -> None:
    """Refuse (ConverterError), before any work is done, an output that ``atomic_write``
    (``folder``: ``atomic_folder``) could not write: a folder that is missing or not writable,
    a file output that is a folder, a folder output that is a file."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        missing = "is not a folder" if parent.exists() else "does not exist"
        raise ConverterError(f"{path}: cannot write: {parent} {missing}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConverterError(f"{path}: cannot write (permission denied in {parent})")
    if folder and path.is_file():
        raise ConverterError(f"{path}: is a file; this format writes a folder")
    if not folder and path.is_dir():
        raise ConverterError(f"{path}: is a directory, expected an output file name")


def check_folder_replaceable(path: Path, replaceable: Collection[str]) -> None:
    """Refuse (ConverterError) an output folder that exists as a file or holds other files."""
    if path.is_file():
        raise ConverterError(f"{path}: is a file; this format writes a folder")
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if p.name not in replaceable)
        if others:
            raise ConverterError(
                f"{path}: exists and holds other files ({', '.join(others[:3])}); "
                "choose a new or empty folder"
            )
