"""convert: a Caffe model to a safetensors or .pt file, without building the PyTorch model.

Only NumPy is needed for a ResNet written to safetensors: ``caffe2torch convert`` does not
pay the seconds that importing torch takes. Generic nets and ``.pt`` files import it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converter import __version__
from converter.deploy import InputShapes
from converter.errors import ConverterError, file_error
from converter.export import output_format, write_converted
from converter.net import Net, gc_paused, read_net

if TYPE_CHECKING:
    from torch import nn

    from converter.preprocess import InputConvention

INPUT_CONVENTION = (
    "Caffe convention: NCHW, BGR channel order, values 0-255 minus the training mean "
    "(per-pixel or per-channel), no division by a std"
)


@dataclass
class Plan:
    """A conversion before any module exists: the architecture, the state dict it expects
    and the arrays that fill it (views of the caffemodel where possible, nothing copied)."""

    config: dict[str, Any]  # what the model's caffe_config() returns
    shapes: dict[str, tuple[int, ...]]  # the model's state dict: name -> shape
    arrays: dict[str, np.ndarray]
    build: Callable[[], nn.Module]  # the empty model, on the meta device


def plan_conversion(net: Net, generic: bool, fuse_bn: bool = False) -> Plan:
    """``CaffeResNet`` when the net is a ResNet of Kaiming's form, else the generic module.

    A ResNet is planned from its config alone: its modules are built only when a model is
    wanted (``build``), which a conversion never needs. ``fuse_bn`` folds BatchNorm+Scale
    into the convs (ResNets only). Every check a conversion makes of the net is made here
    (and of its weights, when a caffemodel was read: ``check_complete``), so that
    ``inspect`` says a net converts exactly when ``convert`` converts it; ConverterError
    for what it refuses.
    """
    plan = _plan(net, generic, fuse_bn)
    if net.weights_source is not None:
        check_complete(plan, net.weights_source)
    return plan


def _plan(net: Net, generic: bool, fuse_bn: bool) -> Plan:
    reason = ""
    if not generic:
        from converter.resnet import recognize, resnet_arrays, state_shapes

        try:
            config = recognize(net)
        except ConverterError as not_resnet:
            reason = str(not_resnet)
        else:
            arrays = resnet_arrays(net, config) if _has_weights(net) else {}
            if fuse_bn:
                from converter.fuse import fuse_resnet

                config, arrays = fuse_resnet(config, arrays)

            def build_resnet(config=config) -> nn.Module:
                import torch

                from converter.resnet import CaffeResNet

                with torch.device("meta"):
                    return CaffeResNet(config)

            return Plan(config.caffe_config(), state_shapes(config), arrays, build_resnet)
    if fuse_bn:
        why = "--generic was asked for" if generic else reason
        raise ConverterError(
            f"{net.source}: --fuse-bn folds BatchNorm into convs of recognised ResNets only, "
            f"and this net goes to the generic module ({why})"
        )
    import torch

    from converter.generic import CaffeGraph, graph_arrays

    try:
        with torch.device("meta"):
            model = CaffeGraph(net)
    except ConverterError as exc:
        if reason and reason != str(exc):
            raise ConverterError(
                f"{exc} (the ResNet converter did not apply either: {reason})"
            ) from None
        raise
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    return Plan(model.caffe_config(), shapes, graph_arrays(model, net), lambda: model)


def _has_weights(net: Net) -> bool:
    return any(layer.blobs for layer in net.layers)


def check_complete(plan: Plan, source: str) -> None:
    """Every tensor of the model must come from the caffemodel."""
    missing = [key for key in plan.shapes if key not in plan.arrays]
    if missing:
        raise ConverterError(f"{source}: no weights for {', '.join(missing[:5])}")


class NonFiniteWeightsWarning(UserWarning):
    """The caffemodel holds NaN or Inf weights: the conversion is faithful, the model is not."""


def warn_non_finite(net: Net) -> None:
    """One warning naming every blob with NaN or Inf values (the CLI prints it as one line)."""
    _warn_non_finite(net, _non_finite_blobs(net))


def _non_finite_blobs(net: Net) -> list[str]:
    """For each blob with NaN or Inf values, a line "'layer' blob i has n NaN, m Inf"."""
    return [
        f"'{layer.name}' blob {index} has {counts}"
        for layer in net.layers
        for index, blob in enumerate(layer.blobs)
        if (counts := _non_finite_counts(blob)) is not None
    ]


def _non_finite_counts(values: np.ndarray) -> str | None:
    """ "n NaN, m Inf", or None when every value is finite."""
    if values.dtype.kind != "f" or _looks_finite(values):
        return None
    nans = int(np.count_nonzero(np.isnan(values)))
    infs = int(np.count_nonzero(np.isinf(values)))
    counts = ", ".join(f"{n} {what}" for n, what in ((nans, "NaN"), (infs, "Inf")) if n)
    return counts or None


def _looks_finite(values: np.ndarray) -> bool:
    """The fast screen: a sum of squares is finite whenever every value is (an overflow
    aside, which the exact count then rules out). BLAS computes it at memory speed whatever
    the alignment; most of a caffemodel's float arrays start at an address that is not a
    multiple of 4, where np.sum is up to 4x slower (ResNet-152's 241 MB: 0.03 s against
    0.065-0.075 s with np.sum)."""
    with np.errstate(all="ignore"):  # an overflow or Inf * Inf is what we look for
        return math.isfinite(np.vdot(values, values))


def _non_finite_arrays(net: Net, arrays: dict[str, np.ndarray]) -> list[str]:
    """The screen of a conversion: the arrays the model gets, named by the caffemodel's blobs
    when those hold the NaN or Inf, else by converted tensor (an overflow in BN folding)."""
    found = [
        f"converted '{name}' has {counts}"
        for name in sorted(arrays)
        if (counts := _non_finite_counts(np.asarray(arrays[name]))) is not None
    ]
    return (_non_finite_blobs(net) or found) if found else []


def _warn_non_finite(net: Net, found: list[str]) -> None:
    if found:
        more = f" (and {len(found) - 5} more blobs)" if len(found) > 5 else ""
        warnings.warn(
            f"{net.weights_source}: non-finite weights: {'; '.join(found[:5])}{more}; "
            "the model will compute NaN/Inf wherever they are used",
            NonFiniteWeightsWarning,
            stacklevel=3,
        )


def _sha256(path: Path, stop: threading.Event | None = None) -> str:
    """The file's sha256, read into one reused buffer (no copies, flat memory). Stops early,
    with a digest nobody reads, once ``stop`` is set: the conversion has failed."""
    digest = hashlib.sha256()
    buffer = bytearray(1 << 22)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as handle:
            while (size := handle.readinto(buffer)) and not (stop and stop.is_set()):
                digest.update(view[:size])
    except OSError as exc:
        raise file_error(path, exc) from None
    return digest.hexdigest()


def _hash_metadata(hashes: dict[str, str]) -> dict[str, str]:
    return {f"source_{name}_sha256": value for name, value in hashes.items()}


def output_names(config: dict[str, Any]) -> list[str]:
    """The blobs a converted model returns, from its ``caffe_config()``: ``output_names``
    (a generic net: Caffe's outputs, by name), else its one ``output_name`` (a ResNet)."""
    return list(config.get("output_names") or [config["output_name"]])


def file_metadata(
    plan: Plan, net: Net, convention: InputConvention | None = None
) -> dict[str, str]:
    """The file's metadata (the sources' hashes join it later, when asked for).

    ``convention``: the input convention to record (``preprocess.input_convention``; by
    default what the prototxt says: a training net's transform_param)."""
    from converter.preprocess import input_convention

    shapes = {name: list(shape) for name, shape in net.input_shapes().items()}
    convention = convention or input_convention(net)
    return {
        "format": "pt",
        "producer": f"caffe2torch {__version__}",
        "architecture": plan.config["architecture"],
        "config": json.dumps(plan.config),
        "source_prototxt": Path(net.source).name,
        "source_caffemodel": Path(net.weights_source or "").name,
        "input_names": json.dumps(list(shapes)),
        "input_shapes": json.dumps(shapes),
        "input_convention": INPUT_CONVENTION,
        "input_mean": json.dumps(None if convention.mean is None else list(convention.mean)),
        "input_mean_source": json.dumps(convention.mean_source),
        "input_scale": json.dumps(convention.scale),
        "output_blob": plan.config["output_name"],
        "output_blobs": json.dumps(output_names(plan.config)),
        "fused_bn": json.dumps(bool(plan.config.get("fused_bn", False))),
        "source_dtype": net.weights_dtype or "float32",
    }


def _tell_outputs(plan: Plan, notes: Callable[[str], None] | None) -> None:
    """One note naming the outputs of a net with several: the model returns a tuple."""
    names = output_names(plan.config)
    if notes is not None and len(names) > 1:
        notes(
            f"note: the net has {len(names)} outputs; the model returns them as a tuple in "
            f"Caffe's order (by name, also in its output_names): {', '.join(names)}"
        )


def check_not_a_source(output: str | os.PathLike, *sources: str | os.PathLike) -> None:
    """ConverterError when ``output`` is one of the conversion's ``sources`` (the same file,
    by any name): writing it would destroy what is being read."""
    for source in sources:
        if Path(output).exists() and Path(source).exists() and os.path.samefile(output, source):
            raise ConverterError(f"{output}: is an input of this conversion; choose another -o")


def convert(
    prototxt: str | os.PathLike,
    caffemodel: str | os.PathLike,
    output: str | os.PathLike,
    format: str | None = None,
    generic: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    fuse_bn: bool = False,
    hash_sources: bool = False,
    input_shapes: InputShapes = None,
    mean: str | None = None,
    input: str | os.PathLike | None = None,
    notes: Callable[[str], None] | None = None,
    scale: float | None = None,
    check: Callable[[Net], None] | None = None,
) -> Path:
    """Convert a Caffe model to a safetensors (default) or ``.pt`` file, or to one of the
    other ``export.FORMATS`` (``converter.targets``); returns the path written.

    The pair is read by ``read_net`` (any form of weights it reads; a training net becomes
    its deploy net, ``input_shapes`` giving what the prototxt cannot say). The metadata
    records the input shapes and ``source_dtype``, the stored precision of the weights
    ("float16" for a half-precision caffemodel, which is converted to float32).

    ``progress(phase, done, total)`` is told how far reading and writing have got.
    ``fuse_bn`` folds BatchNorm+Scale into the convs (ResNets; for deployment).
    ``hash_sources`` records the sources' sha256 in the metadata. Hashing runs on another
    core during the whole conversion, but at ~0.3-0.4 GB/s (a CPU without SHA extensions)
    it can take several times longer than the conversion itself.
    ``mean`` (a mean file or "B,G,R") and ``scale`` are the input convention every format
    records (by default, a training net's transform_param: ``preprocess.input_convention``);
    ``input`` serves the other formats: what detectron2/mmdet differences are measured on;
    an ``input`` array also gives the sizes a training net's Data layer leaves to the data,
    as in ``verify`` (``read_net``'s ``fill_shape``).
    ``notes`` is told what the user must know about the output (a net with several
    outputs: their names and order; the other formats' settings and differences).
    ``check(net)`` runs once the net is read and planned, before anything is written: the
    command line checks there what a verification after the conversion would refuse.
    """
    from converter.preprocess import array_shape, input_convention

    prototxt, caffemodel = Path(prototxt), Path(caffemodel)
    check_not_a_source(output, prototxt, caffemodel)
    target = output_format(output, format)
    if target not in ("safetensors", "pt"):
        if hash_sources:
            raise ConverterError(
                f"--hash records hashes in safetensors and .pt files, not {target}"
            )
        from converter.targets import write_target

        with gc_paused():
            net = read_net(prototxt, caffemodel, input_shapes, fill_shape=array_shape(input))
            plan = plan_conversion(net, generic, fuse_bn)
            if check is not None:
                check(net)
            warn_non_finite(net)
            path = write_target(
                target, net, plan, output, mean=mean, input=input, notes=notes, scale=scale
            )
            _tell_outputs(plan, notes)
            return path
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        # Hashing and the non-finite screen run beside the write (hashlib and NumPy release
        # the GIL). The hashes join the metadata after the tensors are written
        # (write_converted's late_metadata), so nothing waits for them before that.
        sources = {"prototxt": prototxt, "caffemodel": caffemodel} if hash_sources else {}
        hashing = {name: pool.submit(_sha256, path, stop) for name, path in sources.items()}
        try:
            # A full GC pass over torch's objects costs more than the conversion's Python
            # work, and the conversion makes many small objects but no cycles: see gc_paused.
            with gc_paused():
                net = read_net(prototxt, caffemodel, input_shapes, fill_shape=array_shape(input))
                if progress:
                    progress("read", 1, 1)
                plan = plan_conversion(net, generic, fuse_bn)
                if check is not None:
                    check(net)
                metadata = file_metadata(plan, net, input_convention(net, mean, scale))
                screen = pool.submit(_non_finite_arrays, net, plan.arrays)
                write_progress = (
                    (lambda done, total: progress("write", done, total)) if progress else None
                )
                late = (
                    (lambda: _hash_metadata({k: f.result() for k, f in hashing.items()}))
                    if hashing
                    else None
                )
                path = write_converted(plan.arrays, metadata, output, format, write_progress, late)
                _warn_non_finite(net, screen.result())
                _tell_outputs(plan, notes)
                return path
        finally:
            stop.set()  # a failed conversion does not wait for the hashes
