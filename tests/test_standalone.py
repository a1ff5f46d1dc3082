"""Acceptance of the outputs that live without caffe2torch: ``--format code`` folders, pt2
and ONNX files, each run in a fresh Python process in which ``import converter`` fails,
must return every output blob of the net (as Caffe's ``net.forward()`` does, named as in its
``net.outputs``) and reproduce real Caffe's saved values within the case's tolerance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from test_codegen import DETECTION_FORMS

import converter
from conftest import FIXTURES, LEGACY, load_case, rel_error, shared_case, shared_cases
from converter import program
from converter.errors import ConverterError
from converter.executor import run_reference

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
outputs, names = {}, {}


def keep(fmt, blobs, returned):  # each output, as the artifact names it
    values = list(returned) if isinstance(returned, (tuple, list)) else [returned]
    assert len(values) == len(blobs), (fmt, len(values), blobs)
    names[fmt] = list(blobs)
    for index, value in enumerate(values):
        outputs[f"{fmt}:{index}"] = value.detach().numpy() if hasattr(value, "detach") else value


with torch.no_grad():
    if "code" in job:
        sys.path.insert(0, job["code"])
        import model

        net = model.load()
        keep("code", net.output_names, net(torch.from_numpy(x)))
    if "pt2" in job:
        extra = {"caffe2torch.json": ""}
        program = torch.export.load(job["pt2"], extra_files=extra).module()
        stored = json.loads(json.loads(extra["caffe2torch.json"])["output_blobs"])
        keep("pt2", stored, program(torch.from_numpy(x)))
if "onnx" in job:
    import onnxruntime

    session = onnxruntime.InferenceSession(job["onnx"], providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    keep("onnx", [o.name for o in session.get_outputs()], session.run(None, feed))
np.savez(job["out"], **outputs)
with open(job["out"] + ".json", "w") as handle:
    json.dump(names, handle)
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


def run_standalone(job: dict, tmp: Path) -> dict[str, dict[str, np.ndarray]]:
    """Run ``RUNNER`` on ``job`` in a fresh process (no PYTHONPATH, cwd ``tmp``): per
    format, its outputs by the blob names it gives them, in its order."""
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
    names = json.loads(Path(f"{out}.json").read_text())
    with np.load(out) as data:
        return {
            fmt: {name: data[f"{fmt}:{index}"] for index, name in enumerate(blobs)}
            for fmt, blobs in names.items()
        }


FORMATS = (("pt2", "net.pt2"), ("onnx", "net.onnx"), ("code", "code"))


def standalone_errors(case: ArtifactCase, tmp: Path) -> dict[str, float | str]:
    """Convert ``case`` to every standalone format and run what was written without
    converter: per format, the worst relative error over the net's output blobs against
    Caffe's saved ones, or the format's one-line refusal (then nothing may have been
    written). Each format must return every output of the net, named and ordered as
    Caffe's ``net.outputs``. benchmarks/ prints these."""
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
    names = converter.load(case.prototxt, case.caffemodel).output_names
    with np.load(case.blobs) as blobs:
        reference = {name: blobs[name] for name in names}
    errors: dict[str, float | str] = {}
    for fmt, returned in outputs.items():
        assert list(returned) == names, (case.name, fmt, list(returned), names)
        errors[fmt] = max(rel_error(returned[name], reference[name]) for name in names)
    return {**errors, **refused}


def _check_case(case: ArtifactCase, tmp: Path) -> None:
    """Every standalone format writes the case and reproduces Caffe's output blob."""
    errors = standalone_errors(case, tmp)
    assert set(errors) == {"code", "pt2", "onnx"}
    for fmt, error in errors.items():
        assert not isinstance(error, str), (case.name, fmt, error)
        assert error <= case.tolerance, (case.name, fmt, error, case.tolerance)


# The bundled ResNet-50 example and the layer edge cases run by default, the rest as slow.
FAST = ("resnet50_w8_calibrated", "conv_variants", "pool_ceil")


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


# ----------------------------------------------------------------------------- traced = eager
# pt2 and ONNX hold what torch.export traced; where a module computes differently while
# traced (DetectionOutput) or where ONNX has no operation of the same meaning (a stable
# sort, ArgMax's tie rule), the traced program must give what the module gives eagerly.


class _Outputs(torch.nn.Module):
    """A converted net returning the blobs ``names``, in that order."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        blobs = self.model.forward_blobs(*inputs, names=self.names)
        return tuple(blobs[name] for name in self.names)


def exported_outputs(net, names: list[str], tmp: Path, onnx: bool = True):
    """``net``'s blobs ``names`` as functions of its inputs: (eager module, pt2 program,
    ONNX session), the last two exported as ``--format pt2``/``onnx`` export (dynamic
    batch) and read back from their files."""
    import onnxruntime

    model = _Outputs(converter.build_model(net), names).eval()
    shapes = net.input_shapes()
    traced = program.export_program(model, shapes)
    program.write_pt2(traced, {}, tmp / "net.pt2")
    pt2 = torch.export.load(tmp / "net.pt2").module()
    runners = {"eager": model, "pt2": pt2}
    if onnx:
        program.write_onnx(traced, list(shapes), names, {}, tmp / "net.onnx")
        session = onnxruntime.InferenceSession(
            str(tmp / "net.onnx"), providers=["CPUExecutionProvider"]
        )
        feeds = [item.name for item in session.get_inputs()]
        runners["onnx"] = lambda *xs: tuple(
            torch.from_numpy(v)
            for v in session.run(None, {n: x.numpy() for n, x in zip(feeds, xs)})
        )
    return runners


def run_all(runners, inputs: list[np.ndarray]) -> dict[str, tuple[torch.Tensor, ...]]:
    xs = [torch.from_numpy(np.asarray(x, np.float32)) for x in inputs]
    with torch.no_grad():
        return {name: tuple(run(*xs)) for name, run in runners.items()}


def test_argmax_ties_are_the_same_eager_traced_and_in_onnx(tmp_path):
    """Caffe gives a tie to the larger index; ONNX's TopK to the smaller, and ONNX has no
    stable sort: ArgMax is computed without either, so every form agrees with the NumPy
    executor's rule on tie-heavy input (-inf included), eager, in pt2 and in ONNX, at a
    batch size other than the traced one."""
    from test_codegen import ARGMAX_FORMS, _inputs, _layers
    from test_fork_layers import net_from_text

    argmax = _layers("argmax", "ArgMax", "ties", "argmax_param", ARGMAX_FORMS)
    net = net_from_text(_inputs(ties=(2, 5, 6, 7)) + argmax)
    names = [f"argmax{k}" for k in range(len(ARGMAX_FORMS))]
    runners = exported_outputs(net, names, tmp_path)
    rng = np.random.default_rng(5)
    ties = rng.integers(-2, 3, (3, 5, 6, 7)).astype(np.float32)
    ties[rng.random(ties.shape) < 0.05] = -np.inf
    expected = run_reference(net, {"ties": ties.astype(np.float64)})
    for runner, outputs in run_all(runners, [ties]).items():
        for name, value in zip(names, outputs):
            np.testing.assert_array_equal(value.numpy(), expected[name], err_msg=(runner, name))


@pytest.mark.slow
@pytest.mark.parametrize("form", range(len(DETECTION_FORMS)))
def test_detection_output_traced_gives_the_eager_rows(form, tmp_path):
    """DetectionOutput's traced path (static shapes, one data-dependent selection) gives
    the eager path's rows: the same in pt2 bit for bit, in ONNX the same rows with
    integer columns equal, at batch 2 (traced) and 3; each setting of the layer."""
    from test_fork_layers import DETECTION, detection_inputs, net_from_text

    param = DETECTION_FORMS[form]
    loc_classes = 4 if "share_location: false" in param else 1
    text = DETECTION % {"P": 30, "C": 4, "P4": 120, "param": param}
    net = net_from_text(text, (2, 30 * loc_classes * 4))
    runners = exported_outputs(net, ["det"], tmp_path)
    for batch in (2, 3):
        inputs = detection_inputs(30, 4, loc_classes, seed=len(param) + batch)
        inputs["data"] = np.random.default_rng(batch).normal(0, 1, (batch, 30 * loc_classes * 4))
        inputs["conf_in"] = np.random.default_rng(batch).normal(0, 2, (batch, 30, 4))
        # every input's first axis is the traced batch; the layer reads the first priors
        inputs["prior_in"] = np.repeat(inputs["prior_in"], batch, axis=0)
        outputs = run_all(runners, [inputs[n] for n in ("data", "conf_in", "prior_in")])
        eager = outputs["eager"][0]
        expected = run_reference(net, inputs)["det"]
        assert eager.shape == expected.shape and rel_error(eager.numpy(), expected) <= 1e-6
        assert torch.equal(outputs["pt2"][0], eager), batch
        onnx = outputs["onnx"][0]
        assert onnx.shape == eager.shape, batch
        assert torch.equal(onnx[..., :2], eager[..., :2]), batch
        assert rel_error(onnx.numpy(), eager.numpy()) <= 1e-6, batch
