"""The example scripts keep working against the bundled fixtures."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

import converter
from conftest import FIXTURES, ROOT, load_case
from converter.preprocess import load_input


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classify_prints_the_models_top_classes(capsys, tmp_path):
    case = load_case("resnet50_w8_calibrated")
    image = ROOT / "examples" / "chelsea.png"
    mean = FIXTURES / "kaiming" / "ResNet_mean.binaryproto"
    classify = load_example("classify")
    argv = [str(case.prototxt), str(case.caffemodel), str(image), "--mean", str(mean)]
    assert classify.main([*argv, "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    model = converter.load(case.prototxt, case.caffemodel)
    x = torch.from_numpy(load_input(image, case.input.shape, mean=str(mean)))
    expected = model(x)[0].topk(3).indices.tolist()
    assert [int(line.split()[-1]) for line in lines] == expected
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"name{i}" for i in range(10)))
    assert classify.main([*argv, "--labels", str(labels), "--top", "1"]) == 0
    assert capsys.readouterr().out.split()[-1] == f"name{expected[0]}"


def test_classify_reports_bad_input_in_one_line(capsys, tmp_path):
    classify = load_example("classify")
    code = classify.main(
        [str(tmp_path / "missing.safetensors"), str(ROOT / "examples" / "coffee.png")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing.safetensors: no such file" in err[0]


def test_classify_labels_file_problems_in_one_line(capsys, tmp_path):
    case = load_case("resnet50_w8_calibrated")  # 10 classes
    classify = load_example("classify")
    image, mean = (
        ROOT / "examples" / "chelsea.png",
        FIXTURES / "kaiming" / "ResNet_mean.binaryproto",
    )
    argv = [str(case.prototxt), str(case.caffemodel), str(image), "--mean", str(mean)]
    short = tmp_path / "short.txt"
    short.write_text("cat\ndog\n")
    for labels, words in (
        (tmp_path / "missing.txt", "missing.txt: cannot read the labels file"),
        (short, "short.txt: 2 labels for a model with 10 classes"),
    ):
        assert classify.main([*argv, "--labels", str(labels)]) == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert out == "" and len(lines) == 1 and words in lines[0], err


def test_dump_script_without_pycaffe_says_so_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "caffe", None)  # import caffe raises ImportError
    dump = load_example("dump_caffe_blobs")
    with pytest.raises(SystemExit) as done:
        dump.main(["d.prototxt", "m.caffemodel", "-o", str(tmp_path / "b.npz")])
    message = str(done.value.code)
    assert message.startswith("dump_caffe_blobs: error: pycaffe is not importable")
    assert "\n" not in message and not (tmp_path / "b.npz").exists()


def test_classify_asks_which_output_of_a_net_with_several(capsys, tmp_path):
    """A two-head net (box regression and class scores): no guess, one line naming the
    outputs; --output picks the class scores, and an unknown name is refused."""
    from test_outputs import TWO_HEADS

    from conftest import write_net

    prototxt, caffemodel = write_net(tmp_path, "two", TWO_HEADS)
    classify = load_example("classify")
    argv = [str(prototxt), str(caffemodel), str(ROOT / "examples" / "coffee.png")]
    assert classify.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 outputs (bbox_pred, cls_prob)" in err[0] and "--output" in err[0]
    assert classify.main([*argv, "--output", "cls_prob", "--top", "5"]) == 0
    shown = [int(line.split()[-1]) for line in capsys.readouterr().out.splitlines()]
    model = converter.load(prototxt, caffemodel)
    x = torch.from_numpy(load_input(argv[2], (1, 3, 8, 8)))
    with torch.no_grad():
        _, cls_prob = model(x)
    assert shown == cls_prob[0].topk(5).indices.tolist()
    assert classify.main([*argv, "--output", "cls_score"]) == 2
    assert "not an output of this net; its outputs: bbox_pred, cls_prob" in capsys.readouterr().err


def test_classify_refuses_a_net_with_two_inputs_in_one_line(capsys, tmp_path):
    """Before: a traceback ending "TypeError: the net takes 2 inputs ['a', 'b'], got 1",
    exit 1, from a pair and from a converted file alike."""
    from test_verify import TWO_INPUTS

    from conftest import write_net
    from converter.cli import main as cli

    prototxt, caffemodel = write_net(tmp_path, "two", TWO_INPUTS)
    converted = tmp_path / "two.safetensors"
    assert cli(["convert", str(prototxt), str(caffemodel), "-o", str(converted)]) == 0
    capsys.readouterr()
    classify = load_example("classify")
    image = str(ROOT / "examples" / "coffee.png")
    for model in ([str(prototxt), str(caffemodel)], [str(converted)]):
        assert classify.main([*model, image]) == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert out == "" and len(lines) == 1, err
        assert lines[0] == (
            "classify: error: the net has 2 inputs (a, b); this example classifies nets "
            "with one image input"
        )
