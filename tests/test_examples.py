"""The example scripts keep working against the bundled fixtures."""

from __future__ import annotations

import importlib.util

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
