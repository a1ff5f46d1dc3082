"""Benchmark: ``caffe2torch verify`` on a full-width ResNet-50 against the NumPy reference.

Run: ``python benchmarks/bench_verify.py [--repeats N] [--keep]``

Writes Kaiming's ResNet-50 deploy net with random weights (``common.make_random_caffemodel``,
the project's own writer) into the git-ignored ``benchmarks/_work/``, then times the whole
command, ``caffe2torch verify ResNet-50-deploy.prototxt model.caffemodel --reference numpy``,
wall clock in a fresh process each run (Python start and imports included, as a user sees
it). Target (issue 4): at most 15 s on the 2-core CI machine. The baseline printed beside it
is a process that only imports the package and torch: the fixed cost every command pays.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import KAIMING, WORK_DIR, machine_description, make_random_caffemodel, median

TARGET_SECONDS = 15.0
PROTOTXT = KAIMING / "ResNet-50-deploy.prototxt"


def wall(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep benchmarks/_work/ afterwards")
    args = parser.parse_args()

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    caffemodel = WORK_DIR / "resnet50_random.caffemodel"
    size = make_random_caffemodel(PROTOTXT, caffemodel)
    print(f"machine: {machine_description()}")
    print(f"model: {caffemodel.name}, {size / 1e6:.1f} MB, Kaiming's ResNet-50 deploy net")

    verify = [sys.executable, "-m", "converter", "verify", str(PROTOTXT), str(caffemodel)]
    verify += ["--reference", "numpy"]
    imports = [sys.executable, "-c", "import torch, converter.verify"]
    times, baseline = [], []
    try:
        for run in range(args.repeats):
            seconds, done = wall(verify)
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
                print(f"verify exited with {done.returncode}")
                return 1
            times.append(seconds)
            baseline.append(wall(imports)[0])
            verdict = done.stdout.strip().splitlines()[-1]
            print(f"run {run + 1}: verify {seconds:.2f} s, imports alone {baseline[-1]:.2f} s")
        print(f"  {verdict}")
    finally:
        if not args.keep:
            caffemodel.unlink(missing_ok=True)  # only our file: others may share _work/
    t, b = median(times), median(baseline)
    status = "met" if t <= TARGET_SECONDS else "missed"
    print(
        f"median of {len(times)}: verify {t:.2f} s (fastest {min(times):.2f} s), "
        f"imports {b:.2f} s ({t / b:.1f}x), target <= {TARGET_SECONDS:.0f} s: {status}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
