"""GPU check: parity and throughput of converted ResNet-50 and ResNet-152 on CUDA.

Run on a machine with an NVIDIA GPU, from the repository root, as one command::

    python benchmarks/gpu_check.py            # writes $OUT/gpu_check.{md,json} (./gpu_results)
    python benchmarks/gpu_check.py --quick    # CPU smoke run: batch 1-2, ResNet-50, no compile

For each of Kaiming's ResNet-50 and ResNet-152 deploy nets it writes a caffemodel with random
weights (``common.make_random_caffemodel``), converts it with ``converter.convert`` (as is and
with ``fuse_bn=True``) and then:

- parity: the converted float32 model on the GPU against the float64 model on the CPU, on
  the fc1000 logits and a few intermediate blobs, error = ``max|ours - ref| / max|ref|``.
  With TF32 off the float32 error must be within 1e-5 (the check fails otherwise); with TF32
  on, with bf16 autocast, and for the BN-folded file, the error is reported;
- throughput in images/s at batch 64 and 256: float32 (TF32 off), TF32, bf16 autocast, each
  with NCHW or ``channels_last`` inputs and weights, the BN-folded model, and
  ``torch.compile`` (bf16, channels_last, folded; skipped when the time budget runs short).

Nothing in the package needs a GPU; this script only reports. It never raises: a missing
dependency, a missing GPU or a failing step is written into the results with its reason.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
FP32_TOLERANCE = 1e-5
# Blobs of both Kaiming nets (ResNet-50 and -152 name their first units of each stage alike).
PARITY_BLOBS = ["conv1", "res2a", "res3a", "res4a", "res5c", "pool5", "fc1000"]


class Results:
    """Everything measured so far, written to JSON and markdown after every step (a run cut
    short still leaves its results)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.data: dict = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "host_cpus": os.cpu_count(),
            "environment": {},
            "parity": [],
            "throughput": [],
            "problems": [],
            "verdict": "incomplete",
        }

    def problem(self, what: str, exc: BaseException | None = None) -> None:
        detail = f"{what}: {type(exc).__name__}: {exc}" if exc else what
        print(f"PROBLEM {detail}", flush=True)
        if exc is not None:
            traceback.print_exc()
        self.data["problems"].append(detail)
        self.save()

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "gpu_check.json").write_text(json.dumps(self.data, indent=2) + "\n")
        (self.out_dir / "gpu_check.md").write_text(self.markdown())

    def markdown(self) -> str:
        d, env = self.data, self.data["environment"]
        lines = [
            f"## GPU check ({env.get('device_name', 'no GPU')}, {d['date'][:10]})",
            "",
            f"- Device: {env.get('device_name', '-')}, torch {env.get('torch', '-')}, "
            f"CUDA {env.get('cuda', '-')}, cuDNN {env.get('cudnn', '-')}, "
            f"Python {d['python']}, {d['host_cpus']} host CPUs. Verdict: **{d['verdict']}**.",
        ]
        lines += [f"- Problem: {p}" for p in d["problems"]]
        if d["parity"]:
            lines += [
                "",
                "Parity against the float64 model on the CPU (error relative to max|ref|; "
                f"float32 with TF32 off must be <= {FP32_TOLERANCE:g}):",
                "",
                "| model | precision | worst blob | worst error | fc1000 error | pass |",
                "|---|---|---|--:|--:|---|",
            ]
            for p in d["parity"]:
                check = {True: "yes", False: "**NO**", None: "(reported)"}[p["pass"]]
                lines.append(
                    f"| {p['model']} | {p['precision']} | {p['worst_blob']} | "
                    f"{p['worst_error']:.2e} | {p['fc_error']:.2e} | {check} |"
                )
        if d["throughput"]:
            batches = sorted({t["batch"] for t in d["throughput"]})
            lines += [
                "",
                "Throughput (images/s, forward only, no_grad, synchronised):",
                "",
                "| model | config | " + " | ".join(f"batch {b}" for b in batches) + " |",
                "|---|---|" + "--:|" * len(batches),
            ]
            rows: dict[tuple[str, str], dict[int, str]] = {}
            for t in d["throughput"]:
                speed = t.get("images_per_s")
                cell = (
                    t.get("skipped", "") if speed is None else f"{speed:.{0 if speed > 99 else 2}f}"
                )
                if t.get("compile_s") is not None:
                    cell += f" (compile {t['compile_s']:.0f} s)"
                rows.setdefault((t["model"], t["config"]), {})[t["batch"]] = cell
            for (model, config), cells in rows.items():
                values = " | ".join(cells.get(b, "-") for b in batches)
                lines.append(f"| {model} | {config} | {values} |")
        return "\n".join(lines) + "\n"


def _environment(results: Results, quick: bool):
    """torch and the device, or None (with the reason recorded) when there is nothing to run."""
    env = results.data["environment"]
    try:
        import torch
    except Exception as exc:  # no torch, or a broken install
        results.problem("import torch failed", exc)
        return None
    env["torch"] = torch.__version__
    env["cuda"] = torch.version.cuda
    env["cuda_available"] = torch.cuda.is_available()
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {env['cuda_available']}"
    )
    if torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(0)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        device = "cuda"
    elif quick:
        env["device_name"] = f"CPU ({platform.processor() or platform.machine()}), quick mode"
        device = "cpu"
    else:
        results.problem("no CUDA device visible to torch (use --quick for a CPU smoke run)")
        return None
    try:
        sys.path.insert(0, str(REPO))
        sys.path.insert(0, str(BENCH_DIR))
        import common  # noqa: F401  (imports converter, numpy, protobuf, safetensors)

        import converter

        env["converter"] = converter.__version__
    except Exception as exc:
        results.problem("import converter failed (missing dependency?)", exc)
        return None
    results.save()
    return device


def _set_tf32(enabled: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def _autocast(device: str, dtype):
    """``torch.autocast`` to ``dtype``, or nothing when ``dtype`` is None."""
    import torch

    return torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _rel_error(ours, ref) -> float:
    import torch

    ours = ours.detach().to("cpu", torch.float64)
    return float((ours - ref).abs().max() / ref.abs().max())


def _parity(results: Results, name: str, files: dict, device: str, batch: int) -> None:
    """float32 (TF32 off / on), bf16 autocast and BN-folded float32 against float64 on CPU."""
    import torch

    import converter

    ref_model = converter.load(files["prototxt"], files["caffemodel"], dtype=torch.float64)
    names = [n for n in PARITY_BLOBS if n in ref_model.blob_taps]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 224, 224, generator=generator) * 60
    start = time.perf_counter()
    ref = converter.blobs(ref_model, x.double(), names)
    print(f"{name}: float64 reference on CPU in {time.perf_counter() - start:.1f} s", flush=True)
    del ref_model
    model = converter.load(files["converted"]).to(device)
    folded = converter.load(files["folded"]).to(device)
    cases = [("float32, TF32 off", model, False, None, names)]
    if device == "cuda":
        cases.append(("TF32 on", model, True, None, names))
    cases.append(("bf16 autocast", model, False, torch.bfloat16, names))
    cases.append(("float32 BN-folded, TF32 off", folded, False, None, ["fc1000"]))
    for precision, net, tf32, autocast, wanted in cases:
        try:
            _set_tf32(tf32)
            with _autocast(device, autocast):
                ours = converter.blobs(net, x.to(device), wanted)
            errors = {blob: _rel_error(ours[blob], ref[blob]) for blob in wanted}
        except Exception as exc:
            results.problem(f"{name} parity ({precision})", exc)
            continue
        worst = max(errors, key=errors.get)
        strict = precision == "float32, TF32 off"
        row = {
            "model": name,
            "precision": precision,
            "errors": errors,
            "worst_blob": worst,
            "worst_error": errors[worst],
            "fc_error": errors["fc1000"],
            "pass": (errors[worst] <= FP32_TOLERANCE) if strict else None,
        }
        results.data["parity"].append(row)
        print(f"{name} {precision}: worst {worst} {errors[worst]:.2e}", flush=True)
        results.save()
    _set_tf32(False)


def _time_forward(run, x, device: str, min_seconds: float, warmup: int) -> float:
    """Images/s of ``run(x)``: warm-up, then enough iterations for ``min_seconds``."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        run(x)
    sync()
    start = time.perf_counter()
    for _ in range(3):
        run(x)
    sync()
    estimate = (time.perf_counter() - start) / 3
    iterations = max(3, math.ceil(min_seconds / max(estimate, 1e-6)))
    start = time.perf_counter()
    for _ in range(iterations):
        run(x)
    sync()
    return x.shape[0] * iterations / (time.perf_counter() - start)


CONFIGS = [
    # name, folded file, channels_last, TF32, autocast dtype name, compile
    ("fp32", False, False, False, None, False),
    ("fp32 channels_last", False, True, False, None, False),
    ("tf32 channels_last", False, True, True, None, False),
    ("bf16", False, False, False, "bfloat16", False),
    ("bf16 channels_last", False, True, False, "bfloat16", False),
    ("bf16 channels_last, BN folded", True, True, False, "bfloat16", False),
    ("bf16 channels_last, BN folded, torch.compile", True, True, False, "bfloat16", True),
]


def _throughput(
    results: Results, name: str, files: dict, device: str, args, deadline: float
) -> None:
    import torch

    import converter

    compile_estimate = args.compile_estimate
    for config, folded, last, tf32, autocast, compiled in CONFIGS:
        if compiled and args.no_compile:
            continue
        layout = torch.channels_last if last else torch.contiguous_format
        model = converter.load(files["folded" if folded else "converted"]).to(device)
        model = model.to(memory_format=layout)
        dtype = getattr(torch, autocast) if autocast else None
        for batch in args.batches:
            row = {"model": name, "config": config, "batch": batch}
            left = deadline - time.monotonic()
            if left < (compile_estimate if compiled else 0) + 10:
                row["skipped"] = "skipped (time budget)"
                results.data["throughput"].append(row)
                continue
            try:
                _set_tf32(tf32)
                x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=layout)
                run = model
                if compiled:
                    torch._dynamo.reset()
                    run = torch.compile(model, dynamic=False)
                with torch.no_grad(), _autocast(device, dtype):
                    if compiled:
                        start = time.perf_counter()
                        run(x)
                        if device == "cuda":
                            torch.cuda.synchronize()
                        row["compile_s"] = time.perf_counter() - start
                        compile_estimate = max(compile_estimate, row["compile_s"])
                    row["images_per_s"] = _time_forward(run, x, device, args.seconds, args.warmup)
            except Exception as exc:
                results.problem(f"{name} {config} batch {batch}", exc)
                row["skipped"] = f"failed ({type(exc).__name__})"
            finally:
                _set_tf32(False)
            results.data["throughput"].append(row)
            shown = row.get("images_per_s")
            print(f"{name} {config} b{batch}: {shown and round(shown)} img/s", flush=True)
            results.save()
            x = run = None
            if device == "cuda":
                torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: tiny, no compile")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_results")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run")
    args = parser.parse_args()
    started = time.monotonic()
    deadline = started + args.budget
    if args.quick:
        args.models, args.batches, args.seconds, args.no_compile = [50], [1, 2], 0.3, True
        args.parity_batch, args.warmup = 1, 1
    else:
        args.models, args.batches, args.seconds, args.no_compile = [50, 152], [64, 256], 1.0, False
        args.parity_batch, args.warmup = 2, 3
    args.compile_estimate = 90.0  # inductor compile of a ResNet, first guess
    results = Results(Path(args.out))
    results.data["mode"] = "quick" if args.quick else "full"
    device = _environment(results, args.quick)
    if device is None:
        results.data["verdict"] = "not run"
        results.save()
        print(results.markdown())
        return 2
    from common import KAIMING, make_random_caffemodel

    import converter

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        for depth in args.models:
            name = f"ResNet-{depth}"
            files = {"prototxt": KAIMING / f"ResNet-{depth}-deploy.prototxt"}
            files["caffemodel"] = Path(work) / f"resnet{depth}.caffemodel"
            files["converted"] = Path(work) / f"resnet{depth}.safetensors"
            files["folded"] = Path(work) / f"resnet{depth}_folded.safetensors"
            try:
                make_random_caffemodel(files["prototxt"], files["caffemodel"], seed=depth)
                start = time.perf_counter()
                converter.convert(files["prototxt"], files["caffemodel"], files["converted"])
                converted_s = time.perf_counter() - start
                converter.convert(
                    files["prototxt"], files["caffemodel"], files["folded"], fuse_bn=True
                )
                results.data.setdefault("convert_s", {})[name] = round(converted_s, 3)
            except Exception as exc:
                results.problem(f"{name}: making or converting the model", exc)
                continue
            try:
                _parity(results, name, files, device, args.parity_batch)
            except Exception as exc:
                results.problem(f"{name} parity", exc)
            try:
                _throughput(results, name, files, device, args, deadline)
            except Exception as exc:
                results.problem(f"{name} throughput", exc)
    strict = [p["pass"] for p in results.data["parity"] if p["pass"] is not None]
    if not strict:
        results.data["verdict"] = "no parity result"
    elif all(strict):
        results.data["verdict"] = "float32 parity passed"
    else:
        results.data["verdict"] = "float32 parity FAILED"
    results.data["elapsed_s"] = round(time.monotonic() - started, 1)
    results.save()
    print(results.markdown())
    print(f"elapsed {results.data['elapsed_s']} s; results in {Path(args.out).resolve()}")
    return 0 if strict and all(strict) and not results.data["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
