"""The small public API: convert, load, blobs."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converter import __version__
from converter.errors import ConverterError
from converter.export import read_converted, write_converted
from converter.net import Net, read_net

INPUT_CONVENTION = (
    "Caffe convention: NCHW, BGR channel order, values 0-255 minus the training mean "
    "(per-pixel or per-channel), no division by a std"
)


def build_model(net: Net, generic: bool = False) -> nn.Module:
    """``CaffeResNet`` when the net is a ResNet of Kaiming's form, else the generic module."""
    from converter.generic import CaffeGraph

    if not generic:
        from converter.resnet import CaffeResNet, recognize, resnet_state_dict

        try:
            config = recognize(net)
        except ConverterError as not_resnet:
            reason = str(not_resnet)
        else:
            model = CaffeResNet(config)
            if any(layer.blobs for layer in net.layers):
                model.load_state_dict(resnet_state_dict(net, config))
            return model.eval()
        try:
            return CaffeGraph.from_net(net).eval()
        except ConverterError as exc:
            raise ConverterError(
                f"{exc} (the ResNet converter did not apply either: {reason})"
            ) from None
    return CaffeGraph.from_net(net).eval()


def model_from_config(config: dict) -> nn.Module:
    """Rebuild an empty model from the ``caffe_config()`` stored in a converted file."""
    architecture = config.get("architecture")
    if architecture == "resnet":
        from converter.resnet import CaffeResNet

        return CaffeResNet.from_config(config)
    if architecture == "generic":
        from converter.generic import CaffeGraph

        return CaffeGraph.from_config(config)
    raise ConverterError(f"unknown architecture '{architecture}' in converted file")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _metadata(model: nn.Module, net: Net, hashes: dict[str, str]) -> dict[str, str]:
    shapes = {name: list(shape) for name, shape in net.input_shapes().items()}
    return {
        "format": "pt",
        "producer": f"caffe2torch {__version__}",
        "architecture": model.caffe_config()["architecture"],
        "config": json.dumps(model.caffe_config()),
        "source_prototxt": Path(net.source).name,
        "source_prototxt_sha256": hashes["prototxt"],
        "source_caffemodel": Path(net.weights_source or "").name,
        "source_caffemodel_sha256": hashes["caffemodel"],
        "input_names": json.dumps(list(shapes)),
        "input_shapes": json.dumps(shapes),
        "input_convention": INPUT_CONVENTION,
        "output_blob": model.output_name,
    }


def convert(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike,
    output: str | os.PathLike,
    format: str | None = None,
    generic: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Convert a Caffe model to a safetensors (default) or ``.pt`` file; returns its path.

    ``progress(phase, done, total)`` is told how far reading and writing have got.
    """
    prototxt, caffemodel = Path(prototxt), Path(caffemodel)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        # hashing runs beside the conversion (hashlib releases the GIL on large chunks)
        hashing = {"prototxt": pool.submit(_sha256, prototxt)}
        net = read_net(prototxt, caffemodel)
        hashing["caffemodel"] = pool.submit(_sha256, caffemodel)
        if progress:
            progress("read", 1, 1)
        model = build_model(net, generic=generic)
        hashes = {key: future.result() for key, future in hashing.items()}
    state = model.state_dict()
    write_progress = (lambda done, total: progress("write", done, total)) if progress else None
    return write_converted(state, _metadata(model, net, hashes), output, format, write_progress)


def load(
    path: str | os.PathLike,
    caffemodel: str | os.PathLike | None = None,
    generic: bool = False,
) -> nn.Module:
    """A model in eval mode, from a prototxt + caffemodel pair or from a converted file.

    ``model(x)`` returns the net's final output blob, as Caffe's ``net.forward()`` does.
    """
    if caffemodel is not None:
        return build_model(read_net(path, caffemodel), generic=generic)
    if Path(path).suffix == ".prototxt":
        raise ConverterError(f"{path}: a prototxt needs its caffemodel: load(prototxt, caffemodel)")
    state, metadata = read_converted(path)
    model = model_from_config(json.loads(metadata["config"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConverterError(f"{path}: tensors do not fit the stored architecture: {exc}") from None
    return model.eval()


def blobs(
    model: nn.Module, x: torch.Tensor | np.ndarray, names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """What Caffe would hold in ``net.blobs[name]`` after a forward pass, for each blob."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        parameter = next(model.buffers(), torch.empty(0))
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    x = x.to(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        return model.forward_blobs(x, names=names)
