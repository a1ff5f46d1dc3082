"""The small public API: load, blobs, build_model (all torch-backed), and convert from
``converter.conversion``, which needs no torch."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converter.conversion import (
    NonFiniteWeightsWarning,
    Plan,
    check_complete,
    convert,
    plan_conversion,
    warn_non_finite,
)
from converter.deploy import InputShapes
from converter.errors import ConverterError, InputsError, counted
from converter.export import owned_tensors, read_converted
from converter.net import Net, gc_paused, read_net

__all__ = [
    "NonFiniteWeightsWarning",
    "blobs",
    "build_model",
    "convert",
    "load",
    "model_from_config",
    "stream_blobs",
    "warn_non_finite",
]


def materialize(plan: Plan, dtype: torch.dtype, source: str) -> nn.Module:
    """The planned model with real storage in ``dtype``, holding the planned arrays."""
    if plan.arrays:
        check_complete(plan, source)
    model = plan.build().to_empty(device="cpu")
    model.to(dtype)
    state = model.state_dict()
    model.load_state_dict(owned_tensors(plan.arrays), strict=bool(plan.arrays))
    if not plan.arrays:  # a net without its caffemodel: deterministic placeholder values
        with torch.no_grad():
            for tensor in state.values():
                if tensor.is_floating_point():
                    tensor.zero_()
    return model.eval()


def build_model(net: Net, generic: bool = False, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The PyTorch model of ``net`` in eval mode, weights from its blobs, in ``dtype``.

    Built directly in ``dtype``: in float64 the BatchNorm statistics keep every bit of
    Caffe's ``blob / scale_factor``, which the verifier relies on.
    """
    warn_non_finite(net)
    return materialize(plan_conversion(net, generic), dtype, net.weights_source or net.source)


def model_from_config(config: dict, source: str = "<config>") -> nn.Module:
    """Rebuild an empty model from the ``caffe_config()`` stored in a converted file;
    ``source`` (the file) starts error messages."""
    architecture = config.get("architecture")
    if architecture == "resnet":
        from converter.resnet import CaffeResNet

        return CaffeResNet.from_config(config)
    if architecture == "generic":
        from converter.generic import CaffeGraph

        return CaffeGraph.from_config(config, source)
    raise ConverterError(f"{source}: unknown architecture '{architecture}' in converted file")


def load(
    path: str | os.PathLike,
    caffemodel: str | os.PathLike | None = None,
    generic: bool = False,
    dtype: torch.dtype = torch.float32,
    input_shapes: InputShapes = None,
) -> nn.Module:
    """A model in eval mode, from a prototxt + caffemodel pair or from a converted file.

    ``model(x)`` returns what Caffe's ``net.forward()`` does: the output blob of a net with
    one output; with several, a tuple of them in ``model.output_names`` order (Caffe's
    ``net.outputs``: by name).
    ``dtype=torch.float64`` builds it in float64 directly (no float32 rounding on the way).
    ``input_shapes`` (a pair only): see ``read_net``; a training net's Data layer needs it
    when the prototxt does not say its channels or size.
    From a safetensors file the weights map the file copy-on-write, as safetensors' own
    loader does: nothing is read twice, writes to the model never reach the file, and the
    file may be replaced or deleted (not truncated in place) while the model lives.
    """
    if caffemodel is not None:
        net = read_net(path, caffemodel, input_shapes)
        return build_model(net, generic=generic, dtype=dtype)
    if input_shapes is not None:
        raise ConverterError(f"{path}: input_shapes apply to a prototxt, not a converted file")
    if Path(path).suffix == ".prototxt":
        raise ConverterError(f"{path}: a prototxt needs its caffemodel: load(prototxt, caffemodel)")
    with gc_paused():  # many small objects, no cycles: see gc_paused
        state, metadata = read_converted(path)
        with torch.device("meta"):
            model = model_from_config(json.loads(metadata["config"]), str(path))
        # The file's tensors become the model's (assign=True): no second copy of the weights.
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        try:
            model.load_state_dict(state, assign=True)
        except RuntimeError as exc:
            raise ConverterError(
                f"{path}: tensors do not fit the stored architecture: {exc}"
            ) from None
    return model.eval()


def blobs(
    model: nn.Module, *inputs: ModelInput, names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """What Caffe would hold in ``net.blobs[name]`` after a forward pass, for each blob.

    ``inputs``: one tensor (or array) per net input, in ``model.input_names`` order, or one
    tuple/list of them, or one dict {input blob name: tensor}; ``blobs(model, a, b)`` for a
    net with inputs a and b. Each is cast to the model's floating dtype and device (a model
    without parameters or buffers runs in the input's own floating dtype). ``names``: the
    blobs wanted (default: all; a list after the inputs is taken as ``names`` too). Inputs
    that do not fit the net raise ``converter.errors.InputsError`` (a ConverterError and a
    TypeError), saying what the net takes; inputs of different batch sizes, ConverterError.
    """
    if names is None and len(inputs) > 1 and _is_names(inputs[-1]):
        *inputs, names = inputs
    with torch.no_grad():
        return model.forward_blobs(*_model_inputs(model, inputs), names=names)


def stream_blobs(
    model: nn.Module,
    x: ModelInput | Sequence[ModelInput] | Mapping[str, ModelInput],
    on_final: Callable[[str, torch.Tensor], None],
    names: Sequence[str] | None = None,
) -> None:
    """``blobs`` one at a time: ``on_final(name, value)`` gets each blob as soon as it holds
    its final value, and the model keeps only the blobs later layers need, so memory stays
    at a few blobs, not all of them. ``x``: the inputs, as one argument (see ``blobs``)."""
    with torch.no_grad():
        model.forward_blobs(*_model_inputs(model, (x,)), names=names, on_final=on_final)


ModelInput = torch.Tensor | np.ndarray


def _is_names(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _model_inputs(model: nn.Module, inputs: Sequence) -> tuple[torch.Tensor, ...]:
    """``inputs`` (see ``blobs``) as one tensor per net input, in the model's input order,
    in its floating dtype and on its device. InputsError, naming what the net takes, for
    anything else (the message never shows the tensors)."""
    names = list(getattr(model, "input_names", None) or [])
    takes = f"the net takes {counted(len(names), 'input')} ({', '.join(names)})"
    if len(inputs) == 1 and isinstance(inputs[0], Mapping):
        given = dict(inputs[0])
        missing = [name for name in names if name not in given]
        unknown = [str(name) for name in given if name not in names]
        problems = [f"lacks {', '.join(missing)}"] if missing else []
        problems += [f"names no input {', '.join(unknown)}"] if unknown else []
        if problems:
            raise InputsError(f"{takes}; the dict {' and '.join(problems)}")
        inputs = [given[name] for name in names]
    elif len(inputs) == 1 and isinstance(inputs[0], (tuple, list)) and not _is_names(inputs[0]):
        inputs = list(inputs[0])
    if names and len(inputs) != len(names):
        raise InputsError(f"{takes}, got {len(inputs)}")
    for index, x in enumerate(inputs):
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            where = f"input '{names[index]}'" if index < len(names) else f"input {index}"
            raise InputsError(
                f"{where}: expected a torch.Tensor or a NumPy array, got {type(x).__name__}"
            )
    return tuple(_model_input(model, x) for x in inputs)


def _model_input(model: nn.Module, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``x`` as a tensor in the model's floating dtype and on its device."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    held = next(model.parameters(), None)
    if held is None:
        held = next((b for b in model.buffers() if b.is_floating_point()), None)
    if held is not None:
        return x.to(device=held.device, dtype=held.dtype)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())
