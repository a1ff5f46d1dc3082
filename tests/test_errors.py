"""Bad input never crashes and never corrupts: a catalogue of broken inputs through the CLI.

Every bad input must end in exit status 2 and exactly one line on stderr,
``caffe2torch: error: ...``, naming the file (and the layer or blob where one applies); no
traceback, no file left behind, and a file already at the output path untouched. The CLI
runs in-process (``converter.cli.main``) for speed; a few real ``python -m converter`` runs
prove that nothing else reaches a terminal.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import converter
from conftest import ROOT
from converter import caffe_pb2
from converter.cli import main

SMALL_PROTOTXT = """\
name: "small"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
  inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
# Layers after the last one with blobs: a caffemodel cut just before them is still complete.
LAST_WEIGHTED_LAYER = "fc"
SENTINEL = b"an earlier conversion that a failed run must leave alone"
RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A folder with small.prototxt and a matching small.caffemodel (seeded weights)."""
    folder = tmp_path_factory.mktemp("small")
    (folder / "small.prototxt").write_text(SMALL_PROTOTXT)
    net = converter.read_net(folder / "small.prototxt")
    rng = np.random.default_rng(0)
    for layer, shapes in zip(net.layers, net.shapes()):
        layer.blobs = [rng.standard_normal(s).astype(np.float32) for s in shapes.param_shapes]
        if layer.type == "BatchNorm":
            layer.blobs[1] = np.abs(layer.blobs[1]) + 0.5
            layer.blobs[2] = np.ones(1, np.float32)
    converter.write_caffemodel(net, folder / "small.caffemodel")
    return folder


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_failure(code: int, out: str, err: str, *names) -> str:
    """Exit 2, one line on stderr that names ``names``, no traceback; returns the line."""
    lines = err.splitlines()
    assert code == 2, f"exit {code}, stderr: {err!r}"
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("caffe2torch: error: "), lines[0]
    assert "Traceback" not in err + out
    for name in names:
        assert str(name) in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


def fails(capsys, argv, *names) -> str:
    return assert_failure(*run_cli(capsys, *argv), *names)


def convert_fails(capsys, tmp_path, prototxt, caffemodel, *names, extra=(), fmt="safetensors"):
    """``convert`` onto an existing output file must fail cleanly and leave that file and its
    folder exactly as they were."""
    out = tmp_path / f"out-{fmt}"
    out.mkdir(exist_ok=True)
    target = out / f"model.{fmt}"
    target.write_bytes(SENTINEL)
    message = fails(capsys, ["convert", prototxt, caffemodel, "-o", target, *extra], *names)
    assert sorted(p.name for p in out.iterdir()) == [target.name], "a file was left behind"
    assert target.read_bytes() == SENTINEL, "the existing output was changed"
    return message


def small_param(small: Path) -> caffe_pb2.NetParameter:
    param = caffe_pb2.NetParameter()
    param.ParseFromString((small / "small.caffemodel").read_bytes())
    return param


def write_param(path: Path, param: caffe_pb2.NetParameter) -> Path:
    path.write_bytes(param.SerializeToString())
    return path


def stored(param: caffe_pb2.NetParameter, name: str) -> caffe_pb2.LayerParameter:
    return next(layer for layer in param.layer if layer.name == name)


# ----------------------------------------------------------------------------- wire helpers


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(buf: bytes, start: int, end: int):
    """(number, wire type, payload start, payload end) of each field of a valid message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(buf, pos)
            yield number, wire, pos, after
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield number, wire, pos, pos + size
            after = pos + size
        else:
            after = pos + (4 if wire == 5 else 8)
            yield number, wire, pos, after
        pos = after


def layer_spans(raw: bytes) -> list[tuple[str, int]]:
    """(layer name, offset just past the layer) for each stored layer."""
    spans = []
    for number, _, a, b in _fields(raw, 0, len(raw)):
        if number == 100:
            name = next(raw[x:y].decode() for n, _, x, y in _fields(raw, a, b) if n == 1)
            spans.append((name, b))
    return spans


def blob_bytes(raw: bytes) -> tuple[set[int], set[int]]:
    """Offsets inside stored blobs: (their float payloads, everything else in them).

    Damage to a float payload is a different number, not a bad file; damage anywhere else
    in a blob (shape, tags, lengths) must be reported.
    """
    data, rest = set(), set()
    for number, _, a, b in _fields(raw, 0, len(raw)):
        if number != 100:
            continue
        for n, _, x, y in _fields(raw, a, b):
            if n == 7:
                rest.update(range(x, y))
                for m, _, u, v in _fields(raw, x, y):
                    if m == 5:
                        data.update(range(u, v))
    return data, rest - data


# ----------------------------------------------------------------------------- damaged files


def test_truncated_caffemodel_at_every_sampled_cut(capsys, small, tmp_path):
    """Cut points: every layer boundary, the bytes around each, and every 5th byte."""
    raw = (small / "small.caffemodel").read_bytes()
    spans = layer_spans(raw)
    complete = {end for name, end in spans[[n for n, _ in spans].index(LAST_WEIGHTED_LAYER) :]}
    cuts = set(range(0, len(raw), 5)) | {e + d for _, e in spans for d in (-1, 0, 1)}
    cuts = sorted(c for c in cuts if 0 <= c < len(raw))
    cut_file = tmp_path / "cut.caffemodel"
    failed = 0
    for cut in cuts:
        cut_file.write_bytes(raw[:cut])
        code, out, err = run_cli(capsys, "inspect", small / "small.prototxt", cut_file)
        if cut in complete:  # only layers without blobs are missing: a valid, complete file
            assert code == 0, err
            continue
        assert_failure(code, out, err, cut_file)
        failed += 1
    assert len(cuts) > 400 and failed == len(cuts) - len(complete & set(cuts))
    # The same reader behind convert and verify: a sample of the cuts through each of them.
    for cut in cuts[::40]:
        cut_file.write_bytes(raw[:cut])
        if cut not in complete:
            convert_fails(capsys, tmp_path, small / "small.prototxt", cut_file, cut_file)
            fails(capsys, ["verify", small / "small.prototxt", cut_file], cut_file)


def test_bit_flips_in_caffemodel_structure(capsys, small, tmp_path):
    """One bit flipped in every byte outside the float data (tags, lengths, names, shapes).

    Inside a blob every flip must be reported (exit 2). Elsewhere a flip is either reported
    or lands where nothing the conversion uses changes (a type string, bottoms and tops, a
    copied layer parameter, the name of a layer without blobs): then the weights read are
    bit-identical to the original's.
    """
    raw = (small / "small.caffemodel").read_bytes()
    original = converter.read_net(small / "small.prototxt", small / "small.caffemodel")
    data, blob_structure = blob_bytes(raw)
    structure = [i for i in range(len(raw)) if i not in data]
    flipped = tmp_path / "flipped.caffemodel"
    outcomes = {0: 0, 2: 0}
    for index in structure:
        damaged = bytearray(raw)
        damaged[index] ^= 1 << (index % 8)
        flipped.write_bytes(bytes(damaged))
        code, out, err = run_cli(capsys, "inspect", small / "small.prototxt", flipped)
        if code == 2 or index in blob_structure:
            assert_failure(code, out, err, flipped)
        else:
            assert code == 0, err
            net = converter.read_net(small / "small.prototxt", flipped)
            for ours, theirs in zip(net.layers, original.layers):
                assert len(ours.blobs) == len(theirs.blobs), (index, ours.name)
                for a, b in zip(ours.blobs, theirs.blobs):
                    assert np.array_equal(a, b), (index, ours.name)
        outcomes[code] += 1
    assert len(structure) > 300 and outcomes[2] > len(structure) // 3, outcomes


def test_random_bytes_as_every_input(capsys, small, tmp_path):
    rng = random.Random(7)
    junk = tmp_path / "junk"
    proto, model = small / "small.prototxt", small / "small.caffemodel"
    for trial in range(40):
        junk.write_bytes(rng.randbytes(rng.choice([1, 7, 100, 1000, 5000])))
        fails(capsys, ["inspect", proto, junk], junk)
        fails(capsys, ["inspect", junk], junk)
        if trial % 4 == 0:
            convert_fails(capsys, tmp_path, proto, junk, junk)
            convert_fails(capsys, tmp_path, junk, model, junk)
    for suffix in ("safetensors", "pt"):
        converted = tmp_path / f"junk.{suffix}"
        converted.write_bytes(rng.randbytes(2000))
        fails(capsys, ["verify", proto, model, "--converted", converted], converted)
    for suffix, option in (("npy", "--input"), ("npz", "--reference")):
        path = tmp_path / f"junk.{suffix}"
        path.write_bytes(rng.randbytes(300))
        fails(capsys, ["verify", proto, model, option, path], path)
    image, mean = tmp_path / "image.png", tmp_path / "junk.binaryproto"
    _write_png(image)
    for _ in range(5):
        mean.write_bytes(rng.randbytes(rng.choice([3, 300])))
        fails(capsys, ["verify", proto, model, "--input", image, "--mean", mean], mean)


@pytest.mark.parametrize(
    "role", ["prototxt", "caffemodel", "converted.safetensors", "converted.pt", "input", "npz"]
)
def test_empty_files(capsys, small, tmp_path, role):
    empty = tmp_path / {"input": "empty.npy", "npz": "empty.npz"}.get(role, f"empty.{role}")
    empty.write_bytes(b"")
    proto, model = small / "small.prototxt", small / "small.caffemodel"
    if role == "prototxt":
        fails(capsys, ["inspect", empty], empty)
        convert_fails(capsys, tmp_path, empty, model, empty)
    elif role == "caffemodel":
        fails(capsys, ["inspect", proto, empty], empty)
        convert_fails(capsys, tmp_path, proto, empty, empty)
    elif role.startswith("converted"):
        fails(capsys, ["verify", proto, model, "--converted", empty], empty)
    elif role == "input":
        fails(capsys, ["verify", proto, model, "--input", empty], empty)
    else:
        fails(capsys, ["verify", proto, model, "--reference", empty], empty)


def unreadable(path: Path, monkeypatch) -> None:
    """Make ``path`` unreadable. chmod 000 does not stop root, so as root opening it is made
    to fail the way the kernel would (PermissionError) for Python's own file opening."""
    path.chmod(0)
    if not RUNNING_AS_ROOT:
        return
    real_open = io.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", guarded)
    monkeypatch.setattr(builtins, "open", guarded)


@pytest.mark.parametrize("problem", ["missing", "directory", "unreadable"])
@pytest.mark.parametrize("role", ["prototxt", "caffemodel", "input", "mean", "reference"])
def test_missing_directory_or_unreadable(capsys, small, tmp_path, monkeypatch, problem, role):
    suffix = {"input": ".npy", "mean": ".binaryproto", "reference": ".npz"}.get(role, f".{role}")
    bad = tmp_path / f"bad{suffix}"
    if problem == "directory":
        bad.mkdir()
    elif problem == "unreadable":  # real content, so only the permission is wrong
        if role == "mean":
            bad.write_bytes((ROOT / "tests/fixtures/kaiming/ResNet_mean.binaryproto").read_bytes())
        elif role == "input":
            np.save(bad, np.zeros((1, 3, 9, 9), np.float32))
        elif role == "reference":
            np.savez(bad, prob=np.zeros((1, 5), np.float32))
        else:
            bad.write_bytes((small / f"small{suffix}").read_bytes())
        unreadable(bad, monkeypatch)
    proto, model = small / "small.prototxt", small / "small.caffemodel"
    image = tmp_path / "image.png"
    _write_png(image)
    runs = {
        "prototxt": [["inspect", bad], ["verify", bad, model]],
        "caffemodel": [["inspect", proto, bad], ["verify", proto, bad]],
        "input": [["verify", proto, model, "--input", bad]],
        "mean": [["verify", proto, model, "--input", image, "--mean", bad]],
        "reference": [["verify", proto, model, "--reference", bad]],
    }[role]
    messages = [fails(capsys, argv, bad) for argv in runs]
    if role == "prototxt":
        messages.append(convert_fails(capsys, tmp_path, bad, model, bad))
    elif role == "caffemodel":
        messages.append(convert_fails(capsys, tmp_path, proto, bad, bad))
    why = {"missing": "no such", "directory": "directory", "unreadable": "permission denied"}
    for message in messages:
        assert why[problem] in message.lower(), message


def _write_png(path: Path) -> None:
    import cv2

    cv2.imwrite(str(path), np.full((12, 12, 3), 128, np.uint8))


# ----------------------------------------------------------------------------- prototxt


SYNTAX_ERRORS = {
    # name: (replace this, with this); the message must name the line of the replaced text
    "unclosed brace": ('top: "prob" }', 'top: "prob"'),
    "unterminated string": ('name: "relu1"', 'name: "relu1'),
    "unknown enum value": ("pool: MAX", "pool: MAXIMUM"),
    "string for a number": ("num_output: 5", 'num_output: "five"'),
    "negative unsigned": ("num_output: 4", "num_output: -4"),
    "unsigned overflow": ("num_output: 4", "num_output: 4294967296"),
    "fraction for an integer": ("num_output: 4", "num_output: 4.5"),
    "field given twice": ('name: "fc"', 'name: "fc" name: "fc2"'),
    "misspelled field": ("kernel_size: 3", "kernal_size: 3"),
    "unknown top-level field": ('name: "small"', 'solver: "x" name: "small"'),
    "missing colon": ("num_output: 5", "num_output 5"),
    "stray closing brace": ('layer { name: "relu1"', '} layer { name: "relu1"'),
    "scalar for a message": ("scale_param { bias_term: true }", "scale_param: 3"),
    "truncated escape": ('name: "relu1"', 'name: "re\\x"'),
    "escape out of range": ('name: "relu1"', 'name: "re\\U0011FFFF"'),
    "escaped non-UTF-8 name": ('name: "relu1"', 'name: "\\377"'),
    "control characters": ("pool: MAX", "pool: MAX \x01\x1b[2J"),
    "unknown fork field": ("stride: 2 }", "stride: 2 torch_pooling: true }"),
    "fork field, value with no BVLC meaning": ("stride: 2 }", "stride: 2 ceil_mode: 2 }"),
    "fork field in the wrong message": ("pad: 1 }", "pad: 1 ceil_mode: false }"),
    "NaN for a dim": ("dim: 9 dim: 9", "dim: nan dim: 9"),
    "fork field set twice": ("stride: 2 }", "stride: 2 ceil_mode: true ceil_mode: true }"),
}


@pytest.mark.parametrize("case", sorted(SYNTAX_ERRORS))
def test_prototxt_syntax_errors_name_file_line_and_column(capsys, small, tmp_path, case):
    old, new = SYNTAX_ERRORS[case]
    line = SMALL_PROTOTXT[: SMALL_PROTOTXT.index(old)].count("\n") + 1
    bad = tmp_path / "bad.prototxt"
    bad.write_text(SMALL_PROTOTXT.replace(old, new, 1))
    message = fails(capsys, ["inspect", bad], f"{bad}:{line}:")
    assert message.isprintable(), message  # no control characters reach the terminal
    assert fails(capsys, ["inspect", bad, small / "small.caffemodel"]) == message
    convert_fails(capsys, tmp_path, bad, small / "small.caffemodel", f"{bad}:{line}")


def test_non_utf8_prototxt(capsys, small, tmp_path):
    bad = tmp_path / "latin1.prototxt"
    bad.write_bytes(SMALL_PROTOTXT.replace('"relu1"', '"relu\xe91"').encode("latin-1"))
    fails(capsys, ["inspect", bad], f"{bad}:8:20:", "UTF-8")
    convert_fails(capsys, tmp_path, bad, small / "small.caffemodel", f"{bad}:8:20:", "UTF-8")


def test_prototxt_starting_with_a_byte_order_mark(capsys, small, tmp_path):
    """Caffe reads a prototxt with protobuf's TextFormat, whose tokenizer skips a UTF-8 BOM
    only in .proto files (Tokenizer::NextWithComments); TextFormat reads tokens with Next,
    so it stops at the BOM. We refuse it too, saying what it is, not "got \\ufeff"."""
    bad = tmp_path / "bom.prototxt"
    bad.write_bytes(b"\xef\xbb\xbf" + SMALL_PROTOTXT.encode())
    message = fails(capsys, ["inspect", bad], f"{bad}:1:1:", "byte order mark", "sed -i")
    assert "\ufeff" not in message and message.isprintable()
    convert_fails(capsys, tmp_path, bad, small / "small.caffemodel", "byte order mark")
    # after the start it is an ordinary stray character (a field name cannot hold it)
    later = tmp_path / "later.prototxt"
    later.write_bytes(SMALL_PROTOTXT.replace("layer", "\ufefflayer", 2).encode())
    assert "byte order mark" not in fails(capsys, ["inspect", later], f"{later}:")


NET_ERRORS = {
    # name: (replace, with, words the message must contain)
    "bottom nobody produces": ('bottom: "pool1"', 'bottom: "pool2"', ["'fc'", "'pool2'"]),
    "no layers at all": (SMALL_PROTOTXT, 'name: "empty"\n', ["no layers"]),
    "V1 and current layers mixed": ('name: "small"', 'name: "small" layers { name: "x" }', ["V1"]),
    "legacy input_dim count": ('name: "small"', 'name: "small" input: "x" input_dim: 1', ["x"]),
}


@pytest.mark.parametrize("case", sorted(NET_ERRORS))
def test_net_structure_errors(capsys, small, tmp_path, case):
    old, new, words = NET_ERRORS[case]
    bad = tmp_path / "bad.prototxt"
    bad.write_text(SMALL_PROTOTXT.replace(old, new, 1))
    fails(capsys, ["inspect", bad], bad, *words)
    convert_fails(capsys, tmp_path, bad, small / "small.caffemodel", bad, *words)


SHAPE_ERRORS = {
    # name: (replace, with, the layer named)
    "negative input dim": ("dim: 9 dim: 9", "dim: -3 dim: 9", "data"),
    "zero input dim": ("dim: 9 dim: 9", "dim: 0 dim: 9", "pool1"),
    "absurd input dim": ("dim: 9 dim: 9", "dim: 1099511627776 dim: 9", "fc"),
    "zero kernel": ("kernel_size: 3", "kernel_size: 0", "conv1"),
    "zero stride": ("stride: 2 }", "stride: 0 }", "pool1"),
    "zero group": ("pad: 1 }", "pad: 1 group: 0 }", "conv1"),
    "zero num_output": ("num_output: 4", "num_output: 0", "conv1"),
    "axis out of range": ("num_output: 5 }", "num_output: 5 axis: 7 }", "fc"),
    "pad not below kernel": ("stride: 2 }", "stride: 2 pad: 2 }", "pool1"),
    "rank-1 input to a convolution": ("dim: 1 dim: 3 dim: 9 dim: 9", "dim: 243", "conv1"),
    "Input with more shapes than tops": (
        "dim: 9 dim: 9 } }",
        "dim: 9 dim: 9 } shape { dim: 1 } }",
        "data",
    ),
    "Slice with no tops": (
        'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }',
        'layer { name: "prob" type: "Slice" bottom: "fc" }',
        "prob",
    ),
}


@pytest.mark.parametrize("case", sorted(SHAPE_ERRORS))
def test_impossible_shapes(capsys, small, tmp_path, case):
    """Zero, negative and absurd sizes: rejected, naming the layer; nothing is allocated."""
    old, new, layer = SHAPE_ERRORS[case]
    bad = tmp_path / "bad.prototxt"
    bad.write_text(SMALL_PROTOTXT.replace(old, new, 1))
    model = small / "small.caffemodel"
    fails(capsys, ["inspect", bad, model], f"'{layer}'")
    convert_fails(capsys, tmp_path, bad, model, f"'{layer}'")
    fails(capsys, ["verify", bad, model], f"'{layer}'")


POOL = "kernel_size: 2 stride: 2"
CONV = "kernel_size: 3 pad: 1"
HALF_PAIRS = {
    # name: (replace, with, the fields the message names); Caffe's LayerSetUp refuses each
    # (pooling_layer.cpp; base_conv_layer.cpp takes the missing half as 0)
    "pooling pad_h alone": (POOL, f"{POOL} pad_h: 1", ["'pool1'", "pad_h without pad_w"]),
    "pooling pad_w alone": (POOL, f"{POOL} pad_w: 1", ["'pool1'", "pad_w without pad_h"]),
    "pooling stride_h alone": (POOL, "kernel_size: 2 stride_h: 2", ["stride_h without stride_w"]),
    "pooling stride_w alone": (POOL, "kernel_size: 2 stride_w: 2", ["stride_w without stride_h"]),
    "pooling kernel_h alone": (POOL, "kernel_h: 2 stride: 2", ["kernel_h without kernel_w"]),
    "pooling kernel_w alone": (POOL, "kernel_w: 2 stride: 2", ["kernel_w without kernel_h"]),
    "pooling pad and pad_h/pad_w": (
        POOL,
        f"{POOL} pad: 1 pad_h: 1 pad_w: 1",
        ["'pool1'", "both pad and pad_h/pad_w"],
    ),
    "pooling stride and stride_h/stride_w": (
        POOL,
        f"{POOL} stride_h: 2 stride_w: 2",
        ["both stride and stride_h/stride_w"],
    ),
    "pooling kernel_size and kernel_h/kernel_w": (
        POOL,
        f"{POOL} kernel_h: 2 kernel_w: 2",
        ["both kernel_size and kernel_h/kernel_w"],
    ),
    "global pooling with a kernel": (
        POOL,
        "kernel_size: 2 global_pooling: true",
        ["'pool1'", "kernel_size with global_pooling"],
    ),
    "convolution kernel_h alone": (CONV, "kernel_h: 3 pad: 1", ["'conv1'", "kernel_h without"]),
    "convolution stride_w alone": (
        CONV,
        f"{CONV} stride_w: 2",
        ["'conv1'", "stride_w without stride_h"],
    ),
}


@pytest.mark.parametrize("case", sorted(HALF_PAIRS))
def test_half_pairs_are_refused_as_caffe_refuses_them(capsys, small, tmp_path, case):
    """One of ``_h``/``_w`` without the other, or beside the field for both axes: Caffe
    stops the net at setup; so does every command, naming the layer and the field."""
    old, new, words = HALF_PAIRS[case]
    bad = tmp_path / "bad.prototxt"
    bad.write_text(SMALL_PROTOTXT.replace(old, new, 1))
    model = small / "small.caffemodel"
    fails(capsys, ["inspect", bad, model], *words)
    convert_fails(capsys, tmp_path, bad, model, *words)
    fails(capsys, ["verify", bad, model], *words)


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        (POOL, f"{POOL} kernel_h: 3", {}),  # Caffe's checks let it pass; kernel_size counts
        (CONV, "kernel_size: 3 pad_h: 1 pad_w: 1", {}),
        (CONV, "kernel_size: 3 pad_h: 1", {"conv1": (1, 4, 9, 7), "pool1": (1, 4, 5, 4)}),
    ],
)
def test_what_caffe_accepts_of_the_pairs_is_read_as_caffe_reads_it(
    small, tmp_path, old, new, changed
):
    """A lone kernel_h beside kernel_size passes Caffe's Pooling checks and is unused; a
    convolution's pad_w defaults to 0 beside pad_h (base_conv_layer.cpp)."""
    good = tmp_path / "good.prototxt"
    good.write_text(SMALL_PROTOTXT.replace(old, new, 1))
    shapes = converter.read_net(good).blob_shapes()
    plain = converter.read_net(small / "small.prototxt").blob_shapes()
    assert shapes == {**plain, **changed}


HUGE_INPUT = """\
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 16777216 dim: 16777216 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 2 } }
"""


def test_absurd_input_converts_but_verify_fails_cleanly(capsys, tmp_path):
    """Weights do not depend on a 2^24 x 2^24 input, so convert works; verify cannot make such
    an input (6 PiB: more than any address space, so no allocation can even start) and must
    say so in one line instead of dying."""
    proto, model = tmp_path / "huge.prototxt", tmp_path / "huge.caffemodel"
    proto.write_text(HUGE_INPUT)
    net = converter.read_net(proto)
    net.layer("fc").blobs = [np.ones((2, 3), np.float32), np.zeros(2, np.float32)]
    converter.write_caffemodel(net, model)
    assert run_cli(capsys, "convert", proto, model, "-o", tmp_path / "huge.safetensors")[0] == 0
    fails(capsys, ["verify", proto, model, "--reference", "numpy"], "memory")


def test_unknown_layer_type(capsys, small, tmp_path):
    bad = tmp_path / "unknown.prototxt"
    bad.write_text(SMALL_PROTOTXT.replace('type: "ReLU"', 'type: "Frobnicate"'))
    code, out, err = run_cli(capsys, "inspect", bad)
    assert code == 0 and "Frobnicate" in out  # inspect lists what it cannot convert
    model = small / "small.caffemodel"
    convert_fails(capsys, tmp_path, bad, model, "relu1", "Frobnicate")
    convert_fails(capsys, tmp_path, bad, model, "relu1", "Frobnicate", extra=["--generic"])
    fails(capsys, ["verify", bad, model], "relu1", "Frobnicate")


# ----------------------------------------------------------------------------- pairs


def _wrong_shape(param):
    stored(param, "conv1").blobs[0].shape.dim[0] = 2
    del stored(param, "conv1").blobs[0].data[54:]


def _missing_layer(param):
    del stored(param, "fc").blobs[:]


def _missing_blob(param):
    del stored(param, "scale1").blobs[1:]


def _extra_blob(param):
    stored(param, "fc").blobs.add().CopyFrom(stored(param, "fc").blobs[1])


def _stored_twice(param):
    param.layer.add().CopyFrom(stored(param, "fc"))


def _short_data(param):
    del stored(param, "bn1").blobs[0].data[-1:]


def _long_data(param):
    stored(param, "fc").blobs[1].data.append(1.0)


def _absurd_shape(param):
    blob = stored(param, "conv1").blobs[0]
    del blob.shape.dim[:]
    blob.shape.dim.extend([1 << 20, 1 << 20])  # 2^40 values declared, 108 present


def _overflowing_shape(param):
    blob = stored(param, "conv1").blobs[0]
    del blob.shape.dim[:]
    blob.shape.dim.extend([1 << 62, 1 << 62, 4])  # the product does not fit in 64 bits


def _negative_dim(param):
    stored(param, "conv1").blobs[0].shape.dim[1] = -3


def _zero_dim(param):
    blob = stored(param, "fc").blobs[1]
    del blob.data[:]
    blob.shape.dim[0] = 0


def _legacy_absurd(param):
    blob = stored(param, "conv1").blobs[0]
    blob.ClearField("shape")
    blob.num, blob.channels, blob.height, blob.width = (1 << 31) - 1, 1 << 20, 3, 3


def _legacy_negative(param):
    blob = stored(param, "fc").blobs[1]
    blob.ClearField("shape")
    blob.num, blob.channels, blob.height, blob.width = 1, 1, -1, -5


def _float_and_double(param):
    stored(param, "fc").blobs[1].double_data.extend([1.0] * 5)


PAIR_ERRORS = {
    # name: (change to the caffemodel, layer the message names, "blob N" when it applies)
    "wrong shape": (_wrong_shape, "conv1", "blob 0"),
    "missing layer": (_missing_layer, "fc", None),
    "missing blob": (_missing_blob, "scale1", None),
    "extra blob": (_extra_blob, "fc", None),
    "layer stored twice": (_stored_twice, "fc", None),
    "data shorter than shape": (_short_data, "bn1", "blob 0"),
    "data longer than shape": (_long_data, "fc", "blob 1"),
    "absurd declared shape (2^40 values)": (_absurd_shape, "conv1", "blob 0"),
    "shape product overflows 64 bits": (_overflowing_shape, "conv1", "blob 0"),
    "negative dim": (_negative_dim, "conv1", "blob 0"),
    "zero dim": (_zero_dim, "fc", "blob 1"),
    "absurd legacy dims": (_legacy_absurd, "conv1", "blob 0"),
    "negative legacy dims": (_legacy_negative, "fc", "blob 1"),
    "float and double data": (_float_and_double, "fc", "blob 1"),
}


@pytest.mark.parametrize("case", sorted(PAIR_ERRORS))
def test_caffemodel_that_does_not_fit_the_prototxt(capsys, small, tmp_path, case):
    change, layer, blob = PAIR_ERRORS[case]
    param = small_param(small)
    change(param)
    bad = write_param(tmp_path / "bad.caffemodel", param)
    names = [bad, f"'{layer}'"] + ([blob] if blob else [])
    proto = small / "small.prototxt"
    tracemalloc.start()
    try:
        fails(capsys, ["inspect", proto, bad], *names)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak} bytes allocated for a {bad.stat().st_size}-byte file"
    convert_fails(capsys, tmp_path, proto, bad, *names)
    convert_fails(capsys, tmp_path, proto, bad, *names, fmt="pt")
    fails(capsys, ["verify", proto, bad], *names)


def test_another_nets_caffemodel(capsys, small, tmp_path):
    resnet = ROOT / "tests/fixtures/resnet18_w8/resnet18_w8.caffemodel"
    convert_fails(capsys, tmp_path, small / "small.prototxt", resnet, resnet, "does not match")


def test_trained_layers_the_prototxt_lacks_are_ignored_with_one_warning(capsys, small, tmp_path):
    """Caffe copies weights by name and ignores the rest ("Ignoring source layer"): so does
    convert, with one warning line naming them; the converted tensors are the same."""
    param = small_param(small)
    for name in ("stranger", "onet_landmark"):
        extra = param.layer.add(name=name, type="Convolution")
        extra.blobs.add().data.extend([1.0])
    extra = write_param(tmp_path / "extra.caffemodel", param)
    proto = small / "small.prototxt"
    ours, plain = tmp_path / "extra.safetensors", tmp_path / "plain.safetensors"
    code, out, err = run_cli(capsys, "convert", proto, extra, "-o", ours)
    lines = err.splitlines()
    assert code == 0 and len(lines) == 1 and lines[0].startswith("caffe2torch: warning: "), err
    for words in (str(extra), "ignoring 2 trained layers", "'stranger'", "'onet_landmark'"):
        assert words in lines[0], lines[0]
    assert run_cli(capsys, "convert", proto, small / "small.caffemodel", "-o", plain)[0] == 0
    assert _tensors(ours) == _tensors(plain)


def test_copied_layer_parameters_in_the_caffemodel_never_change_the_net(capsys, small, tmp_path):
    """A fork writes ``ceil_mode`` as PoolingParameter field 13, where BVLC has ``round_mode``
    with the opposite encoding: a caffemodel's copy of layer parameters must be ignored."""
    proto, model = small / "small.prototxt", small / "small.caffemodel"
    reference = tmp_path / "reference.safetensors"
    assert run_cli(capsys, "convert", proto, model, "-o", reference)[0] == 0
    expected = run_cli(capsys, "inspect", proto, model)[1].split("\n\n")[0]
    for field_13 in (0, 1):  # fork ceil_mode false / BVLC CEIL; fork true / BVLC FLOOR
        param = small_param(small)
        pooling = stored(param, "pool1").pooling_param
        pooling.round_mode = field_13
        pooling.kernel_size, pooling.stride, pooling.global_pooling = 7, 1, True
        copied = write_param(tmp_path / f"copied{field_13}.caffemodel", param)
        assert run_cli(capsys, "inspect", proto, copied)[1].split("\n\n")[0] == expected
        output = tmp_path / f"copied{field_13}.safetensors"
        assert run_cli(capsys, "convert", proto, copied, "-o", output)[0] == 0
        assert _tensors(output) == _tensors(reference)


def _tensors(path: Path) -> dict[str, bytes]:
    from safetensors.numpy import load_file

    return {name: array.tobytes() for name, array in load_file(str(path)).items()}


# ----------------------------------------------------------------------------- fork prototxts


def test_fork_ceil_mode_reads_as_bvlc_round_mode(capsys, small, tmp_path):
    """``ceil_mode: false`` (a fork's field) means floor rounding: a 9x9 input pooled with
    kernel 2, stride 3 gives 3x3 rounding down and 4x4 rounding up (BVLC's default)."""
    proto = tmp_path / "fork.prototxt"
    model = small / "small.caffemodel"
    shapes = {}
    for setting in ("ceil_mode: false", "ceil_mode: true", "round_mode: FLOOR", ""):
        proto.write_text(
            SMALL_PROTOTXT.replace(
                "kernel_size: 2 stride: 2", f"kernel_size: 2 stride: 3 {setting}"
            )
        )
        net = converter.read_net(proto)
        shapes[setting] = net.blob_shapes()["pool1"]
    assert shapes["ceil_mode: false"] == shapes["round_mode: FLOOR"] == (1, 4, 3, 3)
    assert shapes["ceil_mode: true"] == shapes[""] == (1, 4, 4, 4)
    # Weights of the BVLC net (pooled to 5x5) do not fit a fork prototxt that pools to 3x3.
    proto.write_text(SMALL_PROTOTXT.replace("stride: 2 }", "stride: 3 ceil_mode: false }"))
    fails(capsys, ["inspect", proto, model], model, "'fc'")


BN1 = 'name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"'
FORK_SETTINGS = [
    # (BVLC text, the fork's text, the fork field, whether both mean the same)
    ("stride: 2 }", "stride: 2 ceil_mode: true }", "ceil_mode", True),
    ("pad: 1 }", "pad: 1 width_group: 1 height_group: 1 }", "width_group", True),
    ("pad: 1 }", "pad: 1 width_group: 2 }", "width_group", False),
    (BN1, BN1 + " batch_norm_param { do_all_reduce: false use_alpha_beta: false }", "", True),
    (BN1, BN1 + " batch_norm_param { use_alpha_beta: true }", "use_alpha_beta", False),
    (BN1, BN1 + " batch_norm_param { do_all_reduce: true }", "do_all_reduce", False),
]


@pytest.mark.parametrize(("bvlc", "fork", "field", "same"), FORK_SETTINGS)
def test_known_fork_fields(capsys, small, tmp_path, bvlc, fork, field, same):
    """Fork fields at values that change nothing convert exactly as the BVLC net; other
    values fail, naming the field, the file and the line."""
    proto = tmp_path / "fork.prototxt"
    proto.write_text(SMALL_PROTOTXT.replace(bvlc, fork, 1))
    if same:
        model = small / "small.caffemodel"
        ours, theirs = tmp_path / "fork.safetensors", tmp_path / "bvlc.safetensors"
        assert run_cli(capsys, "convert", proto, model, "-o", ours)[0] == 0
        assert run_cli(capsys, "convert", small / "small.prototxt", model, "-o", theirs)[0] == 0
        assert _tensors(ours) == _tensors(theirs)
        shapes = converter.read_net(proto).blob_shapes()
        assert shapes == converter.read_net(small / "small.prototxt").blob_shapes()
    else:
        line = SMALL_PROTOTXT[: SMALL_PROTOTXT.index(bvlc)].count("\n") + 1
        fails(capsys, ["inspect", proto], f"{proto}:{line}:", field, "no BVLC equivalent")


def test_fork_ceil_mode_converts(capsys, small, tmp_path):
    """A fork prototxt whose ceil_mode matches the weights converts exactly like BVLC's."""
    proto = tmp_path / "fork.prototxt"
    proto.write_text(
        SMALL_PROTOTXT.replace(
            "kernel_size: 2 stride: 2", "kernel_size: 2 stride: 2 ceil_mode: true"
        )
    )
    model = small / "small.caffemodel"
    ours, theirs = tmp_path / "fork.safetensors", tmp_path / "bvlc.safetensors"
    assert run_cli(capsys, "convert", proto, model, "-o", ours)[0] == 0
    assert run_cli(capsys, "convert", small / "small.prototxt", model, "-o", theirs)[0] == 0
    assert _tensors(ours) == _tensors(theirs)


# ----------------------------------------------------------------------------- outputs


# Every output format, with the net it can represent (detectron2 and mmdet: a ResNet).
# pt2 runs in a child process (test_disk_full_pt2): its failure mode was to abort.
OUTPUTS = {
    "safetensors": ("small", "model.safetensors", []),
    "pt": ("small", "model.pt", []),
    "onnx": ("small", "model.onnx", []),
    "code": ("small", "model_code", ["--format", "code"]),
    "detectron2": ("resnet", "model.pkl", []),
    "mmdet": ("resnet", "model.pth", ["--format", "mmdet"]),
}


def _pair(small, kind):
    if kind == "resnet":
        folder = ROOT / "tests" / "fixtures" / "resnet18_w8"
        return folder / "resnet18_w8.prototxt", folder / "resnet18_w8.caffemodel"
    return small / "small.prototxt", small / "small.caffemodel"


@pytest.mark.parametrize("fmt", list(OUTPUTS))
@pytest.mark.parametrize("problem", ["missing folder", "a directory", "under a file", "no access"])
def test_unwritable_output(capsys, small, tmp_path, monkeypatch, fmt, problem):
    kind, name, extra = OUTPUTS[fmt]
    proto, model = _pair(small, kind)
    if problem == "missing folder":
        target = tmp_path / "no" / "such" / name
    elif problem == "a directory":
        target = tmp_path / name
        target.mkdir()
        if fmt == "code":  # a folder is its output: one holding other files is refused
            (target / "notes.txt").write_text("mine")
    elif problem == "under a file":
        (tmp_path / "file").write_bytes(b"x")
        target = tmp_path / "file" / name
    else:
        folder = tmp_path / "readonly"
        folder.mkdir()
        target = folder / name
        if fmt != "code":
            target.write_bytes(SENTINEL)
        folder.chmod(0o500)
        if RUNNING_AS_ROOT:  # root may write anyway: refuse the way the kernel would
            import converter.io.atomic as atomic

            def refuse(*args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied")

            monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
            monkeypatch.setattr(atomic.tempfile, "mkdtemp", refuse)
            monkeypatch.setattr(atomic.os, "access", lambda *args, **kwargs: False)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    fails(capsys, ["convert", proto, model, "-o", target, *extra, "-q"], target)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if problem == "no access":
        target.parent.chmod(0o700)
        if fmt != "code":
            assert target.read_bytes() == SENTINEL


class FillsUp(io.FileIO):
    """A file on a disk with ``room`` bytes left: a short write, then ENOSPC, as the kernel
    does."""

    room = 0
    written = 0

    def write(self, data):
        room = FillsUp.room - FillsUp.written
        if room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = super().write(memoryview(data).cast("B")[:room])
        FillsUp.written += written
        return written


def fill_disk_after(monkeypatch, room: int) -> None:
    """Every output file is a ``FillsUp`` with ``room`` bytes left."""
    import converter.io.atomic as atomic

    FillsUp.room, FillsUp.written = room, 0
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", buffering=-1, *args, **kwargs):
        if mode != "wb":
            return real_fdopen(fd, mode, buffering, *args, **kwargs)
        raw = FillsUp(fd, "wb")
        return raw if buffering == 0 else io.BufferedWriter(raw)  # as os.fdopen does

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)


@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_disk_full_half_way(capsys, small, tmp_path, monkeypatch, fmt):
    """The disk fills up after 4 KiB, whatever the format: one line naming the output (not a
    temporary name), the old output survives, no temporary file or folder stays."""
    kind, name, extra = OUTPUTS[fmt]
    proto, model = _pair(small, kind)
    out = tmp_path / "out"
    out.mkdir()
    target = out / name
    if fmt != "code":
        target.write_bytes(SENTINEL)
    fill_disk_after(monkeypatch, 4096)
    fails(capsys, ["convert", proto, model, "-o", target, *extra, "-q"], target, "No space left")
    assert FillsUp.written > 0, "the write never started"
    assert [p.name for p in out.iterdir()] == ([] if fmt == "code" else [target.name])
    if fmt != "code":
        assert target.read_bytes() == SENTINEL


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_disk_full_report(capsys, small, tmp_path, monkeypatch, option):
    pytest.importorskip("matplotlib") if option == "--plot" else None
    proto, model = small / "small.prototxt", small / "small.caffemodel"
    report = tmp_path / ("report.json" if option == "--json" else "errors.png")
    fill_disk_after(monkeypatch, 10)
    argv = ["verify", proto, model, "--reference", "numpy", option, report]
    code, out, err = run_cli(capsys, *argv)
    assert_failure(code, "", err, report, "No space left")
    assert list(tmp_path.iterdir()) == []


DISK_FULL_CHILD = """
import sys
import pytest
from test_errors import fill_disk_after
from converter.cli import main
with pytest.MonkeyPatch.context() as patch:
    fill_disk_after(patch, 4096)
    sys.exit(main(sys.argv[1:]))
"""


def test_disk_full_pt2(small, tmp_path):
    """torch.export.save given a failing file aborted the process (SIGABRT, a C++ terminate
    after the traceback): in a child process, so that cannot take the test run down."""
    proto, model = small / "small.prototxt", small / "small.caffemodel"
    target = tmp_path / "model.pt2"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    run = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, "convert", proto, model, "-o", target, "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert_failure(run.returncode, run.stdout, run.stderr, target, "No space left")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_its_own_inputs(capsys, small, tmp_path):
    proto = tmp_path / "net.prototxt"
    model = tmp_path / "net.caffemodel"
    proto.write_bytes((small / "small.prototxt").read_bytes())
    model.write_bytes((small / "small.caffemodel").read_bytes())
    before = model.read_bytes()
    fails(capsys, ["convert", proto, model, "-o", model], model)
    fails(capsys, ["convert", proto, model, "-o", proto], proto)
    assert model.read_bytes() == before
    assert proto.read_text() == SMALL_PROTOTXT


def test_unwritable_verify_report(capsys, small, tmp_path):
    report = tmp_path / "missing" / "report.json"
    proto, model = small / "small.prototxt", small / "small.caffemodel"
    code, out, err = run_cli(
        capsys, "verify", proto, model, "--reference", "numpy", "--json", report
    )
    assert_failure(code, "", err, report)
    assert not report.parent.exists()


# ----------------------------------------------------------------------------- converted files


class _RunsCode:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_converted_files_never_unpickle_objects(capsys, small, tmp_path):
    import torch
    from safetensors.numpy import load_file, save_file

    proto, model = small / "small.prototxt", small / "small.caffemodel"
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "metadata": {}, "payload": _RunsCode(marker)}, evil)
    fails(capsys, ["verify", proto, model, "--converted", evil], evil, "not loaded")
    assert not marker.exists(), "loading a .pt file ran code from it"

    bare = tmp_path / "bare.pt"
    torch.save(torch.zeros(3), bare)
    fails(capsys, ["verify", proto, model, "--converted", bare], bare, "state_dict")

    good = tmp_path / "good.safetensors"
    assert run_cli(capsys, "convert", proto, model, "-o", good)[0] == 0
    tensors = load_file(str(good))
    no_metadata = tmp_path / "no_metadata.safetensors"
    save_file(tensors, str(no_metadata))
    fails(capsys, ["verify", proto, model, "--converted", no_metadata], no_metadata, "metadata")

    from safetensors import safe_open

    with safe_open(str(good), framework="np") as handle:
        metadata = handle.metadata()
    tensors.pop(sorted(tensors)[0])
    missing = tmp_path / "missing_tensor.safetensors"
    save_file(tensors, str(missing), metadata=metadata)
    fails(capsys, ["verify", proto, model, "--converted", missing], missing)

    other = tmp_path / "other_net.safetensors"
    bn = ROOT / "tests/fixtures/bn_variants"
    assert (
        run_cli(
            capsys,
            "convert",
            bn / "bn_variants.prototxt",
            bn / "bn_variants.caffemodel",
            "-o",
            other,
        )[0]
        == 0
    )
    fails(capsys, ["verify", proto, model, "--converted", other], other, proto)

    raw = good.read_bytes()
    for cut in (4, 9, len(raw) // 3, len(raw) - 1):
        damaged = tmp_path / f"cut{cut}.safetensors"
        damaged.write_bytes(raw[:cut])
        fails(capsys, ["verify", proto, model, "--converted", damaged], damaged)


# ----------------------------------------------------------------------------- non-finite weights


def test_nan_and_inf_weights_convert_with_a_warning(capsys, small, tmp_path):
    param = small_param(small)
    stored(param, "conv1").blobs[0].data[5] = float("nan")
    stored(param, "fc").blobs[1].data[0] = float("inf")
    stored(param, "fc").blobs[1].data[1] = float("-inf")
    bad = write_param(tmp_path / "nan.caffemodel", param)
    proto = small / "small.prototxt"
    output = tmp_path / "nan.safetensors"
    code, out, err = run_cli(capsys, "convert", proto, bad, "-o", output)
    assert code == 0 and output.is_file()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffe2torch: warning: "), err
    for words in (str(bad), "'conv1' blob 0", "1 NaN", "'fc' blob 1", "2 Inf"):
        assert words in lines[0], lines[0]
    code, out, err = run_cli(capsys, "verify", proto, bad, "--reference", "numpy")
    assert "caffe2torch: warning:" in err and "NaN" in err
    assert "non-finite" in out or "NaN" in out, out


def test_huge_but_finite_weights_convert_silently(capsys, small, tmp_path):
    """The fast screen squares values: 3e38 overflows it, and the exact count clears it."""
    param = small_param(small)
    stored(param, "conv1").blobs[0].data[5] = 3e38
    stored(param, "fc").blobs[0].data[0] = -3.4e38
    huge = write_param(tmp_path / "huge.caffemodel", param)
    output = tmp_path / "huge.safetensors"
    code, out, err = run_cli(capsys, "convert", small / "small.prototxt", huge, "-o", output)
    assert code == 0 and output.is_file()
    assert err == "", err


# ----------------------------------------------------------------------------- a real terminal


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "{missing}"],
        ["convert", "{proto}", "{cut}", "-o", "{out}"],
        ["verify", "{proto}", "{model}", "--converted", "{cut}"],
    ],
    ids=["missing file", "convert truncated", "verify damaged"],
)
def test_real_process_prints_one_line_and_no_traceback(small, tmp_path, argv):
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes((small / "small.caffemodel").read_bytes()[:777])
    names = {
        "missing": tmp_path / "missing.prototxt",
        "proto": small / "small.prototxt",
        "model": small / "small.caffemodel",
        "cut": cut,
        "out": tmp_path / "out.safetensors",
    }
    command = [sys.executable, "-m", "converter", *(a.format(**names) for a in argv)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffe2torch: error: "), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.caffemodel"]


def test_counts_in_messages_are_english():
    """ "1 layer", "2 layers": never "layer(s)" (the helper every message uses)."""
    from converter.errors import counted, noun
    from converter.layers import need_bottoms

    assert [counted(n, "layer") for n in (0, 1, 2)] == ["0 layers", "1 layer", "2 layers"]
    assert noun(1, "fits", "fit") == "fits" and noun(3, "fits", "fit") == "fit"
    from converter.errors import article
    from converter.provenance import describe

    assert [article(w) for w in ("onnx", "mmdet", "HDF5", "pt2", "safetensors")] == [
        "an", "an", "an", "a", "a",
    ]  # fmt: skip
    one = {"prototxt": 'name: "tiny"', "module_names": {"ip": "ip"}}
    assert describe(one, {"ip.weight": (2, 3)}) == "generic net 'tiny' of 1 layer, 1 tensor"
    for bottoms, count, words in [
        ([], (1, 1 << 30), "expected at least 1 bottom, found 0"),
        ([(1,)], 2, "expected 2 bottoms, found 1"),
        ([(1,)] * 4, (2, 3), "expected 2 to 3 bottoms, found 4"),
        ([(1,)] * 2, 1, "expected 1 bottom, found 2"),
    ]:
        with pytest.raises(converter.ConverterError, match=f"^w: {words}$"):
            need_bottoms(bottoms, count, "w")


SETUP_CHECKS = [
    # (input dims, the layer, its message): each layer's own LayerSetUp/Reshape refusal
    ("dim: 1 dim: 3 dim: 5 dim: 5", 'type: "LRN" lrn_param { local_size: 4 }',
     "(LRN): LRN local_size must be odd, found 4"),
    ("dim: 1 dim: 3", 'type: "LRN"', "(LRN): LRN needs a 4-D input, found (1, 3)"),
    ("dim: 1 dim: 3 dim: 5 dim: 5",
     'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 }',
     "(Pooling): pooling method STOCHASTIC is not supported (MAX, AVE)"),
    ("dim: 1 dim: 3 dim: 5 dim: 5", 'type: "SPP" spp_param { pool: STOCHASTIC pyramid_height: 2 }',
     "(SPP): pooling method STOCHASTIC is not supported (MAX, AVE)"),
    ("dim: 6", 'type: "PReLU"', "(PReLU): PReLU needs at least 2 axes, found (6,)"),
]  # fmt: skip


@pytest.mark.parametrize(("shape", "layer", "words"), SETUP_CHECKS)
def test_setup_checks_are_the_shape_rule(capsys, tmp_path, shape, layer, words):
    """A layer's own refusals are in its shape rule, so every command (inspect too) meets
    them, not only the module and the executor (which held copies of them)."""
    bad = tmp_path / "net.prototxt"
    bad.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        f"input_param {{ shape {{ {shape} }} }} }}\n"
        f'layer {{ name: "it" {layer} bottom: "data" top: "it" }}\n'
    )
    with pytest.raises(converter.ConverterError) as error:
        converter.read_net(bad).shapes()
    assert str(error.value) == f"{bad}: layer 'it' {words}"
    code, out, _ = run_cli(capsys, "inspect", bad)
    assert code == 0 and out.splitlines()[-1].endswith(f"layer 'it' {words})"), out
