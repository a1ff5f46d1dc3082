"""Worst error against real Caffe, per fixture case and per path, in one table.

    python benchmarks/parity_table.py [FIXTURES_DIR]

For every case (default: ../shared/fixtures beside the repository, else tests/fixtures):
max over Caffe's saved blobs of max|ours - caffe| / max|caffe|, for the ResNet path
(CaffeResNet), the generic module, the BN-folded ResNet, the float64 NumPy executor and
OpenCV's Caffe importer, next to the case's tolerance. Not a test: a report.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import converter
from converter.errors import ConverterError
from converter.executor import run_reference
from converter.references import opencv_blobs

REPO = Path(__file__).resolve().parent.parent


def worst(ours: dict, caffe: dict) -> float:
    errors = []
    for name, ref in caffe.items():
        if name not in ours:
            continue
        value = np.asarray(ours[name], dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if value.shape != ref.shape:
            return float("inf")
        finite = np.isfinite(ref)
        scale = np.abs(ref[finite]).max() if finite.any() else 0.0
        errors.append(np.abs(value[finite] - ref[finite]).max() / (scale or 1.0))
    return max(errors) if errors else float("nan")


def torch_blobs(model, x) -> dict:
    return {k: v.numpy() for k, v in converter.blobs(model, x).items()}


def row(folder: Path, work: Path) -> list[str]:
    name = folder.name
    info = json.loads((folder / "case.json").read_text())
    prototxt, caffemodel = folder / f"{name}.prototxt", folder / f"{name}.caffemodel"
    x = np.load(folder / "input.npy")
    with np.load(folder / "blobs.npz") as data:
        caffe = dict(data)
    net = converter.read_net(prototxt, caffemodel)
    cells = []
    resnet = converter.build_model(net)  # falls back to the generic module for other nets
    is_resnet = isinstance(resnet, converter.CaffeResNet)
    cells.append(f"{worst(torch_blobs(resnet, x), caffe):.2e}" if is_resnet else "-")
    generic = converter.build_model(net, generic=True)
    cells.append(f"{worst(torch_blobs(generic, x), caffe):.2e}")
    if is_resnet:
        fused = converter.convert(prototxt, caffemodel, work / f"{name}.safetensors", fuse_bn=True)
        cells.append(f"{worst(torch_blobs(converter.load(fused), x), caffe):.2e}")
    else:
        cells.append("-")
    cells.append(f"{worst(run_reference(net, x), caffe):.2e}")
    try:
        cells.append(f"{worst(opencv_blobs(prototxt, caffemodel, {'data': x}), caffe):.2e}")
    except ConverterError:
        cells.append("n/a")
    return [name, *cells, f"{info['tolerance_rel']:.1e}"]


def main() -> int:
    default = REPO.parent / "shared" / "fixtures"
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    if not root.is_dir():
        root = REPO / "tests" / "fixtures"
    cases = sorted(p for p in root.iterdir() if (p / "case.json").is_file())
    cases = [p for p in cases if (p / f"{p.name}.caffemodel").is_file()]
    header = ["case", "CaffeResNet", "generic", "BN-folded", "numpy f64", "OpenCV", "tolerance"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    with tempfile.TemporaryDirectory() as work:
        for folder in cases:
            print("| " + " | ".join(row(folder, Path(work))) + " |", flush=True)
    print(f"\nfixtures: {root}")
    print("'-': path not applicable (not a ResNet); n/a: OpenCV cannot run the net")
    return 0


if __name__ == "__main__":
    sys.exit(main())
