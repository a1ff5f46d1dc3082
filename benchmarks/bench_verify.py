"""Benchmark: ``caffe2torch verify --reference numpy`` end to end, time and memory.

Run: ``python benchmarks/bench_verify.py [--repeats N] [--keep]``
     ``python benchmarks/bench_verify.py --memory --before REV [--repeats N] [--keep]``

Default: Kaiming's ResNet-50 deploy net with random weights (``common.make_random_caffemodel``,
the project's own writer) in the git-ignored ``benchmarks/_work/``; the whole command,
``caffe2torch verify ResNet-50-deploy.prototxt model.caffemodel --reference numpy``, wall
clock in a fresh process each run (Python start and imports included, as a user sees it).
Target (issue 4): at most 15 s on the 2-core CI machine. The baseline printed beside it is
a process that only imports the package and torch: the fixed cost every command pays.

``--memory`` (issue 14): Kaiming's full-width ResNet-152 with random weights, a batch of 8
(``--input`` a random N(0, 50) .npy of 8x3x224x224), ``verify --reference numpy``: peak RSS
(``ru_maxrss`` of the child) and wall time of the code at ``--before`` (a git revision,
extracted with ``git archive`` into ``benchmarks/_work/`` and put first on PYTHONPATH) and
of this working tree, alternated in the same run. Targets: peak RSS at most 2.0 GB, wall
time no worse than before's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from common import (
    KAIMING,
    REPO,
    WORK_DIR,
    machine_description,
    make_random_caffemodel,
    median,
)

TARGET_SECONDS = 15.0
PROTOTXT = KAIMING / "ResNet-50-deploy.prototxt"
RESNET152 = KAIMING / "ResNet-152-deploy.prototxt"
TARGET_PEAK_BYTES = 2.0e9
BATCH = 8


def wall(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done


def time_resnet50(repeats: int, keep: bool) -> int:
    caffemodel = WORK_DIR / "resnet50_random.caffemodel"
    size = make_random_caffemodel(PROTOTXT, caffemodel)
    print(f"model: {caffemodel.name}, {size / 1e6:.1f} MB, Kaiming's ResNet-50 deploy net")
    verify = [sys.executable, "-m", "converter", "verify", str(PROTOTXT), str(caffemodel)]
    verify += ["--reference", "numpy"]
    imports = [sys.executable, "-c", "import torch, converter.verify"]
    times, baseline = [], []
    try:
        for run in range(repeats):
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
        if not keep:
            caffemodel.unlink(missing_ok=True)  # only our file: others may share _work/
    t, b = median(times), median(baseline)
    status = "met" if t <= TARGET_SECONDS else "missed"
    print(
        f"median of {len(times)}: verify {t:.2f} s (fastest {min(times):.2f} s), "
        f"imports {b:.2f} s ({t / b:.1f}x), target <= {TARGET_SECONDS:.0f} s: {status}"
    )
    return 0


# ----------------------------------------------------------------------------- --memory


def extract(revision: str) -> Path:
    """The tree of ``revision`` under ``benchmarks/_work/`` (made once)."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", revision],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    tree = WORK_DIR / f"tree-{commit}"
    if not (tree / "converter" / "__init__.py").is_file():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        tar_path = tree.with_suffix(".tar")
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tree, filter="data")
        tar_path.unlink()
    return tree


def run_measured(code: Path, argv: list[str]) -> tuple[float, int, str, int]:
    """(wall seconds, peak RSS bytes, last line of stdout, exit status) of
    ``python -m converter ARGV`` importing ``converter`` from ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    check = subprocess.run(
        [sys.executable, "-c", "import converter; print(converter.__file__)"],
        capture_output=True, text=True, env=env, cwd=WORK_DIR, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(check).is_relative_to(code):
        raise RuntimeError(f"{code}: python imports converter from {check} instead")
    out_path, err_path = WORK_DIR / "child.out", WORK_DIR / "child.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "converter", *argv],
            stdout=out, stderr=err, env=env, cwd=WORK_DIR,
        )  # fmt: skip
        # wait4 gives this child's own resource usage (its peak RSS), not all children's
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    lines = out_path.read_text().strip().splitlines() or err_path.read_text().strip().splitlines()
    return seconds, usage.ru_maxrss * 1024, (lines or [""])[-1], child.returncode


def memory(before: str, repeats: int, keep: bool) -> int:
    caffemodel = WORK_DIR / "resnet152_random.caffemodel"
    x = WORK_DIR / f"resnet152_input_{BATCH}.npy"
    size = make_random_caffemodel(RESNET152, caffemodel)
    np.save(x, np.random.default_rng(0).normal(0, 50, (BATCH, 3, 224, 224)).astype(np.float32))
    print(f"model: {caffemodel.name}, {size / 1e6:.1f} MB, Kaiming's ResNet-152, batch {BATCH}")
    argv = ["verify", str(RESNET152), str(caffemodel), "--reference", "numpy", "--input", str(x)]
    trees = {f"before ({before})": extract(before), "after (this tree)": REPO}
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in trees}
    try:
        for run in range(repeats):
            for name, code in trees.items():
                load = os.getloadavg()[0]
                seconds, peak, last, status = run_measured(code, argv)
                if status != 0:
                    print(f"{name}: exit {status}: {last}")
                    return 1
                results[name].append((seconds, peak))
                print(
                    f"run {run + 1} {name}: {seconds:.1f} s, peak RSS {peak / 1e9:.2f} GB, "
                    f"load {load:.1f}; {last}"
                )
    finally:
        if not keep:
            caffemodel.unlink(missing_ok=True)
            x.unlink(missing_ok=True)
    (old_name, old), (new_name, new) = results.items()
    old_t, new_t = median([r[0] for r in old]), median([r[0] for r in new])
    old_m, new_m = max(r[1] for r in old), max(r[1] for r in new)
    print(f"median wall: before {old_t:.1f} s, after {new_t:.1f} s ({new_t / old_t:.2f}x)")
    print(f"peak RSS: before {old_m / 1e9:.2f} GB, after {new_m / 1e9:.2f} GB")
    print(
        f"targets: peak RSS <= {TARGET_PEAK_BYTES / 1e9:.1f} GB: "
        f"{'met' if new_m <= TARGET_PEAK_BYTES else 'missed'}; wall no worse than before: "
        f"{'met' if new_t <= old_t else 'missed'}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep benchmarks/_work/ afterwards")
    parser.add_argument(
        "--memory", action="store_true", help="ResNet-152 batch 8, before and after: peak RSS"
    )
    parser.add_argument("--before", default="main", help="--memory: the revision to compare")
    args = parser.parse_args()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_description()}")
    if args.memory:
        return memory(args.before, args.repeats, args.keep)
    return time_resnet50(args.repeats, args.keep)


if __name__ == "__main__":
    sys.exit(main())
