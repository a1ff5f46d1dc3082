"""compare_blobs / ParityReport / plot_report: the verdict users read must name the right blob."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import load_case
from converter.errors import ConverterError
from converter.layers import ExactPart
from converter.net import read_net
from converter.parity import ParityReport, compare_blobs, plot_report

TOL = 1e-3


def make_blobs(seed: int = 0) -> tuple[dict[str, np.ndarray], list[str]]:
    """A small 'network' of blobs: conv-like 4-D blobs, then logits (N, classes)."""
    rng = np.random.default_rng(seed)
    blobs = {
        "data": rng.normal(0, 50, (2, 3, 8, 8)).astype(np.float32),
        "conv1": rng.normal(0, 5, (2, 4, 8, 8)).astype(np.float32),
        "res2a": rng.normal(0, 5, (2, 4, 4, 4)).astype(np.float32),
        "res3a": rng.normal(0, 5, (2, 8, 2, 2)).astype(np.float32),
        "fc": rng.normal(0, 3, (2, 10)).astype(np.float32),
    }
    return blobs, list(blobs)


def perturbed(blobs: dict, name: str, index: tuple, rel: float) -> dict:
    """A copy of ``blobs`` where one element of ``name`` moves by rel * max|blob|."""
    out = {k: v.copy() for k, v in blobs.items()}
    out[name][index] += rel * float(np.abs(blobs[name]).max())
    return out


def test_identical_blobs_pass_with_zero_error():
    ref, order = make_blobs()
    report = compare_blobs(ref, ref, order, TOL, reference_name="numpy float64")
    assert report.passed
    assert [row.name for row in report.rows] == order
    assert all(row.max_abs == 0 and row.rel == 0 for row in report.rows)
    assert all(row.cosine == pytest.approx(1.0) for row in report.rows)
    assert report.first_failure is None
    assert report.verdict() == "PASS: 5 blobs within 1e-03 of numpy float64"


def test_single_element_just_above_tolerance_fails_and_is_named_first():
    ref, order = make_blobs()
    ours = perturbed(ref, "res2a", (1, 2, 3, 0), 1.05 * TOL)
    ours = perturbed(ours, "fc", (0, 3), 0.5)  # a later failure must not be reported first
    report = compare_blobs(ours, ref, order, TOL)
    assert not report.passed
    assert report.first_failure.name == "res2a"
    row = report.rows[order.index("res2a")]
    assert row.rel == pytest.approx(1.05 * TOL, rel=1e-3)
    assert row.max_abs == pytest.approx(1.05 * TOL * np.abs(ref["res2a"]).max(), rel=1e-3)
    assert not row.passed
    assert [r.name for r in report.failures] == ["res2a", "fc"]
    assert report.rows[order.index("conv1")].passed


def test_error_just_below_tolerance_passes():
    ref, order = make_blobs()
    ours = perturbed(ref, "res3a", (0, 5, 1, 1), 0.95 * TOL)
    report = compare_blobs(ours, ref, order, TOL)
    assert report.passed
    assert report.rows[order.index("res3a")].rel == pytest.approx(0.95 * TOL, rel=1e-3)


def test_relative_error_uses_max_abs_of_reference_and_abs_error_for_zero_reference():
    ref = {"a": np.array([[-4.0, 2.0]]), "z": np.zeros((1, 3))}
    ours = {"a": np.array([[-4.0, 2.5]]), "z": np.array([[0.0, 2e-4, 0.0]])}
    report = compare_blobs(ours, ref, ["a", "z"], TOL)
    a, z = report.rows
    assert a.max_abs == pytest.approx(0.5) and a.rel == pytest.approx(0.5 / 4.0)
    assert z.rel == pytest.approx(2e-4) and z.passed  # all-zero reference: abs error
    assert z.cosine == 0.0  # one side is all zeros: no direction in common


def test_torch_tensors_on_our_side_and_precision_name():
    ref, order = make_blobs()
    ours = {k: torch.from_numpy(v.copy()) for k, v in ref.items()}
    ours["conv1"][0, 0, 0, 0] += 1.0
    report = compare_blobs(ours, ref, order, TOL)
    assert report.precision == "float32"
    assert report.first_failure.name == "conv1"
    double = compare_blobs({k: v.double() for k, v in ours.items()}, ref, order, 10.0)
    assert double.precision == "float64" and double.passed


def test_shape_mismatch_is_a_recorded_failure():
    ref, order = make_blobs()
    ours = dict(ref)
    ours["res2a"] = ref["res2a"][:, :3]
    report = compare_blobs(ours, ref, order, TOL)
    row = report.rows[order.index("res2a")]
    assert not row.passed and math.isnan(row.rel)
    assert row.shape == (2, 3, 4, 4) and row.reference_shape == (2, 4, 4, 4)
    assert report.first_failure is row
    assert "shape 2x3x4x4 vs reference 2x4x4x4" in report.verdict()
    assert report.rows[order.index("res3a")].passed  # later blobs are still compared


def test_nan_at_the_same_positions_on_both_sides_is_agreement():
    ref, order = make_blobs()
    ref = {k: v.copy() for k, v in ref.items()}
    ref["res2a"][0, 1, 2, 2] = np.nan  # Caffe's AVE pooling over an empty window
    ref["res2a"][1, 0, 0, 0] = -np.inf
    ours = {k: v.copy() for k, v in ref.items()}
    ours["res2a"][0, 0, 0, 0] += 1e-6
    report = compare_blobs(ours, ref, order, TOL)
    row = report.rows[order.index("res2a")]
    assert report.passed
    assert row.nonfinite_ours == row.nonfinite_reference == 2 and row.nonfinite_mismatch == 0
    assert math.isfinite(row.rel) and 0 < row.rel < TOL


@pytest.mark.parametrize("side", ["ours", "reference"])
def test_nan_on_one_side_only_fails_with_a_count(side):
    ref, order = make_blobs()
    bad = {k: v.copy() for k, v in ref.items()}
    bad["conv1"][0, 0, 1, 1] = np.nan
    bad["conv1"][1, 3, 2, 2] = np.inf
    ours, reference = (bad, ref) if side == "ours" else (ref, bad)
    report = compare_blobs(ours, reference, order, TOL)
    row = report.first_failure
    assert row.name == "conv1" and row.nonfinite_mismatch == 2
    counts = (row.nonfinite_ours, row.nonfinite_reference)
    assert counts == ((2, 0) if side == "ours" else (0, 2))
    assert row.rel == 0.0  # the finite values agree exactly; only the NaN/Inf fail it
    assert "NaN/Inf disagree at 2 positions" in report.verdict()


def test_opposite_infinities_disagree():
    ref = {"x": np.array([[np.inf, 1.0]])}
    ours = {"x": np.array([[-np.inf, 1.0]])}
    assert not compare_blobs(ours, ref, ["x"], TOL).passed


def test_top1_top5_agreement_per_sample():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 10))
    ours = logits.copy()
    ours[1, np.argsort(logits[1])[-2]] = logits[1].max() + 1  # sample 1: new top-1, same top-5
    ours[2, np.argsort(logits[2])[0]] = 100.0  # sample 2: the worst class jumps to the top
    report = compare_blobs({"fc": ours}, {"fc": logits}, ["fc"], TOL)
    assert report.topk.blob == "fc" and report.topk.samples == 4
    assert report.topk.top1 == pytest.approx(2 / 4)
    assert report.topk.top5 == pytest.approx(3 / 4)


def test_topk_uses_last_classifier_blob_including_1x1_spatial():
    ref, order = make_blobs()
    ref["pool5"] = np.random.default_rng(1).normal(size=(2, 6, 1, 1))
    order = [*order, "pool5"]
    report = compare_blobs(ref, ref, order, TOL)
    assert report.topk.blob == "pool5" and report.topk.top1 == 1.0
    explicit = compare_blobs(ref, ref, order, TOL, output="fc")
    assert explicit.topk.blob == "fc"
    assert compare_blobs(ref, ref, ["conv1", "res2a"], TOL).topk is None


def test_blobs_missing_on_one_side_are_listed_not_compared():
    ref, order = make_blobs()
    ours = {k: v for k, v in ref.items() if k != "res2a"}
    report = compare_blobs(ours, ref, [*order, "only_in_order"], TOL)
    assert [row.name for row in report.rows] == ["data", "conv1", "res3a", "fc"]
    assert report.skipped == ["res2a", "only_in_order"]
    assert report.passed


def test_nothing_compared_is_not_a_pass():
    report = compare_blobs({"a": np.ones(3)}, {"b": np.ones(3)}, ["a", "b"], TOL)
    assert not report.passed
    assert report.verdict().startswith("FAIL: no blob in common")


def test_format_marks_first_divergence_and_ends_with_verdict():
    ref, order = make_blobs()
    ours = perturbed(ref, "res2a", (0, 0, 0, 0), 0.32)
    ours = perturbed(ours, "res3a", (0, 0, 0, 0), 0.5)
    text = compare_blobs(ours, ref, order, TOL, reference_name="caffe").format()
    lines = text.splitlines()
    marked = [line for line in lines if "<-- first divergence" in line]
    assert len(marked) == 1 and marked[0].startswith("res2a ") and "FAIL" in marked[0]
    assert any(line.startswith("res3a ") and line.rstrip().endswith("FAIL") for line in lines)
    assert any(line.startswith("conv1 ") and line.rstrip().endswith("OK") for line in lines)
    assert lines[-1] == (
        "FAIL: first divergence at blob 'res2a' (rel 3.2e-01 > 1e-03); 2 of 5 blobs fail "
        "against caffe"
    )
    assert "after the last in-place layer" in text
    assert any(line.startswith("Top-1 agreement on 'fc'") for line in lines)
    assert max(len(line) for line in lines) <= 120


def test_format_of_a_pass():
    ref, order = make_blobs()
    text = compare_blobs(ref, ref, order, 1e-6, reference_name="numpy float64").format()
    assert text.splitlines()[-1] == "PASS: 5 blobs within 1e-06 of numpy float64"
    assert "first divergence" not in text
    assert "2x4x8x8" in text


def test_to_dict_is_json_serialisable_and_complete():
    ref, order = make_blobs()
    ours = dict(ref)
    ours["res2a"] = ref["res2a"][:1]  # NaN errors must become null, not invalid JSON
    ours["conv1"] = ref["conv1"].copy()
    ours["conv1"][0, 0, 0, 0] = np.nan
    report = compare_blobs(ours, ref, order, TOL, reference_name="opencv 4.14.0")
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["first_failure"] == "conv1"
    assert data["reference"] == "opencv 4.14.0" and data["tolerance"] == TOL
    assert data["compared"] == 5 and data["failed"] == 2
    assert [b["name"] for b in data["blobs"]] == order
    res2a = data["blobs"][order.index("res2a")]
    assert res2a["rel"] is None and res2a["shape"] == [1, 4, 4, 4]
    assert data["topk"]["blob"] == "fc" and data["topk"]["top1"] == 1.0


def test_report_on_a_real_fixture_names_the_corrupted_blob():
    """Real Caffe blobs against a copy with one element of res3b moved by 2x tolerance."""
    case = load_case("resnet18_w8")
    net = read_net(case.prototxt)
    ref = case.blobs
    ours = perturbed(ref, "res3b", (1, 5, 3, 3), 2 * case.tolerance)
    report = compare_blobs(ours, ref, net.blob_names(), case.tolerance, reference_name="caffe")
    assert [row.name for row in report.rows] == [n for n in net.blob_names() if n in ref]
    assert report.first_failure.name == "res3b"
    assert isinstance(report, ParityReport)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    ref, order = make_blobs()
    ours = perturbed(ref, "res2a", (0, 0, 0, 0), 0.1)
    ours["res3a"] = ref["res3a"][:1]
    report = compare_blobs(ours, ref, order, TOL)
    path = tmp_path / "parity.png"
    plot_report(report, path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["parity.png"]  # no temporary left over


def test_plot_rejects_unknown_format_and_missing_matplotlib(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    ref, order = make_blobs()
    report = compare_blobs(ref, ref, order, TOL)
    with pytest.raises(ConverterError, match="cannot plot"):
        plot_report(report, tmp_path / "parity.xyz")
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    with pytest.raises(ConverterError, match="matplotlib"):
        plot_report(report, tmp_path / "parity.png")
    assert list(tmp_path.iterdir()) == []


def test_exact_parts_are_equal_or_wrong_and_the_rest_has_its_own_scale():
    """ArgMax with out_max_val: channel 0 indices (up to 399), channel 1 values (about 1).
    An index one off fails at any tolerance; a value off by 1% of the values' scale fails
    at 1e-3, though that is far below 1e-3 of the whole blob's largest value (an index)."""
    rng = np.random.default_rng(1)
    ref = np.stack([rng.integers(0, 400, (2, 3, 1)), rng.normal(0, 1, (2, 3, 1))], axis=1)
    part = ExactPart("indices", axis=1, index=(0,))
    assert compare_blobs({"a": ref}, {"a": ref}, ["a"], TOL, exact={"a": part}).passed
    index_off = ref.copy()
    index_off[1, 0, 2, 0] += 1
    report = compare_blobs({"a": index_off}, {"a": ref}, ["a"], 10.0, exact={"a": part})
    (row,) = report.rows
    assert not report.passed and row.exact_mismatch == 1 and row.exact_count == 6
    assert row.rel == 0  # the values agree; the error is in an index
    assert "1 of 6 indices differ (compared exactly)" in report.verdict()
    assert compare_blobs({"a": index_off}, {"a": ref}, ["a"], 10.0).passed  # as floats: hidden
    value_off = ref.copy()
    value_off[0, 1, 1, 0] += 0.01 * np.abs(ref[:, 1]).max()  # 1% of the values' scale
    assert compare_blobs({"a": value_off}, {"a": ref}, ["a"], TOL).passed  # hidden by the index
    report = compare_blobs({"a": value_off}, {"a": ref}, ["a"], TOL, exact={"a": part})
    assert not report.passed and report.rows[0].exact_mismatch == 0
    assert report.rows[0].shape == (2, 2, 3, 1)  # the blob's shape, not the part's
    assert report.with_tolerance(0.1).passed and not report.with_tolerance(0.001).passed
    assert report.to_dict()["blobs"][0]["exact"] == "indices"


def test_agreeing_only_on_uninformative_blobs_is_inconclusive():
    """A comparison that cannot show an error is neither PASS nor FAIL: exit status 3."""
    ref, order = make_blobs()
    report = compare_blobs(ref, ref, ["fc"], TOL)
    report.uninformative = {"fc": "a saturated softmax"}
    assert (report.status, report.passed, report.exit_code) == ("inconclusive", False, 3)
    assert report.verdict().startswith("INCONCLUSIVE: 1 blob within 1e-03")
    assert "'fc' is a saturated softmax" in report.verdict()
    assert report.to_dict()["status"] == "inconclusive"
    # one blob that can show an error: PASS; an error anywhere: FAIL
    both = compare_blobs(ref, ref, order, TOL)
    both.uninformative = {"fc": "a saturated softmax"}
    assert (both.status, both.passed, both.exit_code) == ("pass", True, 0)
    wrong = compare_blobs(perturbed(ref, "fc", (0, 0), 0.5), ref, ["fc"], TOL)
    wrong.uninformative = {"fc": "a saturated softmax"}
    assert (wrong.status, wrong.exit_code) == ("fail", 1)


def test_counts_agree_with_their_nouns():
    """ "PASS: 1 blobs" read wrong; a failure counts its blobs the same way."""
    ref, order = make_blobs()
    one = {order[0]: ref[order[0]]}
    report = compare_blobs(one, one, order[:1], TOL)
    assert report.verdict().startswith("PASS: 1 blob within ")
    assert "Compared 1 blob in network order" in report.format()
    off = {order[0]: ref[order[0]] + 1.0}
    assert "; 1 of 1 blob fails against " in compare_blobs(off, one, order[:1], TOL).verdict()
