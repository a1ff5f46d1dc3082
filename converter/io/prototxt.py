"""Read a ``.prototxt`` net definition (protobuf text format) into a current NetParameter."""

from __future__ import annotations

import os
import re
from pathlib import Path

from google.protobuf import text_format

from converter import caffe_pb2
from converter.errors import ConverterError, file_error
from converter.io.textproto import parse_text
from converter.io.upgrade import FORK_FIELDS, upgrade_net


def read_text(path: str | os.PathLike) -> str:
    """The file's text; every way of failing to get it is a ConverterError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise file_error(path, exc) from None
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
    """Parse text-format NetParameter and upgrade legacy forms; errors carry line:column.

    Known fields of Caffe forks (``FORK_FIELDS``) are rewritten to their BVLC meaning where
    the parser reports them, one at a time, and the text is parsed again. Texts that
    ``textproto.parse_text`` reads (it gives text_format's result) skip text_format.
    """
    net = parse_text(text, caffe_pb2.NetParameter())  # fast; None: leave it to text_format
    if net is not None:
        return upgrade_net(net, source)
    translated: dict[int, str] = {}  # line -> what was rewritten there, to explain later errors
    for _ in range(len(text) + 1):  # each pass removes one fork field, so this always ends
        net = caffe_pb2.NetParameter()  # Parse does not clear what a failed pass merged
        try:
            text_format.Parse(text, net)
        except text_format.ParseError as exc:
            text = _translate_fork_field(text, exc, source, translated)
        else:
            return upgrade_net(net, source)
    raise AssertionError("unreachable: every pass removes a fork field")


_NO_SUCH_FIELD = re.compile(r'Message type "caffe\.(\w+)" has no field named "(\w+)"')
_FIELD_VALUE = re.compile(r"\s*:\s*([\w.+-]+)")


def _translate_fork_field(
    text: str, exc: text_format.ParseError, source: str, translated: dict[int, str]
) -> str:
    """``text`` with the known fork field that ``exc`` reports rewritten; else a ConverterError."""
    line, column = exc.GetLine(), exc.GetColumn()
    message = str(exc)
    prefix = f"{line}:{column} : "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    where = f"{source}:{line}:{column}" if line else source
    unknown = _NO_SUCH_FIELD.search(message)
    if not unknown:
        if line in translated:  # columns on this line moved when the fork field was rewritten
            where = f"{source}:{line}"
            message += f" (after reading {translated[line]})"
        raise ConverterError(f"{where}: {message}") from None
    owner, name = unknown.groups()
    fork = FORK_FIELDS.get((owner, name))
    if fork is None:
        raise ConverterError(
            f"{where}: unknown field '{name}' in {owner} "
            "(BVLC Caffe has no such field; it may come from a Caffe fork)"
        ) from None
    start = _offset(text, line, column)
    value = _FIELD_VALUE.match(text, start + len(name)) if start >= 0 else None
    if value is None or not text.startswith(name, start):
        raise ConverterError(f"{where}: cannot read the value of fork field '{name}'") from None
    replacement = fork.translate(value.group(1))
    if replacement is None:
        raise ConverterError(
            f"{where}: {owner}.{name}: {value.group(1)} has no BVLC equivalent "
            f"({name} is a Caffe fork's field: {fork.meaning})"
        ) from None
    original = text[start : value.end()]
    translated[line] = f"fork field '{original}' as '{replacement}'"
    return text[:start] + replacement + text[value.end() :]


def _offset(text: str, line: int, column: int) -> int:
    """Index in ``text`` of a 1-based line and column as the protobuf tokenizer counts them."""
    if line < 1 or column < 1:
        return -1
    start = 0
    for _ in range(line - 1):
        start = text.find("\n", start) + 1
        if start == 0:
            return -1
    return start + column - 1


def read_prototxt(path: str | os.PathLike) -> caffe_pb2.NetParameter:
    """Read and upgrade a prototxt file."""
    return parse_prototxt(read_text(path), str(path))
