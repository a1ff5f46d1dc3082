"""Files that are not what they claim (issue 12, item 7): each kind, in the role it was given,
ends in exit 2 and one line that names the file, says what it really is and what to do.

Every file is crafted small in ``tmp_path`` (or is one of the broken files of the shared
``weight_formats`` case, copied to ``tests/fixtures/weight_formats/broken``).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, KAIMING
from converter.cli import main

RESNET = FIXTURES / "resnet18_w8"
PROTOTXT = RESNET / "resnet18_w8.prototxt"
CAFFEMODEL = RESNET / "resnet18_w8.caffemodel"
BROKEN = FIXTURES / "weight_formats" / "broken"


def one_line_error(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, f"exit {code}: {err!r}"
    assert len(lines) == 1 and lines[0].startswith("caffe2torch: error: "), err
    assert "Traceback" not in err + out
    return lines[0].removeprefix("caffe2torch: error: ")


def as_weights(capsys, path: Path) -> str:
    """The message for ``path`` given as the weights, the same from every command."""
    message = one_line_error(capsys, "inspect", PROTOTXT, path)
    out = path.with_name(f"{path.stem}_converted.safetensors")
    assert one_line_error(capsys, "convert", PROTOTXT, path, "-o", out) == message
    assert one_line_error(capsys, "verify", PROTOTXT, path) == message
    assert not out.exists()
    return message


def as_prototxt(capsys, path: Path) -> str:
    message = one_line_error(capsys, "inspect", path)
    assert one_line_error(capsys, "verify", path, CAFFEMODEL) == message
    return message


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def onnx_bytes() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph, producer_name="pytorch").SerializeToString()


def torch_bytes() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(2)}, buffer)
    return buffer.getvalue()


def npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((1, 3, 4, 4), np.float32))
    return buffer.getvalue()


def npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, prob=np.zeros((1, 5), np.float32))
    return buffer.getvalue()


def safetensors_bytes() -> bytes:
    from safetensors.numpy import save

    return save({"fc.weight": np.zeros((2, 2), np.float32)})


def hdf5_bytes(tmp_path: Path) -> bytes:
    import h5py

    path = tmp_path / "keras.h5"
    with h5py.File(path, "w") as handle:
        handle.create_group("model_weights").create_dataset("kernel", data=np.zeros(3))
    return path.read_bytes()


S3_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)

# kind -> (the file's bytes, words its message must hold); both roles
BOTH_ROLES = {
    "html page": (
        lambda _: (BROKEN / "html_page.caffemodel").read_bytes(),
        ["HTML web page", "raw"],
    ),
    "xml error": (lambda _: S3_ERROR, ["XML document", "AccessDenied", "download it again"]),
    "git lfs pointer": (
        lambda _: (BROKEN / "lfs_pointer.caffemodel").read_bytes(),
        ["Git LFS pointer", "sha256 c3dd7c88bb75", "722,429 bytes", "git lfs pull"],
    ),
    "short text": (lambda _: b"404: Not Found", ["14-byte text", "'404: Not Found'", "again"]),
    "zip archive": (
        lambda _: zip_bytes({"model/resnet.caffemodel": b"x", "model/deploy.prototxt": b"y"}),
        ["zip archive holding 'model/resnet.caffemodel'", "unzip", "unpack it first"],
    ),
    "tar archive": (
        lambda _: tar_bytes({"resnet.caffemodel": b"x" * 10}),
        ["tar archive holding 'resnet.caffemodel'", "tar -xf"],
    ),
    "7z archive": (
        lambda _: b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 40,
        ["7-Zip archive", "7z x"],
    ),
    "rar archive": (lambda _: b"Rar!\x1a\x07\x01\x00" + b"\x00" * 40, ["RAR archive", "unrar x"]),
    "zstd data": (lambda _: b"\x28\xb5\x2f\xfd" + b"\x00" * 40, ["zstd-compressed", "zstd -dc"]),
    "onnx model": (lambda _: onnx_bytes(), ["ONNX model", "Caffe models"]),
    "pytorch zip": (lambda _: torch_bytes(), ["PyTorch file (torch.save)", "Caffe models"]),
    "python pickle": (
        lambda _: pickle.dumps({"w": [1.0]}, protocol=2),
        ["Python pickle", "older PyTorch"],
    ),
    "numpy npy": (lambda _: npy_bytes(), ["NumPy .npy array", "verify --input"]),
    "numpy npz": (lambda _: npz_bytes(), ["NumPy .npz archive", "verify --reference"]),
    "safetensors": (
        lambda _: safetensors_bytes(),
        ["safetensors file", "Caffe models", "converter.load", "--converted"],
    ),
    "mean file": (
        lambda _: (KAIMING / "ResNet_mean.binaryproto").read_bytes(),
        ["single blob of shape (1, 3, 224, 224)", "binaryproto", "verify --mean"],
    ),
}


@pytest.mark.parametrize("role", ["caffemodel", "prototxt"])
@pytest.mark.parametrize("kind", sorted(BOTH_ROLES))
def test_impostor(capsys, tmp_path, kind, role):
    """Given as the weights (through inspect, convert and verify) or as the prototxt."""
    make, words = BOTH_ROLES[kind]
    path = write(tmp_path / f"model.{role}", make(tmp_path))
    message = as_weights(capsys, path) if role == "caffemodel" else as_prototxt(capsys, path)
    assert message.startswith(f"{path}: ")
    for word in [*words, role]:
        assert word in message, (word, message)


def test_each_kind_has_its_own_message(capsys, tmp_path):
    """What the message says a file is differs from kind to kind."""
    said = {}
    for kind, (make, _) in BOTH_ROLES.items():
        path = write(tmp_path / f"{kind.replace(' ', '_')}.caffemodel", make(tmp_path))
        said[kind] = one_line_error(capsys, "inspect", PROTOTXT, path).split(": ", 1)[1]
        said[kind] = said[kind].split(", not a")[0].split(" holding")[0]
    assert len(set(said.values())) == len(said), said


# ----------------------------------------------------------------------------- one role


def test_hdf5_that_is_not_caffe_weights(capsys, tmp_path):
    path = write(tmp_path / "model.caffemodel.h5", hdf5_bytes(tmp_path))
    message = as_weights(capsys, path)
    for word in ("HDF5 file but not Caffe's HDF5 weights", "'/data'", "'model_weights'"):
        assert word in message, message


def test_hdf5_given_as_prototxt(capsys, tmp_path):
    path = write(tmp_path / "deploy.prototxt", hdf5_bytes(tmp_path))
    message = as_prototxt(capsys, path)
    assert "is an HDF5 file (Caffe's HDF5 weights?), not a prototxt" in message


def test_caffemodel_given_as_prototxt(capsys):
    message = one_line_error(capsys, "inspect", CAFFEMODEL)
    assert message == (
        f"{CAFFEMODEL}: is a binary caffemodel (weights), not a prototxt (text): give the net "
        "definition first and the weights second"
    )


def test_prototxt_given_as_weights(capsys):
    shared = BROKEN.parent / "weight_formats.prototxt"  # broken/prototxt_as.caffemodel's bytes
    message = as_weights(capsys, shared)
    assert message == (
        f"{shared}: is a prototxt (network definition in text format), not binary weights: "
        "pass it as the model definition and give the .caffemodel as weights"
    )


def test_swapped_arguments(capsys, tmp_path):
    message = one_line_error(capsys, "convert", CAFFEMODEL, PROTOTXT, "-o", tmp_path / "x.pt")
    assert message == (
        f"the arguments look swapped: {CAFFEMODEL} holds binary weights and {PROTOTXT} a "
        f"prototxt; give the prototxt first: {PROTOTXT} {CAFFEMODEL}"
    )
    h5 = FIXTURES / "weight_formats" / "weight_formats.caffemodel.h5"
    assert "look swapped" in one_line_error(capsys, "verify", h5, PROTOTXT)
    assert not (tmp_path / "x.pt").exists()


def test_long_text_as_weights(capsys, tmp_path):
    path = write(
        tmp_path / "README.caffemodel", b"Download the weights from the link below.\n" * 40
    )
    assert as_weights(capsys, path) == (
        f"{path}: is a text file starting 'Download the weights from the link below.', not a "
        "caffemodel"
    )


def test_gzip_prototxt_is_to_be_decompressed(capsys, tmp_path):
    path = write(tmp_path / "deploy.prototxt.gz", gzip.compress(PROTOTXT.read_bytes()))
    assert as_prototxt(capsys, path) == (
        f"{path}: is gzip-compressed data, not a prototxt (text net definition): decompress it "
        f"first (`gzip -dc {path} > {tmp_path / 'deploy.prototxt'}`) and pass the result"
    )


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_caffemodel_reads_directly(capsys, tmp_path, compress):
    """A single caffemodel inside gzip, bzip2 or xz is read without unpacking (README)."""
    packed = write(tmp_path / "model.caffemodel.z", compress(CAFFEMODEL.read_bytes()))
    from safetensors.numpy import load_file

    ours, plain = tmp_path / "packed.safetensors", tmp_path / "plain.safetensors"
    assert main(["convert", str(PROTOTXT), str(packed), "-o", str(ours)]) == 0
    assert main(["convert", str(PROTOTXT), str(CAFFEMODEL), "-o", str(plain)]) == 0
    a, b = load_file(str(ours)), load_file(str(plain))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["inspect", str(PROTOTXT), str(packed)]) == 0
    assert "-compressed caffemodel)" in capsys.readouterr().out


def test_compressed_tar_and_damaged_stream(capsys, tmp_path):
    tgz = write(tmp_path / "model.tar.gz", gzip.compress(tar_bytes({"a.caffemodel": b"x"})))
    assert as_weights(capsys, tgz) == (
        f"{tgz}: is a gzip-compressed tar archive, not a caffemodel: unpack it first "
        f"(`tar -xf {tgz}`) and pass the caffemodel inside"
    )
    cut = write(tmp_path / "cut.caffemodel.gz", gzip.compress(CAFFEMODEL.read_bytes())[:5000])
    message = as_weights(capsys, cut)
    assert message.startswith(f"{cut}: is gzip-compressed, but the compressed data is damaged")
    inner = write(tmp_path / "page.caffemodel.gz", gzip.compress(S3_ERROR))
    assert "holds an XML document, gzip-compressed" in as_weights(capsys, inner)


def test_truncated_caffemodel_says_by_how_much(capsys, tmp_path):
    raw = CAFFEMODEL.read_bytes()
    cut = write(tmp_path / "cut.caffemodel", raw[:300_000])
    message = as_weights(capsys, cut)
    assert message.startswith(f"{cut}: truncated caffemodel: a length field runs ")
    assert "bytes past the end of the 300,000-byte file (it stops in layer " in message
    assert message.endswith("; download or copy it again")
    overrun = int(message.split(" runs ")[1].split(" bytes")[0].replace(",", ""))
    assert 0 < overrun <= len(raw) - 300_000  # the rest of the layer the cut falls in


# ----------------------------------------------------------------------------- our own outputs

# format -> (output name, words saying what it is, words saying what to call instead)
OURS = {
    "pt2": ("r.pt2", "torch.export program (.pt2) (written by caffe2torch)", "torch.export.load"),
    "onnx": ("r.onnx", "ONNX model (written by caffe2torch)", "onnxruntime"),
    "detectron2": (
        "r.pkl",
        "detectron2 checkpoint (.pkl) (written by caffe2torch)",
        "DetectionCheckpointer",
    ),
    "mmdet": ("r.pth", "mmdet / mmpretrain checkpoint (written by caffe2torch)", "load_checkpoint"),
    "code": ("r_code", "caffe2torch --format code folder", "from model import load"),
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    """Every format convert writes, of the bundled ResNet-18 (w8), plus a PNG image."""
    import converter

    folder = tmp_path_factory.mktemp("outputs")
    made = {}
    for fmt, (name, _, _) in {**OURS, "safetensors": ("r.safetensors", "", "")}.items():
        made[fmt] = converter.convert(PROTOTXT, CAFFEMODEL, folder / name, format=fmt)
    made["png"] = folder / "photo.png"
    made["png"].write_bytes(FIXTURES.parent.parent.joinpath("examples", "chelsea.png").read_bytes())
    return made


@pytest.mark.parametrize("fmt", sorted(OURS))
def test_converter_load_names_our_own_outputs(outputs, fmt):
    """converter.load (and what reads through it: verify --converted of a .pt/.pkl/.pth,
    resnet50_caffe, examples/classify.py) said "not a readable safetensors file (header too
    large)" or "is a directory" for them."""
    import converter

    _, what, call = OURS[fmt]
    with pytest.raises(converter.ConverterError) as caught:
        converter.load(outputs[fmt])
    message = str(caught.value)
    assert message.startswith(f"{outputs[fmt]}: is ") and what in message and call in message
    assert "header too large" not in message


@pytest.mark.parametrize("fmt", ["detectron2", "mmdet"])
def test_verify_converted_names_a_framework_checkpoint(capsys, outputs, fmt):
    """verify --converted of an mmdet .pth said "expected a dict with 'state_dict' ... as
    written by caffe2torch convert", which wrote it."""
    _, what, call = OURS[fmt]
    message = one_line_error(capsys, "verify", PROTOTXT, CAFFEMODEL, "--converted", outputs[fmt])
    assert what in message and call in message and "caffe2torch verify PROTOTXT" in message


@pytest.mark.parametrize("fmt", [*sorted(OURS), "safetensors", "png"])
def test_our_outputs_given_as_weights(capsys, outputs, fmt, tmp_path):
    """inspect/convert/verify with one as the caffemodel: a .pt2 was "a zip archive holding
    'archive/data/weights/weight_0' ... unpack it first", a PNG "field number 0", a code
    folder "is a directory"."""
    import shutil

    copy = shutil.copytree if fmt == "code" else shutil.copy
    message = as_weights(capsys, Path(copy(outputs[fmt], tmp_path / outputs[fmt].name)))
    what = OURS[fmt][1] if fmt in OURS else {"safetensors": "safetensors", "png": "PNG image"}[fmt]
    assert what in message and "not a caffemodel" in message
    assert "unpack" not in message and "field number" not in message


@pytest.mark.parametrize("kind", ["caffemodel", "png", "pt2", "prototxt", "code"])
def test_mean_file_that_is_something_else(capsys, outputs, kind):
    """--mean given a caffemodel said "blob declares shape () (1 values) but holds 0 values"."""
    path = {"caffemodel": CAFFEMODEL, "prototxt": PROTOTXT}.get(kind) or outputs[kind]
    image = outputs["png"]
    message = one_line_error(
        capsys, "verify", PROTOTXT, CAFFEMODEL, "--input", image, "--mean", path
    )
    assert message.startswith(f"{path}: is ") and "not a mean file (.binaryproto)" in message
    assert "B,G,R" in message


def test_a_renamed_output_is_read_by_its_content(capsys, outputs, tmp_path):
    """Files are recognised by content, never by name: a .pt2 or a .pt under another
    name is still run by verify --converted and loaded by converter.load."""
    import shutil

    import converter

    program = shutil.copy(outputs["pt2"], tmp_path / "model.bin")
    code = main(["verify", str(PROTOTXT), str(CAFFEMODEL), "--converted", str(program)])
    out = capsys.readouterr().out
    assert code in (0, 3) and "Reference:" in out  # ran (3: its one-hot output tells little)
    weights = tmp_path / "weights.bin"
    converter.convert(PROTOTXT, CAFFEMODEL, tmp_path / "w.pt")
    shutil.copy(tmp_path / "w.pt", weights)
    assert type(converter.load(weights)).__name__ == "CaffeResNet"


def test_classify_example_names_our_outputs(capsys, outputs):
    from test_examples import load_example

    classify = load_example("classify")
    for fmt in ("pt2", "code"):
        assert classify.main([str(outputs[fmt]), str(outputs["png"])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and OURS[fmt][1] in err[0] and OURS[fmt][2] in err[0], err
