"""Read a ``.prototxt`` net definition (protobuf text format) into a current NetParameter."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from converter import caffe_pb2
from converter.errors import ConverterError, counted, file_error
from converter.io import sniff
from converter.io.caffemodel import blob_shape
from converter.io.textproto import parse_text
from converter.io.upgrade import FORK_FIELDS, upgrade_net


def read_text(path: str | os.PathLike) -> str:
    """The file's text; every way of failing to get it is a ConverterError naming the file.

    A file that is not a prototxt at all (a web page, a Git LFS pointer, an archive, binary
    weights, ...) is named for what it is (``converter.io.sniff``). Bytes that are not
    UTF-8 are accepted inside ``#`` comments, which Caffe's parser skips whatever they hold
    (Chinese comments in GBK are common); anywhere else they are an error naming the line
    and column.
    """
    path = Path(path)
    sniff.check_not_code_folder(path, "prototxt")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise file_error(path, exc) from None
    head = data[: sniff.HEAD_BYTES]
    sniff.check_not_impostor(path, "prototxt", head)
    if b"\x00" in head:
        raise ConverterError(_binary_message(path, data))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _decode_with_legacy_comments(data, path)


def _binary_message(path: Path, data: bytes) -> str:
    """What binary bytes given as a prototxt are: weights, a mean blob, or something else."""
    if sniff.looks_like_caffemodel(data[: sniff.HEAD_BYTES]):
        return (
            f"{path}: is a binary caffemodel (weights), not a prototxt (text): give the net "
            "definition first and the weights second"
        )
    encoding = sniff.wide_text_encoding(data[: sniff.HEAD_BYTES])
    if encoding is not None:  # Caffe's parser (protobuf's TextFormat) reads UTF-8 too
        return (
            f"{path}: is {encoding} text; save it as UTF-8 (e.g. `iconv -f {encoding} -t UTF-8 "
            f"{path} > {path.stem}.utf8{path.suffix}`)"
        )
    shape = blob_shape(data)
    if shape is not None:
        return sniff.binaryproto_message(path, "prototxt", shape)
    return f"{path}: is binary data, not a prototxt (text)"


def _decode_with_legacy_comments(data: bytes, path: Path) -> str:
    """UTF-8 text where undecodable bytes in ``#`` comments become U+FFFD; elsewhere they
    are an error at their line and (byte) column."""
    lines = []
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            lines.append(line.decode("utf-8"))
            continue
        except UnicodeDecodeError:
            pass
        comment = _comment_start(line)
        code = line if comment is None else line[:comment]
        try:
            text = code.decode("utf-8")
        except UnicodeDecodeError as exc:
            if sniff.looks_like_caffemodel(data[: sniff.HEAD_BYTES]) or blob_shape(data):
                raise ConverterError(_binary_message(path, data)) from None
            raise ConverterError(
                f"{path}:{number}:{exc.start + 1}: not UTF-8 text (byte 0x{code[exc.start]:02x}"
                f"{' in a string' if _in_string(code, exc.start) else ''}); save the file as "
                "UTF-8 (only # comments may hold other encodings)"
            ) from None
        lines.append(text + line[len(code) :].decode("utf-8", "replace"))
    return "\n".join(lines)


def _comment_start(line: bytes) -> int | None:
    """Index of the ``#`` that starts a comment on this line (outside quotes), or None."""
    quote = None
    index = 0
    while index < len(line):
        byte = line[index : index + 1]
        if quote:
            if byte == b"\\":
                index += 1
            elif byte == quote:
                quote = None
        elif byte in (b'"', b"'"):
            quote = byte
        elif byte == b"#":
            return index
        index += 1
    return None


def _in_string(code: bytes, index: int) -> bool:
    """Whether ``code[index]`` lies inside a quoted string."""
    return _comment_start(code[:index] + b"#") != index


def parse_prototxt(text: str, source: str = "<prototxt>") -> caffe_pb2.NetParameter:
    """Parse text-format NetParameter and upgrade legacy forms; errors carry line:column.

    Known fields of Caffe forks (``FORK_FIELDS``) are rewritten to their BVLC meaning where
    the parser reports them, one at a time, and the text is parsed again. Texts that
    ``textproto.parse_text`` reads (it gives text_format's result) skip text_format.
    """
    if text.startswith("\ufeff"):
        # protobuf's TextFormat parser, which Caffe reads prototxts with, refuses it: its
        # tokenizer skips a BOM only for .proto files (Tokenizer::NextWithComments), and
        # TextFormat reads with Tokenizer::Next, which sees a symbol where a field name goes
        raise ConverterError(
            f"{source}:1:1: starts with a UTF-8 byte order mark (BOM), which Caffe's prototxt "
            "parser (protobuf's TextFormat) refuses too; save the file without it (e.g. "
            f"`sed -i '1s/^\\xEF\\xBB\\xBF//' {source}`)"
        )
    net = parse_text(text, caffe_pb2.NetParameter())  # fast; None: leave it to text_format
    if net is not None:
        return upgrade_net(net, source)
    translated: dict[int, str] = {}  # line -> what was rewritten there, to explain later errors
    shifts: dict[int, int] = {}  # line -> characters the rewrites there added (for columns)
    unknown: list[_UnknownField] = []  # fields no schema here knows, blanked to find the rest
    for _ in range(len(text) + 1):  # each pass removes one field, so this always ends
        net = caffe_pb2.NetParameter()  # Parse does not clear what a failed pass merged
        try:
            text_format.Parse(text, net)
        except text_format.ParseError as exc:
            text = _translate_fork_field(text, exc, source, translated, shifts, unknown)
        else:
            if unknown:
                raise ConverterError(_unknown_fields_message(unknown, net))
            return upgrade_net(net, source)
    raise AssertionError("unreachable: every pass removes a field")


_NO_SUCH_FIELD = re.compile(r'Message type "caffe\.(\w+)" has no field named "(\w+)"')
_FIELD_VALUE = re.compile(r"\s*:\s*([\w.+-]+)")


@dataclass
class _UnknownField:
    where: str  # "file:line:column"
    owner: str  # the message type that has no such field
    name: str
    line: int
    layer: tuple[str, int] | None  # ("layer" or "layers", index in the net) holding it


def _translate_fork_field(
    text: str,
    exc: text_format.ParseError,
    source: str,
    translated: dict[int, str],
    shifts: dict[int, int],
    unknown: list[_UnknownField],
) -> str:
    """``text`` with the field that ``exc`` reports rewritten (a known fork field) or blanked
    out and noted in ``unknown`` (a field no schema here knows); else a ConverterError."""
    line, column = exc.GetLine(), exc.GetColumn()
    message = str(exc)
    prefix = f"{line}:{column} : "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    where = f"{source}:{line}:{column}" if line else source
    no_field = _NO_SUCH_FIELD.search(message)
    if not no_field:
        if line in translated:  # columns on this line moved when the fork field was rewritten
            where = f"{source}:{line}"
            message += f" (after reading {translated[line]})"
        if unknown:
            message += f" (and before it: {_unknown_fields_message(unknown, None)})"
        raise ConverterError(f"{where}: {message}") from None
    owner, name = no_field.groups()
    start = _offset(text, line, column)
    fork = FORK_FIELDS.get((owner, name))
    if fork is None:
        end = _field_end(text, start + len(name)) if text.startswith(name, max(start, 0)) else -1
        if start < 0 or end < 0:
            raise ConverterError(
                f"{where}: unknown field '{name}' in {owner} "
                "(BVLC Caffe has no such field; it may come from a Caffe fork)"
            ) from None
        at = f"{source}:{line}:{column - shifts.get(line, 0)}"  # the column in the user's file
        unknown.append(_UnknownField(at, owner, name, line, _layer_at(text, start)))
        # Blanks keep every later line and column where the user's file has them.
        return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]
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
    shifts[line] = shifts.get(line, 0) + len(replacement) - len(original)
    return text[:start] + replacement + text[value.end() :]


_TOKEN = re.compile(
    r"#[^\n]*"  # a comment
    r'|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\''  # a string
    r"|[A-Za-z_]\w*"  # a name
    r"|[-+.\w]+"  # a number
    r"|\S"  # punctuation
)
_OPEN, _CLOSE = "{<[", "}>]"


def _field_end(text: str, position: int) -> int:
    """Where the value of the field whose name ends at ``position`` ends: a scalar, a string
    (or adjacent strings), a list or a message block; -1 when it cannot be told."""
    tokens = _TOKEN.finditer(text, position)
    depth, seen_value = 0, False
    for match in tokens:
        token = match.group()
        if token.startswith("#"):
            continue
        if depth == 0 and token == ":" and not seen_value:
            continue
        if token in _OPEN:
            depth += 1
        elif token in _CLOSE:
            depth -= 1
            if depth < 0:
                return -1
        elif depth == 0 and token[0] in "\"'":  # adjacent strings make one value
            seen_value = True
            following = _TOKEN.match(text, _skip_space(text, match.end()))
            if following is None or following.group()[0] not in "\"'":
                return match.end()
            continue
        seen_value = True
        if depth == 0:
            return match.end()
    return -1


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _layer_at(text: str, position: int) -> tuple[str, int] | None:
    """Which top-level ``layer`` (or V1 ``layers``) block ``position`` lies in, by kind and
    index among blocks of that kind; None outside every layer."""
    depth, pending, counts, current = 0, None, {"layer": 0, "layers": 0}, None
    for match in _TOKEN.finditer(text, 0, position):
        token = match.group()
        if token.startswith("#") or (token == ":" and pending):
            continue
        if token in _OPEN:
            if depth == 0:
                current = (pending, counts[pending]) if pending else None
                if pending:
                    counts[pending] += 1
            depth += 1
        elif token in _CLOSE:
            depth = max(depth - 1, 0)
        pending = token if depth == 0 and token in counts else None
    return current if depth > 0 else None


def _unknown_fields_message(unknown: list[_UnknownField], net) -> str:
    """One line naming every unknown field, the layer holding it and its line; with the net
    (parsed without them), also every layer type this tool does not know."""
    items = []
    for field in unknown:
        layers = getattr(net, field.layer[0]) if net is not None and field.layer else []
        if field.layer and field.layer[1] < len(layers):
            holder = f"layer '{layers[field.layer[1]].name}', "
        else:
            holder = "" if field.layer else "outside any layer, "
        items.append(f"'{field.name}' in {field.owner} ({holder}line {field.line})")
    message = (
        f"{unknown[0].where}: {counted(len(unknown), 'field')} BVLC Caffe does not have (from "
        f"a Caffe fork?): {', '.join(items)}"
    )
    if net is not None:
        from converter.layers import lookup
        from converter.layers.registry import describe_layer

        types = [describe_layer(layer) for layer in net.layer if lookup(layer.type) is None]
        if types:
            message += f"; and {counted(len(types), 'layer')} of a type this tool does not know: "
            message += ", ".join(types)
    return message + (
        ". A field that does not change what the deploy net computes can be deleted from the "
        "prototxt"
    )


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
    """Read and upgrade a prototxt file.

    A short text that does not parse (a server's "404: Not Found" saved under the name) is
    named for what it is rather than reported as a syntax error.
    """
    text = read_text(path)
    try:
        return parse_prototxt(text, str(path))
    except ConverterError:
        data = text.encode("utf-8", "replace")
        short = len(data) <= sniff.SHORT_TEXT_BYTES and "{" not in text
        if short and not sniff.looks_like_prototxt(data):
            raise ConverterError(sniff.short_text_message(path, "prototxt", data)) from None
        raise
