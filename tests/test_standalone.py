"""Acceptance of the outputs that live without caffe2torch: ``--format code`` folders, pt2
and ONNX files, each run in a fresh Python process in which ``import converter`` fails,
must reproduce real Caffe's saved output blob within the case's tolerance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import converter
from conftest import FIXTURES, LEGACY, load_case, rel_error, shared_case, shared_cases
from converter.errors import ConverterError

# Runs in a fresh interpreter: blocks every import of the converter package, then runs
# each artifact it is given on the input and saves the output.
RUNNER = r"""
import importlib.abc, json, sys

class NoConverter(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "converter" or name.startswith("converter."):
            raise ImportError(f"{name}: blocked for this test")

sys.meta_path.insert(0, NoConverter())
try:
    import converter  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("converter is importable")

import numpy as np
import torch

job = json.loads(sys.argv[1])
x = np.load(job["input"])
outputs = {}
if "code" in job:
    sys.path.insert(0, job["code"])
    import model

    outputs["code"] = model.load()(torch.from_numpy(x)).detach().numpy()
if "pt2" in job:
    program = torch.export.load(job["pt2"]).module()
    outputs["pt2"] = program(torch.from_numpy(x)).detach().numpy()
if "onnx" in job:
    import onnxruntime

    session = onnxruntime.InferenceSession(job["onnx"], providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    outputs["onnx"] = session.run(None, feed)[0]
np.savez(job["out"], **outputs)
"""


@dataclass
class ArtifactCase:
    name: str
    prototxt: Path
    caffemodel: Path
    input: Path
    blobs: Path
    tolerance: float


def _case(name: str, root: Path = FIXTURES) -> ArtifactCase:
    case = load_case(name, root)
    folder = case.folder
    return ArtifactCase(
        name,
        case.prototxt,
        case.caffemodel,
        folder / "input.npy",
        folder / "blobs.npz",
        case.tolerance,
    )


def _local_cases() -> list[ArtifactCase]:
    tolerance = load_case("legacy_formats").tolerance
    return [
        *(_case(name) for name in ("resnet18_w8", "resnet50_w8_calibrated")),
        *(_case(name) for name in ("pool_ceil", "bn_variants", "conv_variants")),
        *(_case(name) for name in ("bvlc_layers", "fork_layers")),
        ArtifactCase(
            "legacy_v1",
            LEGACY / "v1.prototxt",
            LEGACY / "v1.caffemodel",
            LEGACY / "input_v1.npy",
            LEGACY / "blobs_v1.npz",
            tolerance,
        ),
        ArtifactCase(
            "legacy_blobdims",
            FIXTURES / "resnet18_w8" / "resnet18_w8.prototxt",
            LEGACY / "legacy_blobdims.caffemodel",
            FIXTURES / "resnet18_w8" / "input.npy",
            FIXTURES / "resnet18_w8" / "blobs.npz",
            tolerance,
        ),
    ]


LOCAL = {case.name: case for case in _local_cases()}


def run_standalone(job: dict, tmp: Path) -> dict[str, np.ndarray]:
    """Run ``RUNNER`` on ``job`` in a fresh process (no PYTHONPATH, cwd ``tmp``)."""
    out = tmp / "outputs.npz"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp)}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps({**job, "out": str(out)})],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as data:
        return dict(data)


FORMATS = (("pt2", "net.pt2"), ("onnx", "net.onnx"), ("code", "code"))


def standalone_errors(case: ArtifactCase, tmp: Path) -> dict[str, float | str]:
    """Convert ``case`` to every standalone format and run what was written without
    converter: per format, the relative error against Caffe's saved output blob, or the
    format's one-line refusal (then nothing may have been written). benchmarks/ prints these."""
    job: dict[str, str] = {"input": str(case.input)}
    refused: dict[str, str] = {}
    for fmt, name in FORMATS:
        try:
            path = converter.convert(case.prototxt, case.caffemodel, tmp / name, format=fmt)
        except ConverterError as exc:
            refused[fmt] = str(exc)
            leftovers = [p.name for p in tmp.iterdir() if p.name.startswith((name, f".{name}"))]
            assert leftovers == [], f"{fmt} refused but left {leftovers}"
            continue
        job[fmt] = str(path)
    outputs = run_standalone(job, tmp) if len(job) > 1 else {}
    model = converter.load(case.prototxt, case.caffemodel)
    with np.load(case.blobs) as blobs:
        reference = blobs[model.output_name]
    return {**{fmt: rel_error(v, reference) for fmt, v in outputs.items()}, **refused}


# Nets every standalone format must write and reproduce; any other case (layer types a
# format cannot express yet, data-dependent output sizes torch.export cannot trace) may be
# refused in one line, and what a format does write must be right.
REQUIRED = {
    "resnet18_w8", "resnet50_w8_calibrated", "resnet152_w8_calibrated", "pool_ceil",
    "bn_variants", "conv_variants", "legacy_v1", "legacy_blobdims",
}  # fmt: skip
REQUIRED |= {f"resnet{d}_w8{s}" for d in (18, 34, 50, 101, 152) for s in ("", "_calibrated")}


def _check_case(case: ArtifactCase, tmp: Path) -> None:
    errors = standalone_errors(case, tmp)
    assert set(errors) == {"code", "pt2", "onnx"}
    for fmt, error in errors.items():
        if isinstance(error, str):
            assert case.name not in REQUIRED, (case.name, fmt, error)
            continue
        assert error <= case.tolerance, (case.name, fmt, error, case.tolerance)


# The bundled ResNet-50 example and the layer edge cases run by default, the rest as slow.
FAST = ("resnet50_w8_calibrated", "conv_variants")


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in LOCAL]
)
def test_standalone_outputs_reproduce_caffe(name, tmp_path):
    _check_case(LOCAL[name], tmp_path)


@pytest.mark.slow
def test_standalone_outputs_reproduce_caffe_resnet152(tmp_path):
    _check_case(_case("resnet152_w8_calibrated"), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", shared_cases())
def test_standalone_outputs_reproduce_caffe_shared(name, tmp_path):
    case = shared_case(name)
    try:
        converter.read_net(case.prototxt, case.caffemodel).shapes()
        converter.build_model(converter.read_net(case.prototxt, case.caffemodel))
    except ConverterError as exc:
        pytest.skip(f"caffe2torch does not convert {name} yet: {str(exc)[:120]}")
    _check_case(_case(name, case.folder.parent), tmp_path)
