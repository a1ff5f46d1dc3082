"""Benchmark: the generated ResNet-50 model.py (``convert --format code``) against CaffeResNet.

Run: ``python benchmarks/bench_codegen.py [--net full|w8] [--rounds N] [--seconds S]``
(``--no-compile`` skips torch.compile).

``full``: Kaiming's ResNet-50 deploy net (full width) with random weights
(``common.make_random_caffemodel``); ``w8``: the bundled channels/8 ResNet-50
(tests/fixtures/resnet50_w8_calibrated), where per-layer Python overhead weighs more.
The net is converted twice, to safetensors (loaded by ``converter.load``: CaffeResNet) and
to a code folder (loaded by the generated ``model.load()``), and each model runs in a fresh
subprocess per round, eager and under ``torch.compile`` (inductor), at batch 1 and 16;
rounds alternate the order. images/s come from the median iteration time after warm-up;
the table gives generated / CaffeResNet per round, and the median of those ratios. Torch
runs one thread (``--threads``): on a machine shared with other work, a second thread
waiting for a busy core makes timings swing far more than the difference measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import KAIMING, REPO, WORK_DIR, machine_description, make_random_caffemodel

BATCHES = [1, 16]
MODELS = ["caffe_resnet", "generated"]


def _paths(net: str) -> dict[str, Path]:
    if net == "w8":
        folder = REPO / "tests" / "fixtures" / "resnet50_w8_calibrated"
        prototxt = folder / "resnet50_w8_calibrated.prototxt"
        caffemodel = folder / "resnet50_w8_calibrated.caffemodel"
    else:
        prototxt = KAIMING / "ResNet-50-deploy.prototxt"
        caffemodel = WORK_DIR / "resnet50_codegen.caffemodel"
    return {
        "prototxt": prototxt,
        "caffemodel": caffemodel,
        "safetensors": WORK_DIR / f"resnet50_{net}_codegen.safetensors",
        "code": WORK_DIR / f"resnet50_{net}_code",
    }


def _prepare(net: str) -> dict[str, Path]:
    import converter

    paths = _paths(net)
    WORK_DIR.mkdir(exist_ok=True)
    if net == "full" and not paths["caffemodel"].exists():
        make_random_caffemodel(paths["prototxt"], paths["caffemodel"])
    converter.convert(paths["prototxt"], paths["caffemodel"], paths["safetensors"])
    converter.convert(paths["prototxt"], paths["caffemodel"], paths["code"], format="code")
    return paths


def _child(model_name: str, compiled: bool, net: str, min_seconds: float, threads: int) -> None:
    """Time one model at every batch size in this fresh process; print one JSON line."""
    import torch

    torch.set_num_threads(threads)
    paths = _paths(net)
    if model_name == "generated":
        sys.path.insert(0, str(paths["code"]))
        import model as generated  # the folder's model.py: no converter import

        module = generated.load()
    else:
        import converter

        module = converter.load(paths["safetensors"])
    if compiled:
        module = torch.compile(module)
    result = {}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in BATCHES:
            x = torch.randn(batch, 3, 224, 224, generator=generator) * 50
            for _ in range(3 if compiled else 2):  # warm-up (and compilation)
                module(x)
            times: list[float] = []
            while sum(times) < min_seconds or len(times) < 5:
                start = time.perf_counter()
                module(x)
                times.append(time.perf_counter() - start)
            result[str(batch)] = batch / statistics.median(times)
    print(json.dumps(result))


def _measure(model_name: str, compiled: bool, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", model_name, "--net", args.net]
    cmd += ["--seconds", str(args.seconds), "--threads", str(args.threads)]
    cmd += ["--compiled"] if compiled else []
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{model_name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=["full", "w8"], default="full")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child")
    parser.add_argument("--compiled", action="store_true")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.compiled, args.net, args.seconds, args.threads)
        return
    _prepare(args.net)
    modes = [False] if args.no_compile else [False, True]
    print(
        f"# {machine_description()}; ResNet-50 ({args.net}), {args.rounds} rounds, "
        f"{args.threads} thread(s)"
    )
    ratios: dict[tuple[bool, int], list[float]] = {}
    for round_index in range(args.rounds):
        order = MODELS if round_index % 2 == 0 else MODELS[::-1]
        for compiled in modes:
            rates = {name: _measure(name, compiled, args) for name in order}
            for batch in BATCHES:
                base, ours = rates["caffe_resnet"][str(batch)], rates["generated"][str(batch)]
                ratios.setdefault((compiled, batch), []).append(ours / base)
                mode = "compile" if compiled else "eager"
                print(
                    f"round {round_index + 1} {mode:>7} batch {batch:>2}: CaffeResNet "
                    f"{base:8.1f} img/s, generated {ours:8.1f} img/s, ratio {ours / base:.3f}"
                )
    print("\n| mode | batch | generated / CaffeResNet (median of rounds) | rounds |")
    print("|---|---|---|---|")
    for (compiled, batch), values in sorted(ratios.items()):
        listed = ", ".join(f"{v:.3f}" for v in values)
        mode = "compile" if compiled else "eager"
        print(f"| {mode} | {batch} | {statistics.median(values):.3f} | {listed} |")


if __name__ == "__main__":
    main()
