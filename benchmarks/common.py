"""Helpers shared by the benchmarks: test models with random weights, and isolated measurements.

Each measured approach runs in a fresh Python subprocess (``measure``), so its peak memory
growth is its own: the allocator's retained pages and the imports of one approach never
count towards another.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import converter

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / "_work"  # git-ignored
KAIMING = REPO / "tests" / "fixtures" / "kaiming"


def make_random_caffemodel(
    prototxt: str | os.PathLike, path: str | os.PathLike, seed: int = 0
) -> int:
    """Write a caffemodel for ``prototxt`` with random weights of the shapes it implies.

    BatchNorm layers get a positive scale factor and positive variances, so the model
    stays a valid deploy model (no division by zero, no NaN); weights are scaled by their
    fan-in and Scale gammas kept near 1, so activations neither vanish nor explode when a
    benchmark runs the net. Returns the file size.
    """
    rng = np.random.default_rng(seed)
    net = converter.read_net(prototxt)
    for layer, shapes in zip(net.layers, net.shapes()):
        if shapes.param_shapes is None:
            raise ValueError(f"cannot predict parameter shapes of layer '{layer.name}'")
        if layer.type == "BatchNorm":
            (channels,), _, _ = shapes.param_shapes
            factor = np.float32(rng.uniform(0.5, 2.0))
            mean = rng.standard_normal(channels, dtype=np.float32)
            var = rng.uniform(0.1, 2.0, channels).astype(np.float32)
            layer.blobs = [mean * factor, var * factor, np.array([factor], np.float32)]
        elif layer.type == "Scale":
            gamma, *beta = shapes.param_shapes
            layer.blobs = [rng.uniform(0.5, 1.5, gamma).astype(np.float32)] + [
                _normal(rng, shape, 0.1) for shape in beta
            ]
        else:
            layer.blobs = [
                _normal(rng, shape, math.sqrt(2.0 / max(1, math.prod(shape[1:]))))
                if len(shape) > 1
                else _normal(rng, shape, 0.1)
                for shape in shapes.param_shapes
            ]
    converter.write_caffemodel(net, path)
    return Path(path).stat().st_size


def _normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Make VmHWM restart from the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def measure(script: str | os.PathLike, approach: str, *args: str) -> dict[str, float]:
    """Run ``python <script> --child <approach> <args>`` and return its JSON result.

    The child reports ``seconds`` and ``peak_growth`` (bytes of peak RSS above what it
    held right before the measured phase, after its imports).
    """
    cmd = [sys.executable, str(script), "--child", approach, *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{approach} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_phase(run) -> dict[str, float]:
    """Time ``run()`` and measure this process's peak RSS growth over it; print as JSON.

    Growth is the peak RSS during the phase minus the RSS right before it. File pages of a
    memory map count once touched, so a zero-copy reader is not flattered.
    """
    before = _status_bytes("VmRSS") if _reset_peak_rss() else _status_bytes("VmHWM")
    start = time.perf_counter()
    keep = run()
    seconds = time.perf_counter() - start
    growth = _status_bytes("VmHWM") - before
    del keep
    result = {"seconds": seconds, "peak_growth": float(growth)}
    print(json.dumps(result))
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine_description() -> str:
    """nproc and CPU model, for RESULTS.md."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"
