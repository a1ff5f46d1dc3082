"""A fast reader of the protobuf text format for the subset that prototxt files use.

``text_format.Parse`` is pure Python and walks the text line by line and token by token;
for a ResNet-152 prototxt that is most of ``read_net``'s fixed cost. This reader cuts the
whole text into the same tokens with one compiled regular expression (the same token
patterns, in the same order, as text_format's tokenizer) and fills the message by the same
rules (``:`` optional before a message, required before a scalar; a singular field given
twice is an error; adjacent strings concatenate; ``,``/``;`` may end a field), converting
every value with text_format's own functions (``ParseInteger``, ``ParseFloat``,
``ParseBool``, ``ParseEnum``, ``CUnescape``). So a text it accepts gives a message equal to
text_format's.

It never reports errors: anything it does not handle, valid or not (extensions, ``Any``,
lists of messages, an unknown field, a bad value, unbalanced braces, ...), makes
``parse_text`` return None, and the caller parses with text_format, which explains the
problem with line and column.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import descriptor, text_encoding, text_format
from google.protobuf.message import Message

# Whitespace and '#' comments, then one token: an identifier, a number, a closed string in
# double or single quotes, any other single character, or '' at the end of the text. The
# first three are text_format's own token patterns; an unclosed string becomes a lone quote
# token, which no rule below accepts. Whatever precedes the token always lets it match,
# so the expression never backtracks.
_TOKEN = re.compile(
    r"""(?:\s+|\#[^\n]*)*
    (   [a-zA-Z_][0-9a-zA-Z_+-]*
      | (?:[0-9+-]|\.[0-9])[0-9a-zA-Z_.+-]*
      | "[^"\n\\]*(?:\\.[^"\n\\]*)*"
      | '[^'\n\\]*(?:\\.[^'\n\\]*)*'
      | \S
      | \Z
    )""",
    re.VERBOSE,
)

_MESSAGE, _INT, _FLOAT, _BOOL, _ENUM, _STRING = range(6)

_FD = descriptor.FieldDescriptor
_INT_TYPES = {  # field type -> (is_signed, is_long) as text_format checks the range
    _FD.TYPE_INT32: (True, False),
    _FD.TYPE_SINT32: (True, False),
    _FD.TYPE_SFIXED32: (True, False),
    _FD.TYPE_INT64: (True, True),
    _FD.TYPE_SINT64: (True, True),
    _FD.TYPE_SFIXED64: (True, True),
    _FD.TYPE_UINT32: (False, False),
    _FD.TYPE_FIXED32: (False, False),
    _FD.TYPE_UINT64: (False, True),
    _FD.TYPE_FIXED64: (False, True),
}

# A field's entry: (kind, name, repeated, extra); extra is the sub-message's table, the
# integer's (is_signed, is_long), or (enum names -> numbers, field descriptor).
_Entry = tuple[int, str, bool, Any]
_tables: dict[str, dict[str, _Entry]] = {}


def parse_text(text: str, message: Message) -> Message | None:
    """Parse ``text`` into the empty ``message`` and return it, or None: "use text_format".

    On None, ``message`` may hold part of the text; pass text_format a fresh one.
    """
    try:
        text.encode("utf-8")  # a lone surrogate: text_format reports it
        return _parse(_TOKEN.findall(text), message)
    except Exception:  # every failure means "not handled here", never a user-facing error
        return None


def _table(message_type: descriptor.Descriptor) -> dict[str, _Entry]:
    """Field name -> entry for the fields this reader handles (others are absent)."""
    table = _tables.get(message_type.full_name)
    if table is not None:
        return table
    table = _tables[message_type.full_name] = {}
    for field in message_type.fields:
        if field.containing_oneof is not None:
            continue  # text_format checks oneof conflicts; none in caffe.proto
        repeated = field.is_repeated
        if field.type == _FD.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue
            table[field.name] = (_MESSAGE, field.name, repeated, _table(field.message_type))
        elif field.type in _INT_TYPES:
            table[field.name] = (_INT, field.name, repeated, _INT_TYPES[field.type])
        elif field.type in (_FD.TYPE_FLOAT, _FD.TYPE_DOUBLE):
            table[field.name] = (_FLOAT, field.name, repeated, None)
        elif field.type == _FD.TYPE_BOOL:
            table[field.name] = (_BOOL, field.name, repeated, None)
        elif field.type == _FD.TYPE_ENUM:
            names = {value.name: value.number for value in field.enum_type.values}
            table[field.name] = (_ENUM, field.name, repeated, (names, field))
        elif field.type == _FD.TYPE_STRING:
            table[field.name] = (_STRING, field.name, repeated, None)
        # bytes and groups: absent, so text_format reads them
    return table


class _Unhandled(Exception):
    """The text uses something this reader leaves to text_format."""


def _parse(tokens: list[str], root: Message) -> Message:
    """Fill ``root`` from ``tokens``; any text_format error, or anything unhandled, raises."""
    message, table, end = root, _table(root.DESCRIPTOR), ""  # '' is the last token
    stack: list[tuple[Message, dict[str, _Entry], str]] = []
    pos = 0
    while True:
        token = tokens[pos]
        pos += 1
        if token == end:
            if not stack:
                return root
            message, table, end = stack.pop()
        else:
            kind, name, repeated, extra = table[token]  # KeyError: not a known field
            if kind == _MESSAGE:
                token = tokens[pos]
                pos += 1
                if token == ":":
                    token = tokens[pos]
                    pos += 1
                if token == "{":
                    close = "}"
                elif token == "<":
                    close = ">"
                else:
                    raise _Unhandled(token)  # e.g. a list of messages
                if repeated:
                    sub = getattr(message, name).add()
                else:
                    if message.HasField(name):
                        raise _Unhandled(name)  # text_format: "should not have multiple"
                    sub = getattr(message, name)
                    sub.SetInParent()
                stack.append((message, table, end))
                message, table, end = sub, extra, close
                continue  # a ',' or ';' may follow the closing brace
            if tokens[pos] != ":":
                raise _Unhandled(tokens[pos])
            pos += 1
            if repeated:
                if tokens[pos] == "[":
                    pos = _merge_list(tokens, pos + 1, kind, extra, getattr(message, name))
                else:
                    value, pos = _value(tokens, pos, kind, extra)
                    getattr(message, name).append(value)
            else:
                if message.HasField(name):
                    raise _Unhandled(name)
                value, pos = _value(tokens, pos, kind, extra)
                setattr(message, name, value)
        token = tokens[pos]  # fields may be ended by ',' or ';' (one of them)
        if token == "," or token == ";":
            pos += 1


def _merge_list(tokens: list[str], pos: int, kind: int, extra: Any, container: Any) -> int:
    """Append ``[v, v, ...]`` (``pos`` just after '[') to ``container``; index after ']'."""
    if tokens[pos] == "]":
        return pos + 1
    while True:
        value, pos = _value(tokens, pos, kind, extra)
        container.append(value)
        token = tokens[pos]
        pos += 1
        if token == "]":
            return pos
        if token != ",":
            raise _Unhandled(token)


def _value(tokens: list[str], pos: int, kind: int, extra: Any) -> tuple[Any, int]:
    """The scalar value whose first token is ``tokens[pos]``, and the index after it."""
    token = tokens[pos]
    if kind == _STRING:  # adjacent quoted tokens, unescaped, joined, then UTF-8 decoded
        inners = []
        while len(token) >= 2 and token[0] in "\"'":  # a 1-character quote is an unclosed string
            inners.append(token[1:-1])
            pos += 1
            token = tokens[pos]
        if len(inners) == 1 and "\\" not in inners[0]:
            return inners[0], pos  # the common case; parse_text checked that the text encodes
        if not inners:
            raise _Unhandled(token)
        parts = [text_encoding.CUnescape(inner) for inner in inners]
        return b"".join(parts).decode("utf-8"), pos
    if kind == _INT:
        return text_format.ParseInteger(token, *extra), pos + 1
    if kind == _FLOAT:
        return text_format.ParseFloat(token), pos + 1
    if kind == _ENUM:
        names, field = extra
        number = names.get(token)
        if number is None:
            number = text_format.ParseEnum(field, token)  # by number, or ValueError
        return number, pos + 1
    return text_format.ParseBool(token), pos + 1  # _BOOL
