"""Shared test helpers: where the real-Caffe fixtures are and how to load a case."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEGACY = FIXTURES / "legacy_formats"
KAIMING = FIXTURES / "kaiming"  # Kaiming's deploy prototxts and mean file
SHARED_FIXTURES = Path(
    os.environ.get("CAFFE2TORCH_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures")
)

RESNET_CASES = ["resnet18_w8", "resnet50_w8_calibrated", "resnet152_w8_calibrated"]
EDGE_CASES = ["pool_ceil", "bn_variants", "conv_variants"]


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
        and (p / f"{p.name}.caffemodel").is_file()
    )
    return names or [NO_SHARED]


def shared_case(name: str) -> Case:
    """A case of ../shared/fixtures; skips the test when it is not there."""
    if not (SHARED_FIXTURES / name / "case.json").is_file():
        pytest.skip(f"{SHARED_FIXTURES / name} is not beside this checkout")
    return load_case(name, SHARED_FIXTURES)


def rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max|ours - ref| / max|ref|: the fixtures' tolerance measure."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ours - ref).max() / (scale if scale > 0 else 1.0))
