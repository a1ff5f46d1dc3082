"""Benchmark: the NumPy reference executor on full-width ResNet-50 (float64, batch 1, 224x224).

Run: ``python benchmarks/bench_reference.py [--repeats N] [--batch N]``

Builds Kaiming's ResNet-50 deploy net with random weights in memory (BatchNorm: positive
variances and a 999.98 scale factor, as Caffe stores moving averages), then times
``run_reference`` wall-clock. Target (issue 4): at most 15 s on the 2-core CI machine.
The matmul-only time (the same GEMMs, nothing else) is printed as the baseline, so the
ratio shows what the executor adds on top of BLAS.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from converter.executor import run_reference
from converter.net import read_net

PROTOTXT = (
    Path(__file__).resolve().parent.parent / "tests/fixtures/kaiming/ResNet-50-deploy.prototxt"
)
TARGET_SECONDS = 15.0


def _he_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in = max(1, int(np.prod(shape[1:])))
    return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)


def random_resnet50(batch: int, seed: int = 0):
    """Kaiming's ResNet-50 with random weights, for an input of the given batch size."""
    rng = np.random.default_rng(seed)
    net = read_net(PROTOTXT)
    inputs = {name: (batch,) + shape[1:] for name, shape in net.input_shapes().items()}
    for layer, shapes in zip(net.layers, net.shapes(inputs)):
        if layer.type == "BatchNorm":
            (channels,), _, _ = shapes.param_shapes
            s = np.float32(999.98)
            mean = rng.normal(0, 0.2, channels).astype(np.float32)
            var = rng.uniform(0.5, 2.0, channels).astype(np.float32)
            layer.blobs = [mean * s, var * s, np.array([s], np.float32)]
        else:  # He-normal, so activations stay O(1) through the 50 layers
            layer.blobs = [
                _he_normal(rng, shape).astype(np.float32) for shape in shapes.param_shapes
            ]
    ((name, shape),) = inputs.items()
    return net, rng.normal(0, 50, shape).astype(np.float32)


def gemm_baseline(net, shapes) -> float:
    """Seconds for the convolution/fc GEMMs alone, on random float64 operands."""
    rng = np.random.default_rng(1)
    products = []
    for layer, layer_shapes in zip(net.layers, shapes):
        if layer.type in ("Convolution", "InnerProduct"):
            weight = layer.blobs[0].reshape(layer.blobs[0].shape[0], -1).astype(np.float64)
            positions = int(np.prod(layer_shapes.top_shapes[0][2:]) * layer_shapes.top_shapes[0][0])
            products.append((weight, rng.standard_normal((weight.shape[1], positions))))
    start = time.perf_counter()
    for weight, cols in products:
        weight @ cols
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    net, data = random_resnet50(args.batch)
    shapes = net.shapes({"data": data.shape})
    times, gemms = [], []
    for _ in range(args.repeats):  # alternate, so load from other processes hits both
        start = time.perf_counter()
        blobs = run_reference(net, data)
        times.append(time.perf_counter() - start)
        gemms.append(gemm_baseline(net, shapes))
    best, gemm = min(times), min(gemms)
    prob = blobs["prob"]
    print(f"ResNet-50 full width, batch {args.batch}, float64, {len(blobs)} blobs")
    print(f"run_reference: best {best:.2f} s, all {', '.join(f'{t:.2f}' for t in times)} s")
    print(f"GEMMs alone (baseline, best): {gemm:.2f} s; ratio {best / gemm:.2f}x")
    print(f"target <= {TARGET_SECONDS:.0f} s: {'met' if best <= TARGET_SECONDS else 'MISSED'}")
    print(f"prob sums to {prob.sum(axis=1)}, top-1 {prob.argmax(axis=1)}")


if __name__ == "__main__":
    main()
