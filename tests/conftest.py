"""Shared test helpers: where the real-Caffe fixtures are and how to load a case."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from converter.net import read_net, write_caffemodel

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEGACY = FIXTURES / "legacy_formats"
KAIMING = FIXTURES / "kaiming"  # Kaiming's deploy prototxts and mean file
SHARED_FIXTURES = Path(
    os.environ.get("CAFFE2TORCH_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures")
)

RESNET_CASES = ["resnet18_w8", "resnet50_w8_calibrated", "resnet152_w8_calibrated"]
EDGE_CASES = ["pool_ceil", "bn_variants", "conv_variants", "fork_layers", "bvlc_layers"]


@dataclass
class Case:
    """One real-Caffe fixture: files, input, Caffe's blobs and the tolerance."""

    name: str
    folder: Path
    info: dict

    @property
    def prototxt(self) -> Path:
        return self.folder / f"{self.name}.prototxt"

    @property
    def caffemodel(self) -> Path:
        return self.folder / f"{self.name}.caffemodel"

    @property
    def input(self) -> np.ndarray:
        return np.load(self.folder / "input.npy")

    @property
    def blobs(self) -> dict[str, np.ndarray]:
        with np.load(self.folder / "blobs.npz") as data:
            return dict(data)

    @property
    def tolerance(self) -> float:
        return float(self.info["tolerance_rel"])


def load_case(name: str, root: Path = FIXTURES) -> Case:
    folder = root / name
    return Case(name, folder, json.loads((folder / "case.json").read_text()))


NO_SHARED = "<no ../shared/fixtures>"


def shared_cases(prefix: str = "") -> list[str]:
    """Every case in ../shared/fixtures whose name starts with ``prefix``; when that folder is
    not beside the checkout, one placeholder name, which ``shared_case`` turns into a skip."""
    if not SHARED_FIXTURES.is_dir():
        return [NO_SHARED]
    names = sorted(
        p.name
        for p in SHARED_FIXTURES.iterdir()
        if p.name.startswith(prefix)
        and (p / "case.json").is_file()
        and (p / f"{p.name}.prototxt").is_file()  # a training-net case has train_val.prototxt
        and (p / f"{p.name}.caffemodel").is_file()
    )
    return names or [NO_SHARED]


def shared_case(name: str) -> Case:
    """A case of ../shared/fixtures; skips the test when it is not there, naming what is
    missing: the folder (``NO_SHARED``, ``shared_cases``'s placeholder), or the case."""
    if name == NO_SHARED or not SHARED_FIXTURES.is_dir():
        pytest.skip(
            f"{SHARED_FIXTURES} is not beside this checkout (or set "
            "CAFFE2TORCH_SHARED_FIXTURES to the shared fixtures folder)"
        )
    if not (SHARED_FIXTURES / name / "case.json").is_file():
        pytest.skip(f"{SHARED_FIXTURES} has no case {name}")
    return load_case(name, SHARED_FIXTURES)


def rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max|ours - ref| / max|ref|: the fixtures' tolerance measure."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ours - ref).max() / (scale if scale > 0 else 1.0))


def random_blobs(net, rng) -> None:
    """Random weights in Caffe's layouts, BN statistics stored times a scale factor.

    The factor is a power of two so that dividing by it is exact in float32 too, and the
    float64 module can be held to float64 accuracy.
    """
    for layer, shapes in zip(net.layers, net.shapes()):
        params = shapes.param_shapes
        if layer.type == "BatchNorm":
            s = np.float32(512.0)
            channels = params[0][0]
            mean = rng.normal(0, 0.2, channels) * s
            var = rng.uniform(0.5, 2.0, channels) * s
            layer.blobs = [a.astype(np.float32) for a in (mean, var, np.array([s]))]
        elif layer.type == "Scale":
            gamma = rng.uniform(0.5, 1.5, params[0])
            beta = rng.normal(0, 0.2, params[1])
            layer.blobs = [gamma.astype(np.float32), beta.astype(np.float32)]
        elif params:
            fan_in = math.prod(params[0][1:])
            weight = rng.normal(0, math.sqrt(2 / fan_in), params[0])
            layer.blobs = [weight.astype(np.float32)]
            layer.blobs += [rng.normal(0, 0.1, p).astype(np.float32) for p in params[1:]]


def write_net(folder: Path, name: str, text: str, seed: int = 0) -> tuple[Path, Path]:
    """``text`` as ``folder/name.prototxt`` plus a caffemodel of random weights for it
    (``random_blobs``): a user's pair of files for a net written in a test."""
    prototxt, caffemodel = folder / f"{name}.prototxt", folder / f"{name}.caffemodel"
    prototxt.write_text(text)
    net = read_net(prototxt)
    random_blobs(net, np.random.default_rng(seed))
    write_caffemodel(net, caffemodel)
    return prototxt, caffemodel


# A net of one input and one InnerProduct, for tests about files rather than numbers
TINY = """name: "tiny"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: 5 } }
"""
