"""Benchmark: CPU inference of a converted full-width ResNet-50, four ways.

Run: ``python benchmarks/bench_inference.py [--repeats N] [--seconds S] [--no-compile] [--keep]``

Converts Kaiming's ResNet-50 deploy net with random weights (``common.make_random_caffemodel``)
twice, as is and with ``fuse_bn=True``, loads the files with ``converter.load`` and measures
images/s at batch 1 and 16 for:

- ``eager``: the converted model as loaded (float32, NCHW);
- ``folded``: BatchNorm+Scale folded into the convs (``convert --fuse-bn``);
- ``channels_last``: the unfolded model and its input in ``torch.channels_last``;
- ``folded_channels_last``: both;
- ``compile``: ``torch.compile`` (inductor) of the folded, channels_last model.

Each variant runs in a fresh subprocess (one per round; rounds alternate the order), with
warm-up iterations first; images/s come from the median iteration time. Parity error of each
variant: ``max|ours - ref| / max|ref|`` on the fc1000 logits (the softmax is left out of every
variant, since probabilities hide differences) for the same 16 images, where ``ref`` is the
unfolded eager float32 model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from common import KAIMING, WORK_DIR, machine_description, make_random_caffemodel, median

PROTOTXT = KAIMING / "ResNet-50-deploy.prototxt"
VARIANTS = ["eager", "folded", "channels_last", "folded_channels_last", "compile"]
BATCHES = [1, 16]
CAFFEMODEL = WORK_DIR / "resnet50_inference.caffemodel"
PLAIN = WORK_DIR / "resnet50_inference.safetensors"
FOLDED = WORK_DIR / "resnet50_inference_folded.safetensors"
INPUT = WORK_DIR / "resnet50_inference_input.npy"
REFERENCE = WORK_DIR / "resnet50_inference_reference.npy"


def _logits_model(path: Path):
    """The converted model, without its softmax (parity is judged on the logits)."""
    import converter

    model = converter.load(path)
    model.softmax = None
    return model


def _child(variant: str, min_seconds: float) -> None:
    """Time one variant at every batch size, in this fresh process; print a JSON line."""
    import numpy as np
    import torch

    folded = variant in ("folded", "folded_channels_last", "compile")
    last = variant in ("channels_last", "folded_channels_last", "compile")
    model = _logits_model(FOLDED if folded else PLAIN)
    layout = torch.channels_last if last else torch.contiguous_format
    model = model.to(memory_format=layout)
    images = torch.from_numpy(np.load(INPUT))
    reference = np.load(REFERENCE)
    result: dict[str, dict[str, float]] = {}
    for batch in BATCHES:
        run = model
        if variant == "compile":
            torch._dynamo.reset()  # one static graph per batch size, compiled afresh
            run = torch.compile(model, dynamic=False)
        x = images[:batch].contiguous(memory_format=layout)
        with torch.no_grad():
            start = time.perf_counter()
            out = run(x)  # the first call compiles
            first = time.perf_counter() - start
            run(x)
            times: list[float] = []
            while len(times) < 3 or sum(times) < min_seconds:
                start = time.perf_counter()
                out = run(x)
                times.append(time.perf_counter() - start)
        ref = reference[:batch]
        error = float(np.abs(out.float().numpy() - ref).max() / np.abs(ref).max())
        result[str(batch)] = {
            "images_per_s": batch / statistics.median(times),
            "error": error,
            "first_call_s": first,
        }
    print(json.dumps(result))


def _prepare() -> int:
    """Caffemodel, the two converted files, the input images and the reference logits."""
    import numpy as np
    import torch

    import converter

    WORK_DIR.mkdir(exist_ok=True)
    size = make_random_caffemodel(PROTOTXT, CAFFEMODEL, seed=0)
    converter.convert(PROTOTXT, CAFFEMODEL, PLAIN)
    converter.convert(PROTOTXT, CAFFEMODEL, FOLDED, fuse_bn=True)
    rng = np.random.default_rng(1)
    # image-like values: Caffe's 0-255 BGR pixels minus a mean
    images = (rng.standard_normal((max(BATCHES), 3, 224, 224)) * 60).astype(np.float32)
    np.save(INPUT, images)
    with torch.no_grad():
        np.save(REFERENCE, _logits_model(PLAIN)(torch.from_numpy(images)).numpy())
    return size


def _measure(variant: str, min_seconds: float) -> dict[str, dict[str, float]]:
    import subprocess

    cmd = [sys.executable, __file__, "--child", variant, "--seconds", str(min_seconds)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  {variant} failed: {reason}")
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per batch")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", metavar="VARIANT")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.seconds)
        return 0

    import torch

    variants = [v for v in VARIANTS if not (args.no_compile and v == "compile")]
    size = _prepare()
    print(f"machine: {machine_description()}, torch {torch.__version__}")
    print(f"torch threads: {torch.get_num_threads()}; caffemodel {size / 1e6:.1f} MB")
    results: dict[str, list[dict[str, dict[str, float]]]] = {v: [] for v in variants}
    loads = [os.getloadavg()[0]]
    try:
        for round_index in range(args.repeats):
            order = variants if round_index % 2 == 0 else variants[::-1]
            for variant in order:
                measured = _measure(variant, args.seconds)
                if measured:
                    results[variant].append(measured)
            loads.append(os.getloadavg()[0])
            print(f"round {round_index + 1}/{args.repeats} done, load {loads[-1]:.2f}")
    finally:
        if not args.keep:
            for path in (CAFFEMODEL, PLAIN, FOLDED, INPUT, REFERENCE):
                path.unlink(missing_ok=True)

    print(
        f"\nmedians of {args.repeats} runs, fresh process per run; load average (1 min) "
        f"{min(loads):.1f}-{max(loads):.1f}\n"
    )
    head = " | ".join(f"batch {b} (img/s) | x eager" for b in BATCHES)
    print(f"| variant | {head} | parity error (rel, logits) | first call b{BATCHES[-1]} (s) |")
    print("|---|" + "--:|" * (2 * len(BATCHES) + 2))
    eager = {b: median([r[str(b)]["images_per_s"] for r in results["eager"]]) for b in BATCHES}
    failed = False
    for variant in variants:
        runs = results[variant]
        if not runs:
            print(f"| {variant} | failed |")
            failed = True
            continue
        cells = []
        for b in BATCHES:
            speeds = [r[str(b)]["images_per_s"] for r in runs]
            speed = median(speeds)
            cells.append(f"{speed:.2f} (best {max(speeds):.2f}) | {speed / eager[b]:.2f}")
        error = max(r[str(b)]["error"] for r in runs for b in BATCHES)
        first = median([r[str(BATCHES[-1])]["first_call_s"] for r in runs])
        print(f"| {variant} | {' | '.join(cells)} | {error:.1e} | {first:.2f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
