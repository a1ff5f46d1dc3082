"""Blob-by-blob comparison of our model against a reference, and the report users read.

The measure is the fixtures' one: per blob, ``max|ours - ref| / max|ref|`` (the plain max
abs error when the reference is all zeros). Blobs are compared in network order so the
first failing blob is where the two computations start to diverge. A blob written in
place (BatchNorm, Scale, ReLU onto ``conv1``) holds its value after the last in-place layer.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConverterError, counted, noun
from converter.io.atomic import atomic_write
from converter.layers.registry import ExactPart

# How to get matplotlib, in words that work for an installed package and a source checkout.
PLOT_INSTALL = (
    "pip install matplotlib (or pip install 'caffe2torch[plot]'; in a source checkout, "
    "pip install -e '.[plot]')"
)

# verify's exit status when every compared blob agrees but none could show an error
INCONCLUSIVE_EXIT = 3

MEASURE = "max|ours - ref| / max|ref| per blob (max abs error where ref is all zeros)"


@dataclass
class BlobParity:
    """One compared blob. Errors are NaN when the shapes differ (nothing to compare)."""

    name: str
    shape: tuple[int, ...]
    reference_shape: tuple[int, ...]
    max_abs: float
    rel: float
    cosine: float
    nonfinite_ours: int
    nonfinite_reference: int
    nonfinite_mismatch: int
    passed: bool
    # integer-valued by the layer's meaning (ExactPart.what), compared exactly: how many of
    # those values there are and how many differ; the errors above are of the rest, if any
    exact: str = ""
    exact_count: int = 0
    exact_mismatch: int = 0
    # set (by verify) on a failing blob when the difference is one the reference itself
    # gives where its values tie to within the tolerance: why, in words; not a failure
    undecided: str = ""
    # of the NaN/Inf disagreements: NaN on our side only, and on the reference's only
    nan_ours_only: int = 0
    nan_reference_only: int = 0
    # set (by verify) on a failing blob whose only disagreement is a documented difference of
    # PyTorch's ops from Caffe's on NaN/Inf (the layer and the rule), at the blob the layer
    # writes or carried on to a blob after it: not a failure, no check either
    excused: str = ""

    @property
    def problem(self) -> str:
        """Why the blob failed, in words ("" when it passed)."""
        if self.shape != self.reference_shape:
            return f"shape {_shape(self.shape)} vs reference {_shape(self.reference_shape)}"
        if self.nonfinite_mismatch:
            return (
                f"NaN/Inf disagree at {self.nonfinite_mismatch} positions "
                f"(ours has {self.nonfinite_ours} non-finite values, "
                f"reference {self.nonfinite_reference})"
            )
        if self.exact_mismatch:
            return (
                f"{self.exact_mismatch} of {self.exact_count} {self.exact} differ (compared "
                "exactly)"
            )
        if not self.passed:
            return f"rel {self.rel:.1e}"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "reference_shape": list(self.reference_shape),
            "max_abs": _finite_or_none(self.max_abs),
            "rel": _finite_or_none(self.rel),
            "cosine": _finite_or_none(self.cosine),
            "nonfinite_ours": self.nonfinite_ours,
            "nonfinite_reference": self.nonfinite_reference,
            "nonfinite_mismatch": self.nonfinite_mismatch,
            "passed": self.passed,
            "problem": self.problem,
            "exact": self.exact or None,
            "exact_mismatch": self.exact_mismatch,
            "undecided": self.undecided or None,
            "excused": self.excused or None,
        }


@dataclass
class TopK:
    """Agreement of the predicted classes on the output blob, per sample."""

    blob: str
    samples: int
    top1: float  # fraction of samples whose argmax agrees
    top5: float  # fraction of samples whose top-5 classes (as a set) agree
    k: int = 5  # min(5, number of classes)


@dataclass
class ParityReport:
    """Result of ``compare_blobs``: rows in network order, verdict, ``format()``/``to_dict()``."""

    rows: list[BlobParity]
    tolerance: float
    reference: str
    precision: str
    skipped: list[str] = field(default_factory=list)
    topk: TopK | None = None
    # why this reference: "as asked", or what --reference auto skipped and why
    reference_choice: str = ""
    # set when the bar was raised above the default: by how much, why, what checks tighter
    tolerance_note: str = ""
    notes: list[str] = field(default_factory=list)  # what the numbers cannot tell
    input: dict[str, Any] | None = None  # the input used: file or random, shape, mean, scale
    # blob -> why agreeing on it cannot show an error on this input (a saturated softmax)
    uninformative: dict[str, str] = field(default_factory=dict)
    # set when the first divergence is a documented difference of PyTorch's ops from Caffe's
    # on NaN/Inf (the layer and the rule), not a wrong conversion; the rows it explains are
    # ``excused`` (verify._nonfinite_deviation). The verdict is INCONCLUSIVE only when no
    # other blob fails
    deviation: str = ""

    @property
    def first_failure(self) -> BlobParity | None:
        return next(iter(self.failures), None)

    @property
    def failures(self) -> list[BlobParity]:
        """The blobs that differ, less those whose difference ties decide (``undecided``)
        and those a known difference on NaN/Inf explains (``excused``)."""
        return [
            row for row in self.rows if not row.passed and not row.undecided and not row.excused
        ]

    @property
    def excused(self) -> list[BlobParity]:
        """The blobs that differ only by a known difference on NaN/Inf (``excused``)."""
        return [row for row in self.rows if not row.passed and row.excused]

    @property
    def undecided(self) -> list[BlobParity]:
        """The blobs that differ only where the reference's values tie (``undecided``)."""
        return [row for row in self.rows if not row.passed and row.undecided]

    @property
    def inconclusive(self) -> bool:
        """No blob fails, but either none of them could have shown an error, or some differ
        where ties decide, which neither side gets wrong, or by a known difference on NaN/Inf
        (``excused``), which says nothing of the conversion. Any other failing blob makes
        the verdict FAIL, whatever the rest."""
        return (
            bool(self.rows)
            and self.first_failure is None
            and (
                bool(self.undecided)
                or bool(self.excused)
                or all(row.name in self.uninformative for row in self.rows)
            )
        )

    @property
    def passed(self) -> bool:
        """True when at least one blob was compared, every compared blob passed, and at
        least one of them could have shown an error (not ``inconclusive``)."""
        return bool(self.rows) and self.first_failure is None and not self.inconclusive

    @property
    def status(self) -> str:
        """ "pass", "fail" or "inconclusive"."""
        return "inconclusive" if self.inconclusive else "pass" if self.passed else "fail"

    @property
    def exit_code(self) -> int:
        """The command line's exit status for this report: 0 pass, 1 fail, 3 inconclusive
        (2 is bad input, which never makes a report)."""
        return {"pass": 0, "fail": 1, "inconclusive": INCONCLUSIVE_EXIT}[self.status]

    def verdict(self) -> str:
        first = self.first_failure
        if not self.rows:
            return f"FAIL: no blob in common with {self.reference}, nothing was compared"
        raised = f" ({self.tolerance_note})" if self.tolerance_note else ""
        excused = self.excused
        if self.inconclusive and excused:
            return (
                f"INCONCLUSIVE: first divergence at blob '{excused[0].name}' only where values "
                f"are NaN/Inf ({counted(excused[0].nonfinite_mismatch, 'position')}; the finite "
                f"values agree within {_tol(self.tolerance)} of {self.reference}): "
                f"{excused[0].excused}. A known difference on non-finite values, not a wrong "
                "conversion; give finite input to judge the conversion"
            )
        if self.inconclusive and self.undecided:
            return self._undecided_verdict()
        if self.inconclusive:
            why = "; ".join(f"'{row.name}' is {self.uninformative[row.name]}" for row in self.rows)
            random = (self.input or {}).get("kind") == "random"
            return (
                f"INCONCLUSIVE: {counted(len(self.rows), 'blob')} within "
                f"{_tol(self.tolerance)} of {self.reference}, but agreeing on "
                f"{'it' if len(self.rows) == 1 else 'them'} cannot show an error on this "
                f"{'random ' if random else ''}input ({why}); "
                + (
                    "give --input with data the net was made for"
                    if random
                    else "give an --input on which it does not saturate"
                )
            )
        if first is None:
            return (
                f"PASS: {counted(len(self.rows), 'blob')} within {_tol(self.tolerance)} of "
                f"{self.reference}{raised}"
            )
        reason = first.problem
        if first.shape == first.reference_shape and not (
            first.nonfinite_mismatch or first.exact_mismatch
        ):
            reason = f"rel {first.rel:.1e} > {_tol(self.tolerance)}"
        failed = len(self.failures)
        known = (
            f" ({', '.join(repr(row.name) for row in excused)} "
            f"{noun(len(excused), 'differs', 'differ')} only by a known difference on NaN/Inf, "
            "not counted)"
            if excused
            else ""
        )
        return (
            f"FAIL: first divergence at blob '{first.name}' ({reason}); "
            f"{failed} of {counted(len(self.rows), 'blob')} {noun(failed, 'fails', 'fail')} "
            f"against {self.reference}{raised}{known}"
        )

    def _undecided_verdict(self) -> str:
        """INCONCLUSIVE because some blobs differ where the reference's values tie."""
        tied = self.undecided
        agree = len(self.rows) - len(tied)
        why = "; ".join(
            f"'{row.name}' differs ({row.problem}) only where {row.undecided}" for row in tied
        )
        random = (self.input or {}).get("kind") == "random"
        return (
            f"INCONCLUSIVE: {agree} of {counted(len(self.rows), 'blob')} within "
            f"{_tol(self.tolerance)} of {self.reference}; {why}; that is no error of the "
            f"conversion, and no check of {'it' if len(tied) == 1 else 'them'} either; "
            + (
                "random noise saturates the scores (in float32 to exactly 1.0): give --input "
                "with realistic data (an image with --mean, or a preprocessed .npy)"
                if random
                else "give an --input on which the scores do not tie"
            )
        )

    def with_tolerance(self, tolerance: float) -> ParityReport:
        """The same comparison judged against another bar (the errors do not change)."""
        rows = [dataclasses.replace(row, passed=_within(row, tolerance)) for row in self.rows]
        return dataclasses.replace(
            self,
            rows=rows,
            tolerance=float(tolerance),
            notes=list(self.notes),
            uninformative=dict(self.uninformative),
        )

    def reference_line(self) -> str:
        """The report's first line: which reference ran, and why it was that one."""
        choice = f" ({self.reference_choice})" if self.reference_choice else ""
        return f"Reference: {self.reference}{choice}"

    def input_line(self) -> str:
        """What the two sides were fed, in words ("" when not recorded)."""
        if not self.input:
            return ""
        each = self.input.get("inputs") or {"": self.input}
        said = [
            f"{name + ': ' if name else ''}{one['source']}, shape {_shape(one['shape'])}"
            for name, one in each.items()
        ]
        facts = [f"{key} {self.input[key]}" for key in ("mean", "scale") if self.input.get(key)]
        return "Input: " + "; ".join(said) + "".join(f", {fact}" for fact in facts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: no NaN/Inf (they become null), shapes as lists."""
        first = self.first_failure
        return {
            "reference": self.reference,
            "reference_choice": self.reference_choice,
            "passed": self.passed,
            "status": self.status,
            "verdict": self.verdict(),
            "input": None if self.input is None else dict(self.input),
            "precision": self.precision,
            "tolerance": self.tolerance,
            "tolerance_note": self.tolerance_note,
            "notes": list(self.notes),
            "measure": MEASURE,
            "compared": len(self.rows),
            "failed": len(self.failures),
            "first_failure": first.name if first else None,
            "skipped": list(self.skipped),
            "uninformative": dict(self.uninformative),
            "deviation": self.deviation or None,
            "topk": None if self.topk is None else vars(self.topk).copy(),
            "blobs": [row.to_dict() for row in self.rows],
        }

    def format(self) -> str:
        """A table for a terminal (about 90 columns unless blob names are long)."""
        name_width = min(max([4, *(len(row.name) for row in self.rows)]), 32)
        shape_width = min(max([5, *(len(_shape(row.shape)) for row in self.rows)]), 18)
        lines = [
            self.reference_line(),
            f"Parity of ours ({self.precision}) against it, tolerance {_tol(self.tolerance)}",
            *filter(None, [self.input_line()]),
            f"Measure: {MEASURE}.",
            f"Compared {counted(len(self.rows), 'blob')} in network order (a blob written in "
            "place: its value after the last in-place layer).",
        ]
        exact = [f"'{row.name}' ({row.exact})" for row in self.rows if row.exact]
        if exact:
            lines.append(
                "Compared exactly (integers by their layer's meaning; the tolerance is for the "
                "rest of the blob): " + ", ".join(exact[:6]) + (", ..." if len(exact) > 6 else "")
            )
        if self.skipped:
            shown = ", ".join(self.skipped[:6]) + (", ..." if len(self.skipped) > 6 else "")
            lines.append(f"Not compared (missing on one side): {len(self.skipped)} ({shown})")
        header = (
            f"{'blob':<{name_width}}  {'shape':<{shape_width}}  {'max abs err':>11}  "
            f"{'rel err':>9}  {'cosine':>9}  result"
        )
        lines += ["", header, "-" * len(header)]
        first = self.first_failure
        for row in self.rows:
            line = (
                f"{row.name:<{name_width}}  {_shape(row.shape):<{shape_width}}  "
                f"{_num(row.max_abs, '.2e'):>11}  {_num(row.rel, '.2e'):>9}  "
                f"{_num(row.cosine, '.6f'):>9}  {_result(row)}"
            )
            if row is first:
                line += "  <-- first divergence"
            lines.append(line)
            if not row.passed and row.problem and not row.problem.startswith("rel "):
                lines.append(f"{'':<{name_width}}  ^ {row.problem}")
            if not row.passed and row.undecided:
                lines.append(f"{'':<{name_width}}  ^ only where {row.undecided}")
            if not row.passed and row.excused:
                lines.append(f"{'':<{name_width}}  ^ a known difference on NaN/Inf: {row.excused}")
        lines.append("")
        if self.topk is not None:
            t = self.topk
            lines.append(
                f"Top-1 agreement on '{t.blob}': {t.top1:.0%} of {t.samples} samples; "
                f"top-{t.k} (same set of classes): {t.top5:.0%}"
            )
        lines += [f"Note: {note}" for note in self.notes]
        lines.append(self.verdict())
        return "\n".join(lines)


# ----------------------------------------------------------------------------- comparison


def compare_blobs(
    ours: Mapping[str, Any],
    reference: Mapping[str, np.ndarray],
    order: Sequence[str],
    tolerance: float,
    *,
    reference_name: str = "reference",
    precision: str | None = None,
    output: str | None = None,
    exact: Mapping[str, ExactPart] | None = None,
    classes: Collection[str] | None = None,
) -> ParityReport:
    """Compare every blob present on both sides, in ``order`` (network order).

    ``ours`` may hold NumPy arrays or torch tensors. ``output`` is the blob used for the
    top-1/top-5 line; by default the last compared blob shaped (N, classes) or
    (N, classes, 1, 1). ``classes``, when given, names the blobs that hold class scores
    (``verify``: Softmax outputs over the class axis): no top-k line for any other blob,
    whatever its shape (a regression output's argmax means nothing). ``precision``
    defaults to the dtype of our first blob. ``exact`` (blob -> ExactPart,
    ``converter.layers.registry.exact_blobs``) names the blobs, or parts of blobs, that
    must be equal: integers by their layer's meaning (indices, labels).
    """
    comparison = Comparison(order, tolerance, output, exact, classes)
    for name in order:
        if name in ours and name in reference:
            comparison.add(name, ours[name], reference[name])
    return comparison.report(reference_name, precision)


class Comparison:
    """``compare_blobs`` one pair at a time, in any order: each pair is compared when it is
    added and only its row is kept (plus the small class-score blobs the top-k line needs),
    so the caller can let go of both blobs at once. ``report()`` puts the rows in ``order``.
    """

    def __init__(
        self,
        order: Sequence[str],
        tolerance: float,
        output: str | None = None,
        exact: Mapping[str, ExactPart] | None = None,
        classes: Collection[str] | None = None,
    ):
        self.order = list(order)
        self.tolerance = float(tolerance)
        self.output = output
        self.exact = dict(exact or {})
        self.classes = None if classes is None else set(classes)
        self.rows: dict[str, BlobParity] = {}
        self.scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # (ours, ref), float64
        self.precision: str | None = None

    def add(self, name: str, ours: Any, reference: Any) -> BlobParity:
        """Compare one blob (a NumPy array or torch tensor on our side) and keep its row."""
        if self.precision is None:
            self.precision = _dtype_name(ours)
        ours = _as_float64(ours)
        row = _compare_one(name, ours, reference, self.tolerance, self.exact.get(name))
        self.rows[name] = row
        scores = self.classes is None or name in self.classes
        if row.shape == row.reference_shape and _classes(row.shape) and scores:
            if self.output is None or name == self.output:
                self.scores[name] = (ours, np.asarray(reference, dtype=np.float64))
        return row

    def report(self, reference_name: str = "reference", precision: str | None = None):
        """The ParityReport of every pair added, rows in network order."""
        rows = [self.rows[name] for name in self.order if name in self.rows]
        skipped = [name for name in self.order if name not in self.rows]
        ours = {name: pair[0] for name, pair in self.scores.items()}
        reference = {name: pair[1] for name, pair in self.scores.items()}
        return ParityReport(
            rows=rows,
            tolerance=self.tolerance,
            reference=reference_name,
            precision=precision or self.precision or "unknown",
            skipped=skipped,
            topk=_topk(rows, ours, reference, self.output),
        )


def _compare_one(
    name: str, ours: np.ndarray, ref: Any, tolerance: float, exact: ExactPart | None = None
) -> BlobParity:
    ref = np.asarray(ref, dtype=np.float64)
    shape, reference_shape = ours.shape, ref.shape
    if shape != reference_shape:
        nan = math.nan
        return BlobParity(
            name, shape, reference_shape, nan, nan, nan,
            int(np.count_nonzero(~np.isfinite(ours))), int(np.count_nonzero(~np.isfinite(ref))),
            0, False,
        )  # fmt: skip
    counts = {}
    if exact is not None:
        whole, exact_ours, exact_ref, rest_ours, rest_ref = _split_exact(exact, ours, ref)
        counts = {
            "exact": exact.what,
            "exact_count": int(exact_ours.size),
            # NaN never equals NaN: an integer position holding one differs
            "exact_mismatch": int(np.count_nonzero(exact_ours != exact_ref)),
        }
        if not whole:  # the errors shown are those of the rest, the tolerance's part
            ours, ref = rest_ours, rest_ref
    row = BlobParity(name, shape, reference_shape, *_errors(ours, ref), False, **counts)
    if row.nonfinite_mismatch:  # which side's NaN: tells a known op difference (verify)
        nan_ours, nan_ref = np.isnan(ours), np.isnan(ref)
        row.nan_ours_only = int(np.count_nonzero(nan_ours & ~nan_ref))
        row.nan_reference_only = int(np.count_nonzero(nan_ref & ~nan_ours))
    return dataclasses.replace(row, passed=_within(row, tolerance))


def _split_exact(exact: ExactPart, ours: np.ndarray, ref: np.ndarray):
    """(whole, integer part of ours, of ref, rest of ours, of ref) by ``exact``."""
    if exact.axis is None or ours.ndim == 0:
        return True, ours, ref, ours[:0], ref[:0]
    axis = exact.axis % ours.ndim
    index = [i for i in exact.index if i < ours.shape[axis]]
    rest = [i for i in range(ours.shape[axis]) if i not in index]
    return (
        not rest,
        np.take(ours, index, axis=axis),
        np.take(ref, index, axis=axis),
        np.take(ours, rest, axis=axis),
        np.take(ref, rest, axis=axis),
    )


def _errors(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float, float, int, int, int]:
    """(max_abs, rel, cosine, non-finite in ours, in ref, non-finite mismatches)."""
    nonfinite_ours = int(np.count_nonzero(~np.isfinite(ours)))
    nonfinite_ref = int(np.count_nonzero(~np.isfinite(ref)))
    if nonfinite_ours == 0 and nonfinite_ref == 0:  # the usual case: no masking copies
        mismatch, a, b = 0, ours.reshape(-1), ref.reshape(-1)
    else:
        finite = np.isfinite(ours) & np.isfinite(ref)
        # Non-finite values agree only where both sides hold the same one (NaN/NaN, +Inf/+Inf).
        same_nonfinite = (np.isnan(ours) & np.isnan(ref)) | (~finite & (ours == ref))
        mismatch = int(np.count_nonzero(~finite & ~same_nonfinite))
        a, b = ours[finite], ref[finite]
    max_abs = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    rel = max_abs / scale if scale > 0 else max_abs
    # Plain NumPy reductions, not BLAS (np.linalg.norm, np.dot): verify compares between
    # torch's ops, and BLAS threads waking up there compete with torch's for the cores.
    norm_a, norm_b = math.sqrt(float(np.sum(a * a))), math.sqrt(float(np.sum(b * b)))
    if norm_a == 0 and norm_b == 0:
        cosine = 1.0
    elif norm_a == 0 or norm_b == 0:
        cosine = 0.0
    else:
        cosine = float(np.sum(a * b)) / (norm_a * norm_b)
    return max_abs, rel, cosine, nonfinite_ours, nonfinite_ref, mismatch


def _within(row: BlobParity, tolerance: float) -> bool:
    """The verdict on one blob of equal shapes: every integer-valued position equal, the
    NaN/Inf in the same places, the rest within ``tolerance``."""
    return row.exact_mismatch == 0 and row.nonfinite_mismatch == 0 and row.rel <= tolerance


def _topk(
    rows: list[BlobParity],
    ours: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    output: str | None,
) -> TopK | None:
    """Class agreement on the output blob: (N, C) or (N, C, 1, 1), ranked along C."""
    by_name = {row.name: row for row in rows}
    if output is None:
        candidates = [r.name for r in rows if r.name in ours]  # (N, C) blobs of class scores
        if not candidates:
            return None
        output = candidates[-1]
    row = by_name.get(output)
    if (
        row is None
        or output not in ours
        or row.shape != row.reference_shape
        or not _classes(row.shape)
    ):
        return None
    n, classes = row.shape[0], row.shape[1]
    a = ours[output].reshape(n, classes)
    b = np.asarray(reference[output], dtype=np.float64).reshape(n, classes)
    k = min(5, classes)
    top1 = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    rank_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
    rank_b = np.argsort(-b, axis=1, kind="stable")[:, :k]
    top5 = float(np.mean([set(x) == set(y) for x, y in zip(rank_a, rank_b)]))
    return TopK(blob=output, samples=n, top1=top1, top5=top5, k=k)


def _classes(shape: tuple[int, ...]) -> bool:
    return (len(shape) == 2 and shape[1] > 1) or (
        len(shape) == 4 and shape[1] > 1 and shape[2:] == (1, 1)
    )


def _as_float64(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; avoids importing torch here
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _dtype_name(value: Any) -> str:
    return str(getattr(value, "dtype", "unknown")).removeprefix("torch.")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _result(row: BlobParity) -> str:
    """The table's verdict on one blob."""
    return "OK" if row.passed else "TIED" if row.undecided else "NaN/Inf" if row.excused else "FAIL"


def _num(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def _tol(value: float) -> str:
    """1e-06, 2.1e-05, 3.6e-03: short and exact for the usual tolerances."""
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


# ----------------------------------------------------------------------------- plot


def plot_format(path: str | os.PathLike) -> str:
    """The format a plot at ``path`` is drawn in (its suffix; png without one). ConverterError
    when matplotlib is missing or fails to import, or cannot draw that format: checked before
    a verification runs, not after."""
    try:
        import matplotlib.figure  # noqa: F401  (what plot_report draws on)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except Exception as exc:  # missing, or installed but broken (a part built for another NumPy)
        if importlib.util.find_spec("matplotlib") is None:
            raise ConverterError(f"{path}: --plot needs matplotlib; {PLOT_INSTALL}") from None
        raise ConverterError(
            f"{path}: --plot: matplotlib fails to import ({type(exc).__name__}: {exc}); "
            f"{PLOT_INSTALL}"
        ) from None
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    if fmt not in FigureCanvasAgg.get_supported_filetypes():
        raise ConverterError(f"{path}: cannot plot to a '.{fmt}' file; use .png, .svg or .pdf")
    return fmt


def plot_report(report: ParityReport, path: str | os.PathLike) -> None:
    """Relative error of each blob along network depth (log scale), tolerance as a line.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change). The file
    format follows the suffix (png, svg, pdf); the write is atomic.
    """
    fmt = plot_format(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report.rows
    fig = Figure(figsize=(max(8.0, min(20.0, 0.06 * len(rows) + 6)), 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = [r.rel for r in rows if math.isfinite(r.rel) and r.rel > 0]
    floor = min([*finite, report.tolerance]) / 10
    top = max([*finite, report.tolerance]) * 10
    depth = np.arange(len(rows))
    values = np.array([r.rel if math.isfinite(r.rel) else top for r in rows], dtype=float)
    values = np.maximum(values, floor)  # exact zeros sit on the floor of the log axis
    ok = np.array([r.passed for r in rows], dtype=bool)
    no_number = np.array([not math.isfinite(r.rel) for r in rows], dtype=bool)
    ax.plot(depth, values, color="0.75", linewidth=0.8, zorder=1)
    exact = ok & np.array([r.rel == 0 for r in rows], dtype=bool)
    close = ok & ~exact
    ax.scatter(depth[close], values[close], s=14, color="tab:blue", label="within tolerance")
    if exact.any():
        ax.scatter(
            depth[exact], values[exact], s=14, facecolors="none", edgecolors="tab:blue",
            label="exact (0, drawn at the bottom)",
        )  # fmt: skip
    tied = ~ok & np.array([bool(r.undecided) for r in rows], dtype=bool)
    if tied.any():
        ax.scatter(
            depth[tied], values[tied], s=36, color="tab:orange", zorder=3,
            label="differs where the reference's scores tie (inconclusive)",
        )  # fmt: skip
    bad = ~ok & ~no_number & ~tied
    if bad.any():
        ax.scatter(depth[bad], values[bad], s=36, color="tab:red", label="failing", zorder=3)
    if no_number.any():
        ax.scatter(
            depth[no_number], values[no_number], s=50, marker="x", color="tab:red",
            label="shape mismatch", zorder=3,
        )  # fmt: skip
    ax.axhline(report.tolerance, color="tab:red", linestyle="--", linewidth=1,
               label=f"tolerance {_tol(report.tolerance)}")  # fmt: skip
    first = report.first_failure
    if first is not None:
        index = rows.index(first)
        ax.annotate(
            f"first divergence: {first.name}", (index, values[index]),
            xytext=(10, 12), textcoords="offset points", fontsize=8, color="tab:red",
            arrowprops={"arrowstyle": "->", "color": "tab:red"},
        )  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, top * 2)
    ax.set_xlabel("blob (network order)")
    ax.set_ylabel("max|ours - ref| / max|ref|")
    verdict = report.status.upper()
    ax.set_title(f"{verdict}: ours ({report.precision}) vs {report.reference}", fontsize=10)
    if rows:
        step = max(1, math.ceil(len(rows) / 40))
        ticks = list(range(0, len(rows), step))
        ax.set_xticks(ticks)
        ax.set_xticklabels([rows[i].name for i in ticks], rotation=90, fontsize=6)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, format=fmt)


# ----------------------------------------------------------------------------- what a blob says

SATURATION = 1e-3  # a softmax row whose largest value is within this of 1 is one-hot


def saturated_share(values: np.ndarray, axis: int = 1) -> float:
    """Share of the rows of a softmax output (rows along ``axis``) that are one-hot to within
    ``SATURATION``; 0.0 for an empty blob. Such rows agree between any two implementations
    that agree on the argmax, so comparing them says little about the rest of the net."""
    values = np.asarray(values)
    if values.size == 0 or values.ndim == 0:
        return 0.0
    peak = np.max(np.moveaxis(values, axis, -1), axis=-1)
    return float(np.mean(peak >= 1 - SATURATION))
