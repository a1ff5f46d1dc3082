"""Benchmark: converting a ResNet-152-sized caffemodel to safetensors, against copying it.

Run: ``python benchmarks/bench_convert.py [--repeats N] [--keep]``

Makes a ~241 MB caffemodel from Kaiming's ResNet-152 prototxt with random weights, then
measures, each run in a fresh subprocess with a warm page cache (imports done before the
clock starts, including the modules ``convert`` imports on first use; ``os.sync()``
before each run so no run pays for the previous one's dirty pages):

- ``copy``: ``shutil.copyfile`` of the caffemodel (the baseline);
- ``convert``: ``converter.convert(prototxt, caffemodel, out.safetensors)``;
- ``convert_hash``: the same with ``hash_sources=True`` (the sources' sha256 in the metadata);
- ``load``: ``converter.load(out.safetensors)`` of the converted file, made beforehand
  (a model ready to run: structure on the meta device, the file's tensors assigned);
- ``plain``: read the bytes, ``caffe_pb2.NetParameter.FromString``, ``np.array(blob.data)``
  per blob, ``torch.save`` of the tensors;
- whole commands, start to exit: ``cp`` of the caffemodel and ``python -m converter convert``
  (interpreter start-up and imports included; torch is not imported);
- ``phases``: the steps inside ``convert`` run one after another, each timed: read
  (``read_net``), plan (recognition, state-dict arrays, metadata), write (safetensors),
  and the two that ``convert`` runs on other threads beside the write: screen (NaN/Inf
  check of every converted array) and hash (sha256 of both sources, ``--hash`` only).

Targets (issue 6): ``convert`` within 1.5x the copy's time, peak memory growth within 1.3x
the file size. Orders alternate between rounds; medians are shown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import (
    KAIMING,
    WORK_DIR,
    machine_description,
    make_random_caffemodel,
    measure,
    median,
    timed_phase,
)

PROTOTXT = KAIMING / "ResNet-152-deploy.prototxt"
APPROACHES = ["copy", "convert", "convert_hash", "plain", "load"]
PHASES = ["read", "plan", "write", "screen", "hash"]
SERIAL = ["read", "plan", "write"]  # convert runs screen and hash on other threads
TIME_TARGET, MEMORY_TARGET = 1.5, 1.3


def _child(approach: str, prototxt: str, caffemodel: str, output: str) -> None:
    """One measurement, in this (fresh) process; prints a JSON line."""
    import numpy as np

    if approach in ("plain", "load"):  # convert to safetensors does not import torch
        import torch

    import converter
    import converter.generic  # convert imports these on first use: not part of its time
    import converter.resnet
    from converter import caffe_pb2, conversion
    from converter.export import write_converted
    from converter.net import gc_paused

    def plain():
        with open(caffemodel, "rb") as handle:
            param = caffe_pb2.NetParameter.FromString(handle.read())
        state = {
            f"{layer.name}.{index}": torch.from_numpy(np.array(blob.data, dtype=np.float32))
            for layer in param.layer
            for index, blob in enumerate(layer.blobs)
        }
        torch.save(state, output)
        return param, state

    def phases() -> dict[str, float]:
        seconds = {}
        with gc_paused():  # as convert runs them
            start = time.perf_counter()
            net = converter.read_net(prototxt, caffemodel)
            seconds["read"] = time.perf_counter() - start
            start = time.perf_counter()
            plan = conversion.plan_conversion(net, generic=False)
            conversion.check_complete(plan, caffemodel)
            metadata = conversion.file_metadata(plan, net)
            seconds["plan"] = time.perf_counter() - start
            start = time.perf_counter()
            write_converted(plan.arrays, metadata, output)
            seconds["write"] = time.perf_counter() - start
        start = time.perf_counter()
        assert not conversion._non_finite_arrays(net, plan.arrays)
        seconds["screen"] = time.perf_counter() - start
        start = time.perf_counter()
        conversion._sha256(Path(prototxt)), conversion._sha256(Path(caffemodel))
        seconds["hash"] = time.perf_counter() - start
        return seconds

    runs = {
        "copy": lambda: shutil.copyfile(caffemodel, output),
        "convert": lambda: converter.convert(prototxt, caffemodel, output),
        "convert_hash": lambda: converter.convert(prototxt, caffemodel, output, hash_sources=True),
        "plain": plain,
        "load": lambda: converter.load(output),
    }
    try:
        if approach == "load":  # the file to load and the modules load uses: before the clock
            import converter.api
            import converter.resnet.model  # noqa: F401

            converter.convert(prototxt, caffemodel, output, format="safetensors")
        if approach == "phases":
            import json

            print(json.dumps(phases()))
        else:
            timed_phase(runs[approach])
    finally:
        Path(output).unlink(missing_ok=True)


def _command(argv: list[str], output: Path) -> float:
    """Wall time of a whole command, from process start to exit."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    output.unlink(missing_ok=True)
    return seconds


def _row(name: str, seconds: float, fastest: float, growth: float, base: float, size: int) -> str:
    return (
        f"| {name} | {seconds:.3f} | {seconds / base:.2f} | {fastest:.3f} | "
        f"{growth / 1e6:.1f} | {growth / size:.2f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the generated caffemodel")
    parser.add_argument("--child", nargs=4, metavar=("APPROACH", "PROTOTXT", "MODEL", "OUT"))
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return 0

    WORK_DIR.mkdir(exist_ok=True)
    caffemodel = WORK_DIR / "resnet152_random.caffemodel"
    output = WORK_DIR / "resnet152_converted.out"
    size = make_random_caffemodel(PROTOTXT, caffemodel, seed=0)
    with open(caffemodel, "rb") as handle:  # warm the page cache: every run is warm-cache
        handle.read()
    print(f"caffemodel: {caffemodel.name}, {size / 1e6:.1f} MB; {machine_description()}")

    runs = APPROACHES + ["phases"]
    results: dict[str, list[dict[str, float]]] = {a: [] for a in runs}
    commands = {
        "cp": ["cp", str(caffemodel), str(output)],
        "python -m converter convert": [
            sys.executable,
            "-m",
            "converter",
            "convert",
            str(PROTOTXT),
            str(caffemodel),
            "-o",
            str(output),
            "--format",
            "safetensors",
        ],
    }
    command_seconds: dict[str, list[float]] = {name: [] for name in commands}
    loads = [os.getloadavg()[0]]
    try:
        for round_index in range(args.repeats):
            order = runs if round_index % 2 == 0 else runs[::-1]
            for approach in order:
                os.sync()  # the previous run's written file must not throttle this one
                child_args = (str(PROTOTXT), str(caffemodel), str(output))
                results[approach].append(measure(__file__, approach, *child_args))
            for name, argv in commands.items():
                os.sync()
                command_seconds[name].append(_command(argv, output))
            loads.append(os.getloadavg()[0])
            print(f"round {round_index + 1}/{args.repeats} done, load {loads[-1]:.2f}")
    finally:
        output.unlink(missing_ok=True)
        if not args.keep:
            caffemodel.unlink(missing_ok=True)

    seconds = {a: median([r["seconds"] for r in results[a]]) for a in APPROACHES}
    fastest = {a: min(r["seconds"] for r in results[a]) for a in APPROACHES}
    growth = {a: median([r["peak_growth"] for r in results[a]]) for a in APPROACHES}
    phase = {p: median([r[p] for r in results["phases"]]) for p in PHASES}
    base = seconds["copy"]
    print(
        f"\nmedians of {args.repeats} runs each, warm page cache, fresh process per run; "
        f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}\n"
    )
    print("| approach | time (s) | x copy | min time (s) | peak growth (MB) | x file size |")
    print("|---|--:|--:|--:|--:|--:|")
    for a in APPROACHES:
        print(_row(a, seconds[a], fastest[a], growth[a], base, size))
    print("\n| phase (run one after another) | time (s) | x copy |")
    print("|---|--:|--:|")
    for p in PHASES:
        print(f"| {p} | {phase[p]:.3f} | {phase[p] / base:.2f} |")
    serial = sum(phase[p] for p in SERIAL)
    print(f"| read + plan + write | {serial:.3f} | {serial / base:.2f} |")

    print("\n| whole command (process start to exit) | time (s) | x cp | min time (s) |")
    print("|---|--:|--:|--:|")
    cp = median(command_seconds["cp"])
    for name, values in command_seconds.items():
        print(
            f"| `{name}` | {median(values):.3f} | {median(values) / cp:.2f} | {min(values):.3f} |"
        )

    verdicts = []
    for a in ("convert", "convert_hash"):
        t, m = seconds[a] / base, growth[a] / size
        ok = t <= TIME_TARGET and m <= MEMORY_TARGET
        verdicts.append(ok)
        print(
            f"\n{a}: {t:.2f}x copy time (target <= {TIME_TARGET}), peak growth {m:.2f}x file "
            f"size (target <= {MEMORY_TARGET}): {'met' if ok else 'MISSED'}"
        )
    print(f"plain: {seconds['plain'] / base:.2f}x copy time, {growth['plain'] / size:.2f}x size")
    return 0 if verdicts[0] else 1


if __name__ == "__main__":
    sys.exit(main())
