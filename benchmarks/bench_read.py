"""Benchmark: reading a ResNet-152-sized caffemodel, against reading its bytes.

Run: ``python benchmarks/bench_read.py [--repeats N] [--keep]``

Makes a ~241 MB caffemodel from Kaiming's ResNet-152 prototxt with random weights, then
measures, each in a fresh subprocess, with a warm page cache:

- ``read_bytes``: open + read of the whole file (the baseline);
- ``read_net``: ``converter.read_net(prototxt, caffemodel)``, then sum every blob;
- ``read_weights``: ``converter.read_weights(caffemodel)``, then sum every blob;
- ``prototxt``: ``converter.read_net(prototxt)`` and ``net.shapes()``: the fixed cost
  of ``read_net`` that does not depend on the caffemodel's size;
- ``plain``: read the bytes, ``caffe_pb2.NetParameter.FromString``, then
  ``np.array(blob.data, dtype=np.float32)`` for every blob, and sum each.

Summing every blob makes sure every page of a memory map is really read. Targets (issue 2):
``read_net`` + touch within 1.5x the time of ``read_bytes``, and peak memory growth within
1.3x the file size. The orders of the approaches alternate between rounds; medians are shown.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from common import (
    KAIMING,
    WORK_DIR,
    machine_description,
    make_random_caffemodel,
    measure,
    median,
    timed_phase,
)

import converter
from converter import caffe_pb2

PROTOTXT = KAIMING / "ResNet-152-deploy.prototxt"
APPROACHES = ["read_bytes", "read_net", "read_weights", "prototxt", "plain"]
TIME_TARGET, MEMORY_TARGET = 1.5, 1.3


def _touch(arrays) -> float:
    total = 0.0
    for array in arrays:
        total += float(array.sum(dtype=np.float64))
    return total


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _child(approach: str, prototxt: str, caffemodel: str) -> None:
    """One measurement, in this (fresh) process; prints a JSON line."""

    def read_net():
        net = converter.read_net(prototxt, caffemodel)
        _touch(blob for layer in net.layers for blob in layer.blobs)
        return net

    def read_weights():
        weights = converter.read_weights(caffemodel)
        _touch(blob for blobs in weights.values() for blob in blobs)
        return weights

    def prototxt_only():
        net = converter.read_net(prototxt)
        return net, net.shapes()

    def plain():
        param = caffe_pb2.NetParameter.FromString(_read_bytes(caffemodel))
        arrays = [
            np.array(blob.data, dtype=np.float32) for layer in param.layer for blob in layer.blobs
        ]
        _touch(arrays)
        return param, arrays

    runs = {
        "read_bytes": lambda: _read_bytes(caffemodel),
        "read_net": read_net,
        "read_weights": read_weights,
        "prototxt": prototxt_only,
        "plain": plain,
    }
    timed_phase(runs[approach])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the generated caffemodel")
    parser.add_argument("--child", nargs=3, metavar=("APPROACH", "PROTOTXT", "CAFFEMODEL"))
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    WORK_DIR.mkdir(exist_ok=True)
    caffemodel = WORK_DIR / "resnet152_random.caffemodel"
    size = make_random_caffemodel(PROTOTXT, caffemodel, seed=0)
    _read_bytes(str(caffemodel))  # warm the page cache: every measurement below is warm-cache
    print(f"caffemodel: {caffemodel.name}, {size / 1e6:.1f} MB; {machine_description()}")

    results: dict[str, list[dict[str, float]]] = {a: [] for a in APPROACHES}
    try:
        for round_index in range(args.repeats):
            order = APPROACHES if round_index % 2 == 0 else APPROACHES[::-1]
            for approach in order:
                result = measure(__file__, approach, str(PROTOTXT), str(caffemodel))
                results[approach].append(result)
    finally:
        if not args.keep:
            caffemodel.unlink(missing_ok=True)

    seconds = {a: median([r["seconds"] for r in results[a]]) for a in APPROACHES}
    growth = {a: median([r["peak_growth"] for r in results[a]]) for a in APPROACHES}
    base = seconds["read_bytes"]
    print(f"\nmedians of {args.repeats} runs each, warm page cache, fresh process per run\n")
    fastest = {a: min(r["seconds"] for r in results[a]) for a in APPROACHES}
    print("| approach | time (s) | x read_bytes | min time (s) | peak growth (MB) | x file size |")
    print("|---|--:|--:|--:|--:|--:|")
    for a in APPROACHES:
        print(
            f"| {a} | {seconds[a]:.3f} | {seconds[a] / base:.2f} | {fastest[a]:.3f} | "
            f"{growth[a] / 1e6:.1f} | {growth[a] / size:.2f} |"
        )
    time_ratio = seconds["read_net"] / base
    memory_ratio = growth["read_net"] / size
    print(
        f"\nread_net + touch: {time_ratio:.2f}x read_bytes time (target <= {TIME_TARGET}), "
        f"peak growth {memory_ratio:.2f}x file size (target <= {MEMORY_TARGET})"
    )
    print(
        f"prototxt + net + shapes alone (fixed cost in read_net): {seconds['prototxt']:.3f} s "
        f"= {seconds['prototxt'] / seconds['read_net']:.0%} of read_net"
    )
    met = time_ratio <= TIME_TARGET and memory_ratio <= MEMORY_TARGET
    print("targets met" if met else "TARGETS MISSED")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
