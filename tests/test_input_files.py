"""--input is read by its content, never by its name, as every other file argument is: a
.npy under any name is an array, an image under any name an image, and anything else (an
LFS pointer, a web page, a text, a caffemodel, saved blobs) is named with what to do."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import ROOT, load_case
from converter import ConverterError
from converter.cli import main
from converter.preprocess import is_image, load_input

WF = load_case("weight_formats")
BROKEN = WF.folder / "broken"
WEIGHTS = WF.folder / "weight_formats_fp16.caffemodel"
NET = (1, 3, 200, 200)


def test_an_array_named_like_an_image_is_read_as_an_array(tmp_path):
    """Before: 'in.png: OpenCV cannot decode this file as an image'."""
    x = np.random.default_rng(0).normal(size=NET).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    shutil.copy(tmp_path / "x.npy", tmp_path / "in.png")
    assert not is_image(tmp_path / "in.png")
    np.testing.assert_array_equal(load_input(tmp_path / "in.png", NET), x)


def test_an_image_named_like_an_array_is_read_as_an_image(tmp_path):
    chelsea = ROOT / "examples" / "chelsea.png"
    shutil.copy(chelsea, tmp_path / "cat.npy")
    assert is_image(tmp_path / "cat.npy")
    got = load_input(tmp_path / "cat.npy", NET, mean="104,117,123")
    np.testing.assert_array_equal(got, load_input(chelsea, NET, mean="104,117,123"))


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("lfs_pointer.caffemodel", "is a Git LFS pointer, not the file for --input"),
        ("html_page.caffemodel", "is an HTML web page, not a file for --input"),
    ],
)
def test_a_download_gone_wrong_is_named(capsys, name, words):
    """Before: 'OpenCV cannot decode this file as an image', for a file the caffemodel and
    --mean arguments name."""
    code = main(["verify", str(WF.prototxt), str(WEIGHTS), "--input", str(BROKEN / name)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_text("404: Not Found"), "is a 14-byte text ('404: Not Found')"),
        (lambda p: shutil.copy(WEIGHTS, p), "is a binary caffemodel"),
        (lambda p: shutil.copy(WF.folder / "blobs.npz", p), "go to `verify --reference`"),
    ],
)
def test_other_files_are_named_whatever_their_name(tmp_path, make, words):
    path = tmp_path / "photo.jpg"
    make(path)
    with pytest.raises(ConverterError, match="not a file for --input") as error:
        load_input(path, NET)
    assert words in str(error.value)


def test_saved_blobs_of_another_net_are_named_as_such(capsys):
    """Before: the saved 2x6x10x12 'data' became the input, and the net was blamed: 'pool5:
    pooling gives an empty output for input 1x1'."""
    blobs = load_case("bvlc_layers").folder / "blobs.npz"
    code = main(["verify", str(WF.prototxt), str(WEIGHTS), "--reference", str(blobs)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "its input blob 'data' is 2x6x10x12" in err and "takes Nx3x200x200" in err
    assert "saved from another net" in err
