"""Worst error of the standalone outputs against real Caffe, per fixture case, in one table.

    python benchmarks/standalone_table.py

For every case of tests/fixtures and ../shared/fixtures that caffe2torch converts: the
``--format code`` folder, the pt2 and the ONNX file, each run in a fresh process in which
``import converter`` fails (``tests/test_standalone.py`` does the running), and
``max|ours - caffe| / max|caffe|`` against Caffe's saved blobs, worst over the net's output
blobs (each format returns all of them), next to the case's tolerance. Not a test: a
report of what the acceptance tests check.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_standalone import LOCAL, _case, standalone_errors  # noqa: E402

import converter  # noqa: E402
from conftest import SHARED_FIXTURES, shared_cases  # noqa: E402
from converter.errors import ConverterError  # noqa: E402


def main() -> None:
    cases = list(LOCAL.values())
    for name in shared_cases():
        if (SHARED_FIXTURES / name / "case.json").is_file():
            cases.append(_case(name, SHARED_FIXTURES))
    print("| case | source | code | pt2 | onnx | tolerance |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        source = "shared" if SHARED_FIXTURES in case.prototxt.parents else "tests"
        try:
            converter.build_model(converter.read_net(case.prototxt, case.caffemodel))
        except ConverterError as exc:
            print(f"| {case.name} | {source} | not converted: {str(exc)[:60]}... | | | |")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            errors = standalone_errors(case, Path(tmp))
        cells = " | ".join(
            f"{errors[fmt]:.2e}" if isinstance(errors[fmt], float) else "refused"
            for fmt in ("code", "pt2", "onnx")
        )
        print(f"| {case.name} | {source} | {cells} | {case.tolerance:.1e} |", flush=True)


if __name__ == "__main__":
    main()
