"""convert --verify: the output stands only once the verification has judged it. A
verification ending in bad input (exit 2) after the conversion leaves no output and an
existing one as it was (README: a failed run never clobbers an existing file)."""

from __future__ import annotations

import pytest

from conftest import load_case
from converter import ConverterError
from converter.cli import main
from converter.io.atomic import staged

BVLC = load_case("bvlc_layers")  # layers OpenCV is known to run differently: refused late
R18 = load_case("resnet18_w8")


@pytest.mark.parametrize(("name", "fmt"), [("b.safetensors", []), ("b_code", ["--format", "code"])])
def test_bad_input_found_by_the_verification_keeps_the_old_output(capsys, tmp_path, name, fmt):
    """Before: 'wrote b.safetensors', then OpenCV's refusal (exit 2), the old file replaced."""
    pytest.importorskip("cv2")  # without it, the refusal comes before the conversion
    old = tmp_path / name
    if fmt:
        old.mkdir()
        (old / "model.py").write_text("old")
    else:
        old.write_text("old")
    argv = ["convert", BVLC.prototxt, BVLC.caffemodel, "-o", old, *fmt, "--reference", "opencv"]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2 and "OpenCV is known to differ" in err and "wrote" not in out
    assert (old / "model.py" if fmt else old).read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind


def test_a_verdict_keeps_the_output_and_says_so_before_the_report(capsys, tmp_path):
    out_file = tmp_path / "m.safetensors"
    argv = ["convert", R18.prototxt, R18.caffemodel, "-o", out_file, "--reference", "numpy"]
    assert main([str(a) for a in argv] + ["-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {out_file}\nReference: numpy") and "PASS" in out
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.parametrize("folder", [False, True])
def test_staged_names_the_output_in_errors_and_removes_the_temporary(tmp_path, folder):
    path = tmp_path / ("x" if folder else "x.onnx")
    with pytest.raises(ConverterError, match=f"^{path}: bad$"):
        with staged(path, folder=folder) as stage:
            assert stage.parent == tmp_path and stage.is_dir() == folder
            assert folder or stage.suffix == ".onnx"  # writers tell the format by it
            raise ConverterError(f"{stage}: bad")
    assert list(tmp_path.iterdir()) == []
    with staged(path, folder=folder) as stage:
        (stage / "model.py").write_text("new") if folder else stage.write_text("new")
    assert (path / "model.py" if folder else path).read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
