#!/usr/bin/env python
"""Run a net in real Caffe and save every blob, for `caffe2torch verify --reference blobs.npz`.

Run it where pycaffe is installed (it needs only caffe and numpy, not caffe2torch):

    python dump_caffe_blobs.py deploy.prototxt model.caffemodel --input input.npy -o blobs.npz

``--input`` takes a float32 NCHW .npy, already preprocessed, for the net's first input blob;
``--input NAME=FILE`` names the blob, and may be repeated for nets with several inputs.
Without ``--input`` the first input gets N(0, 50) noise (``--seed``). The .npz holds every
blob of the net after the forward pass, float32, keyed by blob name; a blob written in place
holds its value after the last in-place layer. The input blobs are in it too, so the exact
input used travels with the reference values.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run a Caffe net (CPU, TEST phase) and save every blob to a .npz."
    )
    parser.add_argument("prototxt", help="deploy .prototxt")
    parser.add_argument("caffemodel", help="trained .caffemodel")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="[NAME=]FILE.npy",
        help="input array for the net's first input blob, or for blob NAME (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise input (default 0)")
    parser.add_argument("-o", "--output", required=True, help="output .npz file")
    return parser.parse_args(argv)


def read_inputs(specs: list[str], net_inputs: list[str], seed: int, shape_of) -> dict:
    """Blob name -> float32 array, from NAME=FILE / FILE specs, or noise for the first input."""
    if not net_inputs:
        raise SystemExit("the net declares no input blob")
    if not specs:
        rng = np.random.default_rng(seed)
        shape = shape_of(net_inputs[0])
        return {net_inputs[0]: rng.normal(0.0, 50.0, size=shape).astype(np.float32)}
    inputs = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = net_inputs[0], spec
        if name not in net_inputs:
            raise SystemExit(f"'{name}' is not an input blob (inputs: {', '.join(net_inputs)})")
        inputs[name] = np.load(path, allow_pickle=False).astype(np.float32)
    return inputs


def dump_blobs(prototxt: str, caffemodel: str, specs: list[str], seed: int = 0) -> dict:
    """Forward pass in Caffe; every blob of the net as a float32 copy."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import caffe
    except ImportError as exc:  # run where pycaffe is not installed
        raise SystemExit(
            f"dump_caffe_blobs: error: pycaffe is not importable ({exc}); run this script "
            "where Caffe's Python module is installed (import caffe works), or use "
            "caffe2torch verify --reference numpy or opencv instead"
        ) from None

    caffe.set_mode_cpu()
    net = caffe.Net(prototxt, caffemodel, caffe.TEST)
    inputs = read_inputs(specs, list(net.inputs), seed, lambda n: net.blobs[n].data.shape)
    for name, array in inputs.items():
        net.blobs[name].reshape(*array.shape)
        net.blobs[name].data[...] = array
    net.reshape()
    net.forward()
    return {name: np.array(blob.data, dtype=np.float32) for name, blob in net.blobs.items()}


def save_npz(blobs: dict, path: str) -> None:
    """Write atomically: a temporary file beside the target, renamed into place."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".blobs.", suffix=".npz.part", dir=folder)
    try:
        # A .npz is a zip of .npy files; written by hand so that any blob name works
        # (np.savez's keyword arguments would clash with a blob named "file").
        with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
            for name, array in blobs.items():
                with archive.open(f"{name}.npy", "w") as member:
                    np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    blobs = dump_blobs(args.prototxt, args.caffemodel, args.input, args.seed)
    save_npz(blobs, args.output)
    print(f"wrote {len(blobs)} blobs to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
