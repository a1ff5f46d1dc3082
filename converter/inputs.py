"""What ``verify`` feeds the net: each input blob from a file, an array, saved blobs or noise.

A net may have several inputs (a detector's ``data`` and ``im_info``, a siamese net's two
images). Each is given by name (``--input NAME=FILE``, or ``{name: file or array}`` in
Python), or, for a net with one input, plainly (``--input FILE``). An input given nowhere
comes from the saved blobs when the reference is a ``.npz`` that holds it, else is
deterministic N(0, 50) noise (seed = its position among the inputs), of the shape the net
declares (``--input-shape``), with the batch of the given inputs where both declare the
same batch. A given input that a ``.npz`` reference also holds must equal it: blobs saved
from another input cannot judge the conversion.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConverterError
from converter.net import Net
from converter.preprocess import array_shape, is_image, load_input, random_input

Given = str | os.PathLike | np.ndarray
Inputs = Given | Mapping[str, Given] | None


def given_inputs(net: Net, input: Inputs) -> dict[str, Given]:
    """``input`` as {input blob: file or array}, checked against the net's input names."""
    names = list(net.input_shapes())
    if input is None:
        return {}
    if not isinstance(input, Mapping):
        if len(names) != 1:
            raise ConverterError(
                f"{net.source}: the net has {len(names)} inputs ({', '.join(names)}); give "
                "each input you supply by name (--input NAME=FILE, repeated; in Python a dict "
                "{name: file or array}); the others get random N(0, 50) noise"
            )
        return {names[0]: input}
    unknown = [name for name in input if name not in names]
    if unknown:
        raise ConverterError(
            f"{net.source}: no input blob named {', '.join(map(repr, unknown))}; the net's "
            f"inputs are {', '.join(names)}"
        )
    return dict(input)


def fill_shape(input: Inputs) -> tuple[int, ...] | None:
    """The shape of the one input array or .npy given (None otherwise): what completes a
    Data layer that leaves its sizes to the data (``read_net``'s ``fill_shape``; such a net
    has one input)."""
    if isinstance(input, Mapping):
        return array_shape(next(iter(input.values()))) if len(input) == 1 else None
    return array_shape(input)


def choose_inputs(
    net: Net,
    input: Inputs,
    mean: str | None = None,
    scale: float | None = None,
    saved: Mapping[str, np.ndarray] | None = None,
    saved_path: str | os.PathLike | None = None,
    tolerance: float = 1e-3,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays both sides run on ({input blob: float32 array}, the net's input order),
    and their description for the report (``ParityReport.input``): kind ("array", "file",
    "image", "saved", "random"; "several" when they differ), file, source (in words),
    shape, mean, scale; for a net with several inputs, ``inputs`` holds each one's.

    ``mean``/``scale`` apply to image inputs only. ``saved`` (a ``.npz`` reference): its
    input blobs feed the inputs not given, and a given input it also holds must be within
    ``tolerance`` of it (relative to its largest value). ConverterError otherwise.
    """
    shapes = net.input_shapes()
    given = given_inputs(net, input)
    images = [name for name, value in given.items() if _is_image(value)]
    if (mean is not None or scale is not None) and not images:
        what = "random noise" if not given else "an array used as is"
        raise ConverterError(
            f"--mean and --scale apply to an image input (--input photo.jpg); the input here "
            f"is {what}, so they would be ignored: drop them or give an image"
        )
    arrays: dict[str, np.ndarray] = {}
    each: dict[str, dict[str, Any]] = {}
    for name, value in given.items():
        arrays[name], each[name] = _load_given(name, value, shapes[name], mean, scale)
        each[name]["shape"] = list(arrays[name].shape)
    saved_name = Path(saved_path).name if saved_path else "the .npz"
    batches = {arrays[name].shape[0] for name in given if arrays[name].ndim}
    for index, (name, shape) in enumerate(shapes.items()):
        if name in given:
            continue
        if saved is not None:
            if name not in saved:
                raise ConverterError(
                    f"the saved blobs hold no input blob '{name}'; give the input they were "
                    f"computed from (--input {'' if len(shapes) == 1 else name + '='}FILE.npy)"
                )
            arrays[name] = saved[name].astype(np.float32, copy=False)
            each[name] = _described("saved", saved_path, f"input blob '{name}' of {saved_name}")
        else:
            shape = tuple(shape)
            same_batch = [n for n in given if tuple(shapes[n])[:1] == shape[:1]]
            if len(batches) == 1 and same_batch and shape:
                shape = (next(iter(batches)), *shape[1:])  # the batch of the given inputs
            arrays[name] = random_input(shape, seed=index)
            seed = f"seed {index}"
            each[name] = _described(
                "random", None, f"random N(0, 50) noise, {seed} (give --input for real data)"
            )
        each[name]["shape"] = list(arrays[name].shape)
    if saved is not None:
        for name, value in given.items():
            what = "the input array" if isinstance(value, np.ndarray) else f"the input {value}"
            _check_saved_input(name, what, arrays[name], saved, saved_name, tolerance)
    arrays = {name: arrays[name] for name in shapes}
    return arrays, _description(each, mean, scale)


def _is_image(value: Given) -> bool:
    return not isinstance(value, np.ndarray) and is_image(value)


def _load_given(
    name: str, value: Given, shape, mean: str | None, scale: float | None
) -> tuple[np.ndarray, dict[str, Any]]:
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False), _described("array", None, "an array")
    if _is_image(value):
        x = load_input(value, shape, mean=mean, scale=scale)
        where = f"image {value} (resized, center-cropped, BGR 0-255)"
        return x, _described("image", str(value), where)
    x = load_input(value, shape)
    return x, _described("file", str(value), f"{value} (preprocessed, used as is)")


def _described(kind: str, file: str | os.PathLike | None, source: str) -> dict[str, Any]:
    return {"kind": kind, "file": None if file is None else str(file), "source": source}


def _description(
    each: dict[str, dict[str, Any]], mean: str | None, scale: float | None
) -> dict[str, Any]:
    """The report's ``input``: the one input's description, or all of them together."""
    common = {"mean": None if mean is None else str(mean), "scale": scale}
    if len(each) == 1:
        return {**next(iter(each.values())), **common}
    kinds = {one["kind"] for one in each.values()}
    return {
        "kind": kinds.pop() if len(kinds) == 1 else "several",
        "file": None,
        "source": "; ".join(f"{name}: {one['source']}" for name, one in each.items()),
        "shape": {name: one["shape"] for name, one in each.items()},
        **common,
        "inputs": each,
    }


def _check_saved_input(
    name: str,
    what: str,
    x: np.ndarray,
    saved: Mapping[str, np.ndarray],
    saved_name: str,
    tolerance: float,
) -> None:
    """A given input (``what``, in words) must be the one the saved blobs were computed
    from: blobs saved from another input cannot judge the conversion."""
    if name not in saved:
        return
    theirs = np.asarray(saved[name], dtype=np.float64)
    if theirs.shape != x.shape:
        raise ConverterError(
            f"{what} differs from the saved input blob '{name}' of {saved_name}: shape "
            f"{x.shape} where Caffe ran on {theirs.shape}; pass the input Caffe ran on (or "
            "leave out --input: the saved one is used)"
        )
    with np.errstate(invalid="ignore"):
        difference = np.abs(x.astype(np.float64) - theirs)
    scale = float(np.nanmax(np.abs(theirs))) if theirs.size else 0.0
    worst = float(np.nanmax(difference)) if difference.size else 0.0
    rel = worst / scale if scale > 0 else worst
    same_nan = np.array_equal(np.isnan(x), np.isnan(theirs))
    if rel > tolerance or not same_nan:
        raise ConverterError(
            f"{what} differs from the saved input blob '{name}' of {saved_name} (max rel "
            f"{rel:.1e}): pass the input Caffe ran on (or leave out --input: the saved one "
            "is used)"
        )


def as_dtype(arrays: Mapping[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    """Every input array in ``dtype``."""
    return {name: np.asarray(array).astype(dtype, copy=False) for name, array in arrays.items()}
