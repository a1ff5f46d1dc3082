"""Read a ``.prototxt`` net definition (protobuf text format) into a current NetParameter."""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.io.upgrade import upgrade_net


def read_text(path: str | os.PathLike) -> str:
    """The file's text; every way of failing to get it is a ConverterError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConverterError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConverterError(f"{path}: is a directory, expected a file") from None
    except PermissionError:
        raise ConverterError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ConverterError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConverterError(
            f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "is this a binary file?"
        ) from None


def parse_prototxt(text: str, source: str = "<prototxt>") -> caffe_pb2.NetParameter:
    """Parse text-format NetParameter and upgrade legacy forms; errors carry line:column."""
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        message = str(exc)
        prefix = f"{line}:{column} : "
        if message.startswith(prefix):
            message = message[len(prefix) :]
        where = f"{source}:{line}:{column}" if line else source
        raise ConverterError(f"{where}: {message}") from None
    return upgrade_net(net, source)


def read_prototxt(path: str | os.PathLike) -> caffe_pb2.NetParameter:
    """Read and upgrade a prototxt file."""
    return parse_prototxt(read_text(path), str(path))
