"""BVLC master's deploy-time layers (Crop, ELU, Exp, Log, BNLL, Threshold, ArgMax, Reduction,
Tile, MVN, Embed, Parameter, SPP, BatchReindex, Silence, Clip, Swish) through the generic
module and the NumPy executor: real Caffe's numbers (``bvlc_layers``) where Caffe ran them,
their formulas where it could not (Clip and Swish are not in that Caffe build).

The whole-fixture comparisons (every blob within ``tolerance_rel``, ``inspect --json``
against Caffe's layer table, ``verify`` against the saved blobs) run with the other edge cases
(``EDGE_CASES`` in conftest); here: what those cannot show.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_case
from converter import ConverterError, read_net
from converter.executor import run_reference
from converter.generic import CaffeGraph
from converter.io.prototxt import parse_prototxt
from converter.net import net_from_param

# Blobs holding integers (indices, 0/1): they must equal Caffe's exactly.
INTEGER_BLOBS = ["threshold", "argmax_c", "ids", "perm", "reindex", "spp_max", "crop_multi"]


def net_from_text(text: str, shape=(2, 3, 4, 5)):
    dims = " ".join(f"dim: {d}" for d in shape)
    head = (
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
    )
    return net_from_param(parse_prototxt(head + text, "tiny.prototxt"), "tiny.prototxt")


def both_sides(net, x: np.ndarray) -> tuple[dict, dict, dict]:
    """Blobs from the float32 module, the float64 module and the float64 executor."""
    model = CaffeGraph.from_net(net)
    with torch.no_grad():
        ours32 = {k: v.numpy() for k, v in model.forward_blobs(torch.from_numpy(x)).items()}
        model64 = model.double()
        ours64 = {
            k: v.numpy() for k, v in model64.forward_blobs(torch.from_numpy(x).double()).items()
        }
    return ours32, ours64, run_reference(net, x)


@pytest.fixture(scope="module")
def bvlc():
    case = load_case("bvlc_layers")
    net = read_net(case.prototxt, case.caffemodel)
    return case, both_sides(net, case.input)


@pytest.mark.parametrize("name", INTEGER_BLOBS)
def test_integer_blobs_equal_caffe_exactly(bvlc, name):
    case, sides = bvlc
    for ours in sides:
        np.testing.assert_array_equal(ours[name], case.blobs[name])


def test_argmax_indices_and_values_layout(bvlc):
    """Flattened ArgMax with out_max_val: [:, 0] indices (exact), [:, 1] values."""
    case, sides = bvlc
    want = case.blobs["argmax_flat"]
    for ours in sides:
        np.testing.assert_array_equal(ours["argmax_flat"][:, 0], want[:, 0])
        np.testing.assert_allclose(ours["argmax_flat"][:, 1], want[:, 1], rtol=1e-6)
    # the values are those found at the indices in the crop it searched
    crop = case.blobs["crop_multi"].reshape(2, -1)
    picked = np.take_along_axis(crop, want[:, 0, :, 0].astype(int), axis=1)
    np.testing.assert_array_equal(picked, want[:, 1, :, 0])


def test_silence_consumes_its_bottom():
    """slice_w1 feeds only the Silence layer: it is a blob of the net, not an output."""
    case = load_case("bvlc_layers")
    net = read_net(case.prototxt, case.caffemodel)
    assert "slice_w1" in net.blob_names() and "slice_w1" not in net.outputs()
    assert CaffeGraph.from_net(net).output_name == net.outputs_by_production()[-1] == "flat_2e"


def test_argmax_ties_go_to_the_larger_index():
    """std::partial_sort with std::greater on (value, index): equal values, larger index
    first. ReLU outputs make such ties common in segmentation nets."""
    net = net_from_text(
        'layer { name: "c" type: "ArgMax" bottom: "data" top: "c" '
        "argmax_param { axis: 1 top_k: 3 } }\n"
        'layer { name: "f" type: "ArgMax" bottom: "data" top: "f" argmax_param { top_k: 4 } }\n',
        shape=(1, 4, 1, 2),
    )
    x = np.array([[[[1.0, 0.0]], [[2.0, 0.0]], [[2.0, 0.0]], [[1.0, 0.0]]]], np.float32)
    for ours in both_sides(net, x):
        np.testing.assert_array_equal(ours["c"][0, :, 0, 0], [2, 1, 3])
        np.testing.assert_array_equal(ours["c"][0, :, 0, 1], [3, 2, 1])
        # flattened: values 1 0 2 0 2 0 1 0 at indices 0..7
        np.testing.assert_array_equal(ours["f"].reshape(-1), [4, 2, 6, 0])


def test_clip_and_swish_follow_their_formulas():
    """Clip (field 148) and Swish (field 147) are in BVLC master but not in the fixture's
    Caffe build: y = max(min, min(max, x)) and y = x * sigmoid(beta * x)."""
    net = net_from_text(
        'layer { name: "clip" type: "Clip" bottom: "data" top: "clip" '
        "clip_param { min: -0.5 max: 0.75 } }\n"
        'layer { name: "odd" type: "Clip" bottom: "data" top: "odd" '
        "clip_param { min: 1 max: -1 } }\n"
        'layer { name: "swish" type: "Swish" bottom: "data" top: "swish" }\n'
        'layer { name: "swish_b" type: "Swish" bottom: "data" top: "swish_b" '
        "swish_param { beta: 1.7 } }\n"
        'layer { name: "inplace" type: "Swish" bottom: "clip" top: "clip" }\n'
    )
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    x64 = x.astype(np.float64)
    clipped = np.clip(x64, -0.5, 0.75)
    want = {
        "clip": clipped / (1 + np.exp(-clipped)),  # after the in-place Swish
        "odd": np.full_like(x64, 1.0),  # min > max: min wins, as max(min, min(max, x))
        "swish": x64 / (1 + np.exp(-x64)),
        "swish_b": x64 / (1 + np.exp(-float(np.float32(1.7)) * x64)),  # a float field
    }
    ours32, ours64, executor = both_sides(net, x)
    for name, expected in want.items():
        np.testing.assert_allclose(ours32[name], expected, rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(ours64[name], expected, rtol=1e-13, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(executor[name], expected, rtol=1e-13, atol=1e-15, err_msg=name)


def test_clip_needs_both_bounds():
    net = net_from_text(
        'layer { name: "c" type: "Clip" bottom: "data" top: "c" clip_param { min: 0 } }'
    )
    with pytest.raises(ConverterError, match=r"layer 'c' \(Clip\): Clip needs clip_param"):
        net.shapes()


def test_one_level_spp_is_the_pooled_4d_blob():
    net = net_from_text(
        'layer { name: "spp" type: "SPP" bottom: "data" top: "spp" '
        "spp_param { pyramid_height: 1 } }"
    )
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype(np.float32)
    for ours in both_sides(net, x):
        np.testing.assert_allclose(ours["spp"], x.max(axis=(2, 3), keepdims=True), rtol=1e-6)


def test_elementwise_types_run_in_place():
    """Caffe computes these correctly with top == bottom: the blob holds the last value."""
    net = net_from_text(
        'layer { name: "e" type: "ELU" bottom: "data" top: "data" elu_param { alpha: 0.5 } }\n'
        'layer { name: "b" type: "BNLL" bottom: "data" top: "data" }\n'
        'layer { name: "m" type: "MVN" bottom: "data" top: "data" }\n'
    )
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype(np.float32)
    elu = np.where(x > 0, x, 0.5 * np.expm1(np.minimum(x, 0))).astype(np.float64)
    bnll = np.log1p(np.exp(elu)).reshape(6, -1)
    want = (bnll - bnll.mean(1, keepdims=True)) / (bnll.std(1, keepdims=True) + 1e-9)
    for ours in both_sides(net, x):
        np.testing.assert_allclose(ours["data"], want.reshape(x.shape), rtol=2e-5, atol=2e-6)


def test_exp_and_log_refuse_a_non_positive_base():
    for kind in ("Exp", "Log"):
        field = f"{kind.lower()}_param"
        net = net_from_text(
            f'layer {{ name: "l" type: "{kind}" bottom: "data" top: "y" {field} {{ base: 0 }} }}'
        )
        with pytest.raises(ConverterError, match=r"layer 'l'.*base must be strictly positive"):
            net.shapes()


def test_embed_and_batch_reindex_refuse_an_index_out_of_range():
    """Caffe's behaviour is undefined there (a DCHECK); the executor says which layer."""
    net = net_from_text(
        'layer { name: "emb" type: "Embed" bottom: "data" top: "e" '
        "embed_param { num_output: 2 input_dim: 3 bias_term: false } }",
        shape=(4,),
    )
    net.layers[1].blobs = [np.arange(6, dtype=np.float32).reshape(3, 2)]
    np.testing.assert_array_equal(
        run_reference(net, np.array([2, 0, 1.7, 0]))["e"][:, 0], [4, 0, 2, 0]
    )
    with pytest.raises(ConverterError, match=r"layer 'emb'.*index 3.0 is outside \[0, 3\)"):
        run_reference(net, np.array([0, 3, 1, 0]))


def test_a_net_whose_every_blob_is_silenced_still_builds():
    net = net_from_text('layer { name: "s" type: "Silence" bottom: "data" }')
    assert net.outputs() == []
    model = CaffeGraph.from_net(net)
    x = np.ones((2, 3, 4, 5), np.float32)
    assert model.output_name == "data"
    np.testing.assert_array_equal(model(torch.from_numpy(x)).numpy(), x)
