"""The fast prototxt reader gives exactly text_format's message, or None (then text_format runs).

Proof by comparison: every prototxt of the fixtures, hand-written texts for each construct the
fast reader handles, random NetParameters printed by text_format in several styles (with
comments and ``:`` before ``{`` put in), and random damage to those texts. Wherever the fast
reader answers, its message must serialize to the same bytes as text_format's and compare
equal; where text_format fails, the fast reader must give None, and ``parse_prototxt`` must
raise exactly the error it raised before the fast reader existed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, SHARED_FIXTURES
from converter import caffe_pb2
from converter.errors import ConverterError
from converter.io import prototxt
from converter.io.prototxt import parse_prototxt
from converter.io.textproto import parse_text

RESNET152 = FIXTURES / "kaiming" / "ResNet-152-deploy.prototxt"


def fast(text: str) -> caffe_pb2.NetParameter | None:
    return parse_text(text, caffe_pb2.NetParameter())


def slow(text: str) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    text_format.Parse(text, net)
    return net


def assert_same(text: str) -> caffe_pb2.NetParameter:
    """The fast reader accepts ``text`` and gives text_format's message."""
    expected = slow(text)
    got = fast(text)
    assert got is not None, text
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )
    assert got == expected
    return got


def slow_path_outcome(text: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """What ``parse_prototxt`` gave before the fast reader: its message or its error text."""
    with monkeypatch.context() as patch:
        patch.setattr(prototxt, "parse_text", lambda text, message: None)
        try:
            return parse_prototxt(text, "net.prototxt")
        except ConverterError as exc:
            return f"ConverterError: {exc}"


def outcome(text: str) -> object:
    try:
        return parse_prototxt(text, "net.prototxt")
    except ConverterError as exc:
        return f"ConverterError: {exc}"


# ----------------------------------------------------------------------------- real files


def all_prototxts() -> list[Path]:
    roots = [FIXTURES, SHARED_FIXTURES, SHARED_FIXTURES.parent / "kaiming"]
    found = {p.resolve() for root in roots if root.is_dir() for p in root.rglob("*.prototxt")}
    return sorted(found)


@pytest.mark.parametrize("path", all_prototxts(), ids=lambda p: "/".join(p.parts[-4:]))
def test_every_fixture_prototxt_reads_the_same(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = path.read_text()
    assert_same(text)
    assert outcome(text) == slow_path_outcome(text, monkeypatch)


def test_the_hook_uses_the_fast_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """parse_prototxt answers from the fast reader without calling text_format for a
    text the fast reader handles."""
    text = RESNET152.read_text()
    layers = len(slow(text).layer)

    def refuse(*args, **kwargs):
        raise AssertionError("text_format.Parse called")

    monkeypatch.setattr(prototxt.text_format, "Parse", refuse)
    net = parse_prototxt(text, str(RESNET152))
    assert len(net.layer) == layers + 1  # + the input layer from the header


# ----------------------------------------------------------------------------- constructs

ACCEPTED = [
    "",
    "  \n# only a comment\n",
    'name: "a"',
    'name: "a" "b" \'c\'',  # adjacent strings concatenate
    "name: 'it''s'",
    r'name: "\x41\101\n\t\"\'\\ \u00e9 \303\251 \xf"',
    'name: "é ☃ \U0001f600"',
    'name: "a#b" # a comment "with quotes {\n# another\nlayer{#c\n name:"x"}#end',
    'layer{name:"a"top:"b"bottom:"c"}',
    "input_dim: 0x10 input_dim: -0x1 input_dim: 010 input_dim: -7 input_dim: +3 input_dim: 0",
    "input_dim: 2147483647 input_dim: -2147483648",
    "input_shape { dim: 9223372036854775807 dim: -9223372036854775808 dim: 0X7f }",
    "layer { loss_weight: 1e-3 loss_weight: -inf loss_weight: inf loss_weight: nan "
    "loss_weight: 1.5f loss_weight: -Infinity loss_weight: .5 loss_weight: 5. "
    "loss_weight: 1E+38 loss_weight: 3 loss_weight: -0 loss_weight: 1e-45 loss_weight: NaN "
    "loss_weight: 3.4028235e38 loss_weight: -1.5F loss_weight: infinityf }",
    "layer { blobs { double_data: 1e308 double_data: 5e-324 double_data: -2.5 data: 1e-40 } }",
    "layer { propagate_down: [true, t, 1, True, false, f, 0, False] }",
    "force_backward: t debug_info: False",
    "force_backward: 1",
    "layer { phase: 1 }",
    "layer { phase: TEST include { phase: TRAIN min_level: -3 stage: 'x' } exclude: { } }",
    "layer { pooling_param { pool: 0x1 round_mode: FLOOR engine: CUDNN } }",
    'layer < name: "a" >',
    'layer: < name: "a" > layer: { name: "b" } layer <>',
    "state {} ",
    'layer { name: "a"; type: "b", bottom: "c" },',
    'layer { name: "a" }; name: "n";',
    'input: ["a", "b" "c"] input_dim: [] input_dim: [1,2 , 3]',
    "layer { loss_weight: [1, -inf, 2.5e3] propagate_down: [] }",
    'layer {\r\n\tname: "a"\x0b\x0c}\xa0\u2028',
    "layer { eltwise_param { operation: SUM coeff: 1 coeff: -1 } }",
    "layer { convolution_param { kernel_size: 3 kernel_size: 1 pad: [1, 0] } }",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_constructs_read_the_same(text: str) -> None:
    assert_same(text)


def test_strings_decode_like_text_format() -> None:
    net = assert_same(r'name: "\303" "\251" layer { name: "\"q\" \\ \x41" }')
    assert net.name == "é"  # UTF-8 bytes split across two adjacent strings
    assert net.layer[0].name == '"q" \\ A'


# Errors, and valid texts the fast reader leaves to text_format (lists of messages, fork
# fields, extensions).
FALL_BACK = [
    'layer { name: "a" foo: 1 }',  # unknown field
    "layer { pooling_param { pool: MAXX } }",  # bad enum name
    "layer { pooling_param { pool: 7 } }",  # bad enum number
    "layer { name: 'a' ",  # missing brace
    "layer { name: 'a' } }",  # extra brace
    "layer { name: 'a' >",  # wrong closing delimiter
    "layer < name: 'a' }",
    'layer { name: "p" type: "Pooling" pooling_param { pool: MAX ceil_mode: maybe } }',
    'name: "a" name: "b"',  # singular field twice
    'name: "a"name: "b"',
    "state { } state { }",
    "layer { convolution_param { num_output: -1 } }",  # out of range
    "layer { convolution_param { num_output: 4294967296 } }",
    "input_dim: 2147483648",
    "input_dim: 1input_dim: 2",
    "input_dim: 1.5",
    "input_dim: 08",
    "layer { loss_weight: 01.5 }",  # text_format: invalid octal float
    "layer { loss_weight: abc }",
    "force_backward: yes",
    'name: "abc',  # unclosed string
    "name: 'abc\"",
    'name: "abc\\"',
    'name: "\\xff"',  # not UTF-8
    'name "a"',  # a scalar needs ':'
    'name: ["a"]',  # list for a singular field
    "input_dim: [1, 2,]",
    "input_dim: [1 2]",
    "input_dim: [1, 2",
    "layer: [{ name: 'a' }]",  # text_format's list of messages (the slow path reads it)
    "[caffe.foo] { }",
    "layer { name: 'a' } ,,",
    "layer { name: 'a' ,; }",
    "1: 2",
    "name: a",
    "name: 1",
    'name: "a" + "b"',
    "layer { phase: 'TEST' }",
    "layer { include { phase: TEST } include { phase: 3 } }",
    "LAYER { }",
    "name:",
    ":",
    "}",
    "name: 'a\ud800'",
]


@pytest.mark.parametrize("text", FALL_BACK)
def test_other_texts_fall_back_and_read_as_before(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fast(text) is None
    before = slow_path_outcome(text, monkeypatch)
    assert outcome(text) == before


def test_errors_keep_line_and_column(monkeypatch: pytest.MonkeyPatch) -> None:
    """Damage deep in a real prototxt: the same error, naming the line, as before."""
    text = RESNET152.read_text()
    lines = text.split("\n")
    lines[500] = lines[500] + " bogus_field: 1"
    damaged = "\n".join(lines)
    before = slow_path_outcome(damaged, monkeypatch)
    assert isinstance(before, str) and ":501:" in before and "bogus_field" in before
    assert outcome(damaged) == before
    for cut in (1000, len(text) // 2, len(text) - 3):  # truncated text
        assert fast(text[:cut]) is None
        assert outcome(text[:cut]) == slow_path_outcome(text[:cut], monkeypatch)


def test_fork_fields_still_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork field is unknown to the fast reader; the slow path rewrites it as before."""
    text = (
        'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
        "pooling_param { pool: MAX kernel_size: 3 ceil_mode: false } }"
    )
    assert fast(text) is None
    before = slow_path_outcome(text, monkeypatch)
    assert isinstance(before, caffe_pb2.NetParameter)
    assert before.layer[0].pooling_param.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert outcome(text) == before


# ----------------------------------------------------------------------------- random nets

INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
}
TEXT = st.text(
    st.one_of(st.sampled_from("\"'\\{}#:<>[] \n\t\r\x00\x7féü☃\U0001f600"), st.characters()),
    max_size=12,
).filter(lambda s: not re.search("[\ud800-\udfff]", s))
LAYER_PARAMS = [
    "convolution_param",
    "pooling_param",
    "batch_norm_param",
    "scale_param",
    "inner_product_param",
    "eltwise_param",
    "input_param",
    "include",
    "exclude",
    "param",
    "phase",
    "loss_weight",
    "propagate_down",
    "blobs",
]
NET_FIELDS = ["name", "layer", "input", "input_dim", "input_shape", "state", "force_backward"]
NET_FIELDS += ["debug_info", "layers"]


def scalar(field: FD) -> st.SearchStrategy:
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        return st.one_of(
            st.sampled_from([low, high, 0, 1, -1 if low else 2]), st.integers(low, high)
        )
    if field.type == FD.TYPE_FLOAT:
        return st.floats(width=32)
    if field.type == FD.TYPE_DOUBLE:
        return st.floats()
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type == FD.TYPE_ENUM:
        return st.sampled_from([value.number for value in field.enum_type.values])
    assert field.type == FD.TYPE_STRING, field.full_name
    return TEXT


@st.composite
def messages(draw, message_type, depth: int = 0):
    """A random message of ``message_type``: a random subset of its fields, random values."""
    message = GetMessageClass(message_type)()
    fields = message_type.fields_by_name
    if message_type.name == "LayerParameter":
        chosen = draw(st.lists(st.sampled_from(LAYER_PARAMS), max_size=5, unique=True))
        chosen += draw(st.lists(st.sampled_from(["name", "type", "bottom", "top"]), unique=True))
    else:
        names = NET_FIELDS if message_type.name == "NetParameter" else sorted(fields)
        chosen = draw(st.lists(st.sampled_from(names), max_size=6, unique=True))
    for name in chosen:
        field = fields[name]
        many = field.is_repeated
        if field.type == FD.TYPE_MESSAGE:
            if depth >= 3:
                continue
            sub = messages(field.message_type, depth + 1)
            if many:
                getattr(message, name).extend(draw(st.lists(sub, max_size=3 if depth else 4)))
            else:
                getattr(message, name).CopyFrom(draw(sub))
        elif many:
            getattr(message, name).extend(draw(st.lists(scalar(field), max_size=4)))
        else:
            setattr(message, name, draw(scalar(field)))
    return message


@st.composite
def printed_nets(draw) -> str:
    """A random NetParameter as text_format prints it, in a random style."""
    net = draw(messages(caffe_pb2.NetParameter.DESCRIPTOR))
    one_line = draw(st.booleans())
    text = text_format.MessageToString(
        net,
        as_one_line=one_line,
        indent=draw(st.integers(0, 4)),
        as_utf8=draw(st.booleans()),
        use_short_repeated_primitives=draw(st.booleans()),
        pointy_brackets=draw(st.booleans()),
        use_index_order=draw(st.booleans()),
        force_colon=draw(st.booleans()),
    )
    if draw(st.booleans()):  # ':' before the message's opening brace
        text = re.sub(r"(\w) ([{<])", r"\1: \2", text)
    if one_line:
        return text + draw(st.sampled_from(["", " # end", "\n#x"]))
    lines = text.split("\n")
    out = []
    for line in lines:  # comments between fields and after them
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(st.sampled_from(["# c", '  # "q" {', "#", "\t#}#"])))
        out.append(line + draw(st.sampled_from(["", "", " # t", "#x"])))
    return "\n".join(out)


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(printed_nets())
def test_random_nets_read_the_same(text: str) -> None:
    assert_same(text)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # text_format's, on a bad escape
@FUZZ
@given(
    printed_nets(),
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.sampled_from(
                [
                    "",
                    "{",
                    "}",
                    "<",
                    ">",
                    ":",
                    '"',
                    "'",
                    "\\",
                    "#",
                    "\n",
                    ",",
                    ";",
                    "[",
                    "]",
                    "-",
                    "0x",
                    ".",
                    "e",
                    "x",
                    " name: 'n' ",
                    " layer {",
                    "nan",
                    "1",
                ]
            ),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_damaged_texts_never_differ(text: str, edits: list[tuple[int, str, int]]) -> None:
    """Random damage: where the fast reader still answers, text_format gives the same."""
    for where, insert, delete in edits:
        at = where % (len(text) + 1)
        text = text[:at] + insert + text[at + delete :]
    got = fast(text)
    if got is None:
        return
    expected = slow(text)  # must not raise: the fast reader accepted it
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )
    assert got == expected
