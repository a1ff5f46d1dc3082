"""Arguments refused in one line, each by what it was given to: an unknown option by its
command, a code folder named as another format's file, a prototxt saved as UTF-16/32."""

from __future__ import annotations

import pytest

from conftest import load_case
from converter.cli import main

WF = load_case("weight_formats")
WEIGHTS = WF.folder / "weight_formats_fp16.caffemodel"


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("caffe2torch: error: "), err
    return err


@pytest.mark.parametrize("command", ["convert", "verify", "inspect"])
def test_an_unknown_option_is_reported_by_its_command(capsys, command):
    """Before: the top-level usage (caffe2torch [-h] [--version] COMMAND ...)."""
    files = [WF.prototxt] if command == "inspect" else [WF.prototxt, WEIGHTS]
    with pytest.raises(SystemExit) as done:
        main([command, *map(str, files), "--bogus"])
    assert done.value.code == 2
    err = one_line(capsys)
    assert f"unrecognized arguments: --bogus (see: caffe2torch {command} --help)" in err


@pytest.mark.parametrize("name", ["y.onnx", "x.safetensors", "m.pth"])
def test_a_code_folder_is_not_named_as_another_formats_file(capsys, tmp_path, name):
    """Before: a folder named y.onnx was written (while -o x.onnx --format safetensors was
    refused)."""
    out = tmp_path / name
    argv = ["convert", WF.prototxt, WEIGHTS, "-o", out, "--format", "code"]
    assert main([str(a) for a in argv]) == 2
    err = one_line(capsys)
    assert f"{out}: --format code writes a folder, and '{out.suffix}' names" in err
    assert f"-o {out.with_suffix('')}" in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("encoding", "name"),
    [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16"),
     ("utf-32", "UTF-32"), ("utf-32-le", "UTF-32")],
)  # fmt: skip
def test_a_prototxt_in_utf16_or_utf32_is_named_as_such(capsys, tmp_path, encoding, name):
    """Before: 'is binary data, not a prototxt (text)'. With or without a byte order mark."""
    path = tmp_path / "deploy.prototxt"
    path.write_bytes(WF.prototxt.read_text().encode(encoding))
    assert main(["inspect", str(path)]) == 2
    assert f"{path}: is {name} text; save it as UTF-8" in one_line(capsys)
