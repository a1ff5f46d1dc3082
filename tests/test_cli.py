"""The command line guides: help with examples, no flag silently ignored, JSON where asked,
progress only on a terminal, inspect totals that say what they cover."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shlex
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import converter
from conftest import KAIMING, ROOT, TINY, load_case, write_net
from converter import progress
from converter.cli import CONVENTION, IMPLY_VERIFY, build_parser, main


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *words: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffe2torch: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("command", ["convert", "verify", "inspect"])
def test_every_command_help_describes_it_with_examples(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]  # after the usage block
    assert len(description.split()) >= 10 and not description.startswith("positional")
    examples = text.split("examples:\n")[1].strip().splitlines()
    assert 2 <= len(examples) <= 3
    assert all(line.strip().startswith(f"caffe2torch {command} ") for line in examples)


def test_verify_options_given_to_convert_imply_verify(capsys, tmp_path):
    """Before: silently ignored, exit 0 with no report. Now they verify the written file."""
    case = load_case("resnet50_w8_calibrated")
    out_file = tmp_path / "model.safetensors"
    code, out, _ = run(
        capsys, "convert", case.prototxt, case.caffemodel, "-o", out_file,
        "--reference", case.folder / "blobs.npz", "--input", case.folder / "input.npy",
        "--tol", case.tolerance,
    )  # fmt: skip
    assert code == 0
    assert out.startswith(f"wrote {out_file}\nReference: saved blobs blobs.npz")
    assert out.strip().splitlines()[-1].startswith("PASS: 9 blobs")
    # every verification option counts, each on its own
    parser = build_parser()
    for option in IMPLY_VERIFY + CONVENTION:
        args = parser.parse_args(["convert", "p", "m", f"--{option}", "1"])
        assert getattr(args, option) is not None
    assert set(IMPLY_VERIFY) == {"reference", "input", "tol", "json", "plot"}
    assert set(CONVENTION) == {"mean", "scale"}
    # without any of them, no verification
    code, out, _ = run(capsys, "convert", case.prototxt, case.caffemodel, "-o", out_file)
    assert code == 0 and out == f"wrote {out_file}\n"


def test_json_dash_writes_the_report_to_stdout(capsys, tmp_path):
    case = load_case("pool_ceil")
    args = ["verify", case.prototxt, case.caffemodel, "--reference", "numpy", "--json", "-"]
    code, out, err = run(capsys, *args, "--input", case.folder / "input.npy")
    assert code == 0
    report = json.loads(out)  # stdout is the JSON alone
    assert report["passed"] and report["compared"] == 15
    assert err.startswith("Reference: numpy float64 (as asked)")  # the text went to stderr
    assert not (tmp_path / "-").exists()
    code, out, err = run(
        capsys, "convert", case.prototxt, case.caffemodel, "-o", tmp_path / "p.safetensors",
        "--json", "-", "--input", case.folder / "input.npy",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["passed"]
    # pool_ceil has 15 outputs: convert names them in one line, on the text stream too
    assert err.startswith("note: the net has 15 outputs")
    assert err.splitlines()[1] == f"wrote {tmp_path / 'p.safetensors'}"


def test_plot_without_matplotlib_fails_before_running(capsys, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    case = load_case("resnet18_w8")
    for argv in (
        ["verify", case.prototxt, case.caffemodel, "--plot", tmp_path / "e.png"],
        ["convert", case.prototxt, case.caffemodel, "-o", tmp_path / "m.pt", "--plot", "e.png"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == ""
        one_line_error(err, "--plot needs matplotlib", "pip install matplotlib", "-e '.[plot]'")
    assert list(tmp_path.iterdir()) == []  # nothing was converted or plotted


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    for stream, enabled, drawn in (
        (FakeTerminal(), True, True),
        (FakeTerminal(), False, False),  # --quiet
        (io.StringIO(), True, False),  # a pipe or a log file
    ):
        monkeypatch.setattr(sys, "stderr", stream)
        bars = progress.PhaseBars(enabled)
        bars("write", 3 << 20, 10 << 20)
        bars("write", 10 << 20, 10 << 20)
        bars.close()
        assert ("write" in stream.getvalue()) is drawn, stream.getvalue()


def test_convert_draws_nothing_on_a_pipe(capsys, tmp_path):
    case = load_case("resnet18_w8")
    code, out, err = run(capsys, "convert", case.prototxt, case.caffemodel, "-o", tmp_path / "m.pt")
    assert code == 0 and err == ""
    code, out, err = run(
        capsys, "convert", "-q", case.prototxt, case.caffemodel, "-o", tmp_path / "n.pt"
    )
    assert code == 0 and err == ""


# ----------------------------------------------------------------------------- inspect


def test_inspect_says_what_the_totals_cover_and_the_module(capsys, tmp_path):
    code, out, _ = run(capsys, "inspect", KAIMING / "ResNet-50-deploy.prototxt")
    *_, totals, module = out.strip().splitlines()
    assert totals == (
        "ResNet-50: 229 layers, 25,610,269 parameters (97.7 MiB as float32), as the prototxt "
        "implies (no caffemodel given)"
    )
    assert module == "Converts to: CaffeResNet (Kaiming's form, bottleneck blocks 3-4-6-3)"
    case = load_case("pool_ceil")
    code, out, _ = run(capsys, "inspect", case.prototxt, "--json")
    summary = json.loads(out)
    assert summary["totals"]["parameters"] == 0 and summary["totals"]["unknown"] == []
    assert summary["module"]["module"] == "generic"
    assert summary["module"]["why"].startswith("blob 'data' from layer 'data' (Input) should")
    # a type without a shape rule: unknown, never a false "0 parameters"
    odd = tmp_path / "odd.prototxt"
    odd.write_text(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "f" '
        "inner_product_param { num_output: 2 } }\n"
        'layer { name: "m" type: "MysteryOp" bottom: "f" top: "y" }\n'
        'layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }\n'
    )
    code, out, _ = run(capsys, "inspect", odd)
    *_, totals, module = out.strip().splitlines()
    # ReLU has a shape rule: what it lacks is its input's shape
    assert totals == (
        "net: 4 layers, parameters: unknown without the caffemodel (no shape rule for 'm' "
        "(MysteryOp); shapes are unknown from there on, so also for 'relu'); 8 in the other "
        "layers"
    )
    assert module.startswith(
        "Converts to: nothing yet (1 layer without a module (MysteryOp): 'm' (MysteryOp). "
        "converter.register_layer"
    )
    code, out, _ = run(capsys, "inspect", odd, "--json")
    summary = json.loads(out)
    assert summary["totals"]["parameters"] is None and summary["totals"]["counted"] == 8
    assert summary["totals"]["unknown"] == ["m", "relu"]
    assert summary["totals"]["shapes_stop"] == {
        "layer": "m",
        "type": "MysteryOp",
        "why": "no shape rule for 'm' (MysteryOp)",
    }


def test_inspect_of_a_net_caffe_refuses_says_so(capsys, tmp_path):
    """Every type known, but one layer's parameters are refused by Caffe: the table stops
    there, the totals say where and why the rest is unknown, and it converts to nothing."""
    bad = tmp_path / "bad.prototxt"
    bad.write_text(
        'layer { name: "in" type: "Input" top: "x" '
        "input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n"
        'layer { name: "pool" type: "Pooling" bottom: "x" top: "p" '
        "pooling_param { pool: MAX kernel_size: 2 pad_h: 1 } }\n"
        'layer { name: "relu" type: "ReLU" bottom: "p" top: "p" }\n'
    )
    code, out, _ = run(capsys, "inspect", bad)
    *_, totals, module = out.strip().splitlines()
    assert totals == (
        "net: 3 layers, parameters: unknown without the caffemodel (shape inference stops at "
        "'pool' (Pooling), refused; shapes are unknown from there on, so also for 'relu'); 0 "
        "in the other layers"
    )
    assert module == (
        "Converts to: nothing (the net is refused: layer 'pool' (Pooling): pooling_param gives "
        "pad_h without pad_w; Caffe's Pooling needs both (or pad alone))"
    )
    summary = json.loads(run(capsys, "inspect", bad, "--json")[1])
    assert summary["module"]["module"] is None
    assert summary["totals"]["shapes_stop"]["layer"] == "pool"


# ----------------------------------------------------------------------------- Python API


def test_resnet50_caffe_says_what_a_wrong_file_is(tmp_path):
    case = load_case("resnet50_w8_calibrated")
    with pytest.raises(converter.ConverterError, match="is a Caffe file, not a converted one") as e:
        converter.resnet50_caffe(weights=case.caffemodel)
    assert "converter.load('deploy.prototxt', 'model.caffemodel')" in str(e.value)
    assert "header too large" not in str(e.value)
    pool = load_case("pool_ceil")
    generic = converter.convert(pool.prototxt, pool.caffemodel, tmp_path / "pool.safetensors")
    with pytest.raises(converter.ConverterError) as e:
        converter.resnet50_caffe(weights=generic)
    assert str(e.value) == (
        f"{generic}: holds a generic net converted from pool_ceil.prototxt, not a ResNet of "
        f"Kaiming's form; load it with converter.load({str(generic)!r})"
    )


def test_readme_first_command_checks_against_real_caffe(capsys, tmp_path, monkeypatch):
    """The quickstart's PASS must mean "matches Caffe": its reference is the saved blobs."""
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    first = block.splitlines()[0]
    assert text.index("pip install torch --index-url") < text.index(first)  # the hint first
    install, command = first.split(" && ")
    assert install == "pip install -e ."
    argv = shlex.split(command)
    assert argv[:2] == ["caffe2torch", "convert"]
    argv[argv.index("-o") + 1] = str(tmp_path / argv[argv.index("-o") + 1])
    assert argv[argv.index("--reference") + 1].endswith("/blobs.npz")
    monkeypatch.chdir(ROOT)
    code, out, _ = run(capsys, *argv[1:])
    assert code == 0, out
    assert out.splitlines()[1].startswith("Reference: saved blobs blobs.npz")
    assert out.strip().splitlines()[-1].startswith("PASS")


# ----------------------------------------------------------------------------- checked first

R18 = load_case("resnet18_w8")
# a bad argument -> words its one-line error must hold
BAD_VERIFY_OPTIONS = {
    "missing input": (["--input", "nonexist.png"], "nonexist.png: no such input file"),
    "missing reference": (["--reference", "/nonexist.npz"], "/nonexist.npz: no such file"),
    "unknown reference": (["--reference", "bogus"], "unknown reference 'bogus'"),
    "a caffemodel as reference": (
        ["--reference", str(R18.caffemodel)],
        "is a binary caffemodel",
    ),
    "negative tolerance": (["--tol", "-1"], "tolerance must be"),
    "mean for an array": (
        ["--input", str(R18.folder / "input.npy"), "--mean", "104,117,123"],
        "--mean and --scale apply to an image input",
    ),
    "mean of the wrong length": (
        ["--input", str(ROOT / "examples" / "chelsea.png"), "--mean", "1,2"],
        "expected 3 comma-separated values",
    ),
    "unwritable json": (["--json", "/nonexist/report.json"], "/nonexist does not exist"),
    "plot to stdout": (["--plot", "-"], "'-' (stdout) is for --json"),
    "plot format": (["--plot", "errors.bogus"], "cannot plot to a '.bogus' file"),
    # the net is read before anything is written: blobs saved from another net fail there
    # (before: written, then 'pool5: pooling gives an empty output', exit 2)
    "blobs of another net": (
        ["--reference", str(load_case("bvlc_layers").folder / "blobs.npz")],
        "its input blob 'data' is 2x6x10x12",
    ),
}
if importlib.util.find_spec("caffe") is None:  # a reference asked for by name must be there
    BAD_VERIFY_OPTIONS["pycaffe missing"] = (["--reference", "caffe"], "pycaffe is not available")
FORMATS = {
    "safetensors": ["-o", "m.safetensors"],
    "pt": ["-o", "m.pt"],
    "code": ["-o", "m_code", "--format", "code"],
    "onnx": ["-o", "m.onnx"],
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("bad", sorted(BAD_VERIFY_OPTIONS))
def test_convert_checks_every_verify_option_before_writing(capsys, tmp_path, monkeypatch, fmt, bad):
    """convert wrote its output (a code folder whose card said "Not verified"), then
    stopped on the verification's options; now nothing is written."""
    monkeypatch.chdir(tmp_path)
    extra, words = BAD_VERIFY_OPTIONS[bad]
    code, out, err = run(capsys, "convert", R18.prototxt, R18.caffemodel, *FORMATS[fmt], *extra)
    assert code == 2 and out == ""
    one_line_error(err, words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["detectron2", "mmdet"])
def test_checkpoint_input_is_checked_before_writing(capsys, tmp_path, fmt):
    """A checkpoint's --input (what the stem-pool difference is measured on, after the file
    was written) is read before writing; verification options are refused."""
    out_file = tmp_path / ("m.pkl" if fmt == "detectron2" else "m.pth")
    argv = ["convert", R18.prototxt, R18.caffemodel, "-o", out_file, "--format", fmt]
    code, _, err = run(capsys, *argv, "--input", tmp_path / "nonexist.png")
    assert code == 2
    one_line_error(err, "nonexist.png: no such input file")
    code, _, err = run(capsys, *argv, "--tol", "1e-3")
    assert code == 2
    one_line_error(err, "--verify runs what caffe2torch can load (asked for by --tol)")
    assert list(tmp_path.iterdir()) == []


def test_verify_checks_its_report_files_before_running(capsys, tmp_path):
    """--json to an unwritable place failed only after the full verify printed PASS."""
    for extra, words in (
        (["--json", tmp_path / "no" / "r.json"], "does not exist"),
        (["--plot", "-"], "'-' (stdout) is for --json"),
        (["--plot", tmp_path / "e.bogus"], "cannot plot"),
    ):
        code, out, err = run(capsys, "verify", R18.prototxt, R18.caffemodel, *extra)
        assert code == 2 and out == "", out
        one_line_error(err, words)


def test_matplotlib_that_fails_to_import_fails_before_running(capsys, tmp_path, monkeypatch):
    """Installed but broken (it raised at import): one line before any work, not a traceback
    after the verification."""
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)

    class Broken:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "matplotlib" and name != "matplotlib":
                raise RuntimeError("built for another NumPy")
            return None

    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    code, out, err = run(
        capsys, "verify", R18.prototxt, R18.caffemodel, "--plot", tmp_path / "e.png"
    )
    assert code == 2 and out == ""
    one_line_error(err, "matplotlib fails to import", "built for another NumPy")


@pytest.mark.parametrize("option", ["-o", "--json", "--plot", "--input", "--mean", "--reference"])
def test_an_empty_name_is_refused(capsys, tmp_path, monkeypatch, option):
    """`-o ''` silently wrote to the default name."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["convert", str(R18.prototxt), str(R18.caffemodel), option, ""])
    assert done.value.code == 2
    one_line_error(capsys.readouterr().err, option, "empty")
    assert list(tmp_path.iterdir()) == []


def test_a_shape_starting_with_a_minus_is_a_bad_shape(capsys):
    """`--input-shape -1,3,224,224` gave argparse's "expected one argument"."""
    code, _, err = run(capsys, "inspect", R18.prototxt, "--input-shape", "-1,3,224,224")
    assert code == 2
    one_line_error(err, "--input-shape -1,3,224,224", "positive integers")


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        main(["convert", str(R18.prototxt)])
    assert done.value.code == 2
    one_line_error(capsys.readouterr().err, "caffemodel", "caffe2torch convert --help")


# ----------------------------------------------------------------------------- the rule, stated


@pytest.mark.parametrize("fmt", ["safetensors", "code", "detectron2"])
def test_which_options_imply_verify_in_every_format(capsys, tmp_path, fmt):
    """The rule --help and the README state: --mean never implies --verify (the code format
    used to verify for every option but --mean, the others for --mean too, and README said
    "any option"); --input does, except for detectron2/mmdet."""
    name = {"safetensors": "m.safetensors", "code": "m_code", "detectron2": "m.pkl"}[fmt]
    base = ["convert", R18.prototxt, R18.caffemodel, "-o", tmp_path / name, "--format", fmt]
    code, out, _ = run(capsys, *base, "--mean", "104,117,123", "-q")
    assert code == 0 and "PASS" not in out, out
    code, out, _ = run(capsys, *base, "--input", R18.folder / "input.npy", "-q")
    verified = "Reference:" in out
    assert code == 0 and verified == (fmt != "detectron2"), out


def test_help_and_readme_state_the_same_rule(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    listed = ", ".join(f"--{o}" for o in IMPLY_VERIFY[:-1]) + f" and --{IMPLY_VERIFY[-1]}"
    assert f"{listed} imply --verify" in text
    assert listed.replace("--", "`--").replace(",", "`,").replace(" and", "` and") in readme
    assert "`--mean` and `--scale` never do" in readme and "--mean and --scale never do" in text


def test_default_output_is_named_after_the_model(capsys, tmp_path, monkeypatch):
    """x.caffemodel.h5 was converted to x.caffemodel.safetensors: every weight suffix goes."""
    from converter.export import default_output

    assert [str(default_output(n, None)) for n in ("a.caffemodel", "b.caffemodel.h5")] == [
        "a.safetensors",
        "b.safetensors",
    ]
    assert str(default_output("dir/c.v2.caffemodel.gz", "onnx")) == "c.v2.onnx"
    assert str(default_output("d.bin", "code")) == "d"  # another suffix is replaced
    folder = load_case("weight_formats").folder
    monkeypatch.chdir(tmp_path)
    weights = folder / "weight_formats.caffemodel.h5"
    code, _, _ = run(capsys, "convert", folder / "weight_formats.prototxt", weights)
    assert code == 0 and [p.name for p in tmp_path.iterdir()] == ["weight_formats.safetensors"]


@pytest.mark.parametrize(("fmt", "words"), [("onnx", "for an onnx file"), ("mmdet", "an mmdet")])
def test_messages_say_a_or_an_as_the_format_is_read(capsys, tmp_path, fmt, words):
    """ "a '.bin' name for a onnx file"."""
    code, _, err = run(
        capsys, "convert", R18.prototxt, R18.caffemodel, "-o", tmp_path / "x.bin", "--format", fmt
    )
    assert code == 2
    one_line_error(err, words)
    if fmt == "mmdet":  # and --verify with a checkpoint
        code, _, err = run(
            capsys, "convert", R18.prototxt, R18.caffemodel, "-o", tmp_path / "x.pth",
            "--format", fmt, "--verify",
        )  # fmt: skip
        assert code == 2 and "; an mmdet checkpoint runs in mmdet" in one_line_error(err)


def _files(folder) -> dict[str, bytes]:
    """Every file under ``folder`` (links as their targets' names) and its bytes."""
    return {
        str(path.relative_to(folder)): os.readlink(path).encode()
        if path.is_symlink()
        else path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() or path.is_symlink()
    }


# (extra setup, arguments after the command and the pair, words of the one line)
REPORT_COLLISIONS = {
    "json_is_the_safetensors_output": (
        None,
        ["convert", "-o", "r.safetensors", "--json", "r.safetensors"],
        ["--json r.safetensors", "also the output (-o r.safetensors)"],
    ),
    "json_is_the_onnx_output": (
        None,
        ["convert", "-o", "r2.onnx", "--json", "r2.onnx"],
        ["--json r2.onnx", "also the output (-o r2.onnx)"],
    ),
    "plot_is_the_output": (
        None,
        ["convert", "-o", "r.pt", "--plot", "./r.pt"],
        ["--plot ./r.pt", "also the output (-o r.pt)"],
    ),
    "json_is_the_caffemodel": (
        None,
        ["verify", "--json", "tiny.caffemodel"],
        ["--json tiny.caffemodel", "also the caffemodel, an input"],
    ),
    "json_is_the_prototxt": (
        None,
        ["verify", "--json", "tiny.prototxt"],
        ["--json tiny.prototxt", "also the prototxt, an input"],
    ),
    "json_is_a_hard_link_to_the_caffemodel": (
        lambda: os.link("tiny.caffemodel", "hard.caffemodel"),
        ["verify", "--json", "hard.caffemodel"],
        ["--json hard.caffemodel", "also the caffemodel"],
    ),
    "json_is_a_symlink_to_the_prototxt": (
        lambda: os.symlink("tiny.prototxt", "link.prototxt"),
        ["verify", "--json", "link.prototxt"],
        ["--json link.prototxt", "also the prototxt"],
    ),
    "json_is_the_converted_file": (
        lambda: main(["convert", "tiny.prototxt", "tiny.caffemodel", "-o", "c.onnx", "-q"]),
        ["verify", "--converted", "c.onnx", "--json", "c.onnx"],
        ["--json c.onnx", "also the --converted output"],
    ),
    "plot_is_the_input_image": (
        lambda: cv2.imwrite("i.png", np.full((4, 4, 3), 7, np.uint8)),
        ["verify", "--input", "i.png", "--plot", "i.png"],
        ["--plot i.png", "also the --input file (i.png)"],
    ),
    "plot_is_the_json_report": (
        None,
        ["verify", "--json", "x.json", "--plot", "sub/../x.json"],
        ["--plot sub/../x.json", "also the --json report"],
    ),
    "json_is_inside_the_code_folder": (
        lambda: main(
            ["convert", "tiny.prototxt", "tiny.caffemodel", "-o", "cf", "-q"] + ["--format", "code"]
        ),
        ["convert", "-o", "cf", "--format", "code", "--json", "cf/config.json"],
        ["--json cf/config.json", "inside the output folder (-o cf)"],
    ),
    "json_is_inside_a_new_code_folder": (
        None,
        ["convert", "-o", "cf", "--format", "code", "--json", "cf/report.json"],
        ["--json cf/report.json", "inside the output folder (-o cf)"],
    ),
}


@pytest.mark.parametrize("case", sorted(REPORT_COLLISIONS))
def test_a_report_path_that_is_another_file_of_the_command_is_refused(
    capsys, tmp_path, monkeypatch, case
):
    """--json/--plot naming the output, an input or the other report overwrote it, exit 0
    (the caffemodel replaced by the JSON report): refused before any work, nothing changed."""
    setup, args, words = REPORT_COLLISIONS[case]
    monkeypatch.chdir(tmp_path)
    write_net(tmp_path, "tiny", TINY)
    if setup is not None:
        setup()
    before = _files(tmp_path)
    capsys.readouterr()
    command, *rest = args
    code, out, err = run(capsys, command, "tiny.prototxt", "tiny.caffemodel", "-q", *rest)
    assert code == 2 and out == "", out
    one_line_error(err, *words)
    assert _files(tmp_path) == before


def test_report_paths_beside_the_files_are_written(capsys, tmp_path, monkeypatch):
    """The check compares files, not names' beginnings: r.safetensors.json beside
    r.safetensors, a report beside (not inside) the code folder cf named cf.json."""
    monkeypatch.chdir(tmp_path)
    write_net(tmp_path, "tiny", TINY)
    code, _, _ = run(capsys, "convert", "tiny.prototxt", "tiny.caffemodel", "-q", "-o", "r.pt")
    assert code == 0
    for args in (
        ["convert", "-o", "r.safetensors", "--json", "r.safetensors.json"],
        ["convert", "-o", "cf", "--format", "code", "--json", "cf.json"],
        ["verify", "--converted", "r.pt", "--json", "tiny.json"],
    ):
        command, *rest = args
        code, _, err = run(capsys, command, "tiny.prototxt", "tiny.caffemodel", "-q", *rest)
        assert code == 0, err
        assert json.loads(Path(rest[-1]).read_text())["passed"] is True
