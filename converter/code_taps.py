"""Every Caffe blob of a ``--format code`` folder's module, for ``verify --converted``.

The generated model.py computes every blob of the net but returns only the output, and a
comparison of the output alone can pass a broken module (a softmax saturated on random
input agrees whatever eps the BatchNorms use). The blobs are read where the generated code
keeps them, without changing it:

- a ResNet in torchvision's form has CaffeResNet's module names (``conv1``, ``bn1``,
  ``layer1.0.conv2``, ``layer1.0.downsample.1``, ...), so the taps of ``ResNetConfig.blobs``
  are forward hooks: a module's output (``layer1.0.bn2``, ``maxpool``, the block
  ``layer1.0``), the k-th call of a block's shared ReLU (``layer1.0.relu1``), the input of
  its last call (``layer1.0.add``, before the in-place ReLU writes it), a BatchNorm
  without its Scale (``bn1.norm``), the module's own output (``softmax``);
- a straight-line net (``codegen.graph``) keeps each blob in a local variable of its
  ``forward``, reassigned by in-place layers: the variables as the forward returns hold
  each blob's final value (after its last writer).

In both forms the output blobs are what ``forward`` returns (mapped to names by
``output_names``, in Caffe's order), not a tap or a variable: a wrong value returned, or
outputs returned in the wrong order, fails at that output blob.

A blob the module does not expose this way (the user renamed a module, or moved code into
a helper) is not handed over, and the report lists it as not compared.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from converter.errors import ConverterError
from converter.program import outputs_by_name

OnFinal = Callable[[str, torch.Tensor], None]


class CodeModel(nn.Module):
    """A code folder's generated module as ``verify`` runs converted models: ``forward``
    gives what the module returns (the output blob, or a tuple of the ``output_names``),
    ``forward_blobs`` every blob it can read (see the module's docstring), ``caffe_config``
    the inputs it was written for."""

    def __init__(
        self,
        net: nn.Module,
        config: Mapping[str, Any],
        stored: Mapping[str, Any],
        source: str = "model.py",
    ):
        """``net``: the module ``load()`` returned; ``config``: config.json; ``stored``: the
        caffe2torch config kept in model.safetensors' metadata (the converted net);
        ``source``: the model.py, for messages."""
        super().__init__()
        self.net = net
        self.source = source
        self.input_names: list[str] = list(config["input_names"])
        self.output_name: str = config["output_blob"]
        # folders written before several outputs were returned record one output blob
        self.output_names: list[str] = list(config.get("output_blobs") or [self.output_name])
        self._input_shapes = dict(config["input_shapes"])
        self._model_class = config.get("model_class")
        self._stored = dict(stored)
        # the precision its weights were stored in (float32): verify's bar in float64
        floating = [t.dtype for t in net.state_dict().values() if t.is_floating_point()]
        self.weights_dtype = floating[0] if floating else None

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.net(*xs)

    def caffe_config(self) -> dict[str, Any]:
        return {"input_shapes": self._input_shapes}

    def forward_blobs(
        self,
        *xs: torch.Tensor,
        names: Sequence[str] | None = None,
        on_final: OnFinal | None = None,
    ) -> dict[str, torch.Tensor]:
        """The blobs the module computes (all, or those in ``names``), by Caffe name; with
        ``on_final`` each is handed over as soon as it is final and not kept."""
        kept: dict[str, torch.Tensor] = {}
        wanted = None if names is None else set(names)

        def hand_over(name: str, value: torch.Tensor) -> None:
            if wanted is None or name in wanted:
                if on_final is not None:
                    on_final(name, value)
                else:
                    kept[name] = value

        for name, value in zip(self.input_names, xs):
            hand_over(name, value)
        outputs = set(self.output_names)

        def hand_over_inner(name: str, value: torch.Tensor) -> None:
            if name not in outputs:  # an output blob is what forward returns, below
                hand_over(name, value)

        if self._model_class == "ResNet" and self._stored.get("architecture") == "resnet":
            returned = _run_resnet(self.net, self._stored, xs, hand_over_inner)
        elif self._model_class == "Net" and self._stored.get("architecture") == "generic":
            returned = _run_graph(self.net, self._stored, xs, hand_over_inner)
        else:  # a form this module does not know: its outputs alone
            returned = self.net(*xs)
        for name, value in outputs_by_name(self.output_names, returned, self.source).items():
            hand_over(name, value)
        return kept


# ----------------------------------------------------------------------------- ResNet form


def _tap_hooks(
    net: nn.Module, taps: set[str], relu_calls: Mapping[str, int], put: Callable[[str, Any], None]
) -> list:
    """Hooks on ``net``'s modules that ``put(tap, value)`` each tap in ``taps`` (a tap's
    module missing from ``net``: no hook, the tap is never put)."""
    modules = dict(net.named_modules())
    handles = []
    calls: dict[str, int] = {}

    def after(name: str, tap: str):
        return lambda module, args, output: put(tap, output)

    def norm(name: str, tap: str):
        def hook(module, args, output):
            x = args[0]
            put(tap, F.batch_norm(x, module.running_mean, module.running_var, eps=module.eps))

        return hook

    def relu(name: str):
        def pre(module, args):
            calls[name] = calls.get(name, 0) + 1
            if calls[name] == relu_calls.get(name, 0) + 1:  # the block's add, then its ReLU
                put(f"{name[: -len('.relu')]}.add", args[0].clone())  # the ReLU writes in place

        def hook(module, args, output):
            put(f"{name}{calls[name]}", output)

        return pre, hook

    for tap in taps:
        if tap in modules and tap:
            handles.append(modules[tap].register_forward_hook(after(tap, tap)))
        elif tap.endswith(".norm") and tap[: -len(".norm")] in modules:
            handles.append(modules[tap[: -len(".norm")]].register_forward_hook(norm(tap, tap)))
    for name in {_relu_module(tap) for tap in taps} - {None}:
        if name in modules:
            pre, hook = relu(name)
            handles.append(modules[name].register_forward_pre_hook(pre))
            handles.append(modules[name].register_forward_hook(hook))
    return handles


def _relu_module(tap: str) -> str | None:
    """The block ReLU module a tap reads (``layer1.0.relu2``, ``layer1.0.add``), or None."""
    match = re.fullmatch(r"(.+)\.(relu\d+|add)", tap)
    return f"{match.group(1)}.relu" if match else None


def _run_resnet(net: nn.Module, stored: Mapping[str, Any], xs, hand_over: OnFinal) -> Any:
    """Hand over each tapped blob of the ResNet ``net`` run on ``xs``; return its output."""
    pairs = [tuple(pair) for pair in stored.get("blobs", [])]
    final = {blob: tap for tap, blob in pairs}  # the last tap of a blob is its final value
    blobs_at: dict[str, list[str]] = {}
    for blob, tap in final.items():
        if tap != "input":
            blobs_at.setdefault(tap, []).append(blob)
    # calls of each block ReLU that are taps of their own (relu1, relu2): the next is the add's
    relu_calls: dict[str, int] = {}
    for tap, _ in pairs:
        if re.fullmatch(r".+\.relu\d+", tap):
            relu_calls[_relu_module(tap)] = relu_calls.get(_relu_module(tap), 0) + 1

    def put(tap: str, value: Any) -> None:
        for blob in blobs_at.get(tap, ()):
            hand_over(blob, value)

    root_taps = {"softmax"} if "softmax" in blobs_at else set()
    handles = _tap_hooks(net, set(blobs_at) - root_taps, relu_calls, put)
    try:
        out = net(*xs)
    finally:
        for handle in handles:
            handle.remove()
    if root_taps:
        put("softmax", out)
    return out


# ----------------------------------------------------------------------------- straight-line


def _run_graph(net: nn.Module, stored: Mapping[str, Any], xs, hand_over: OnFinal) -> Any:
    """Hand over each blob of the straight-line ``net`` run on ``xs`` that a local variable
    of its forward holds; return its output."""
    from converter.codegen.graph import blob_variables
    from converter.io.prototxt import parse_prototxt
    from converter.net import final_writes, net_from_param

    graph = net_from_param(parse_prototxt(stored["prototxt"], "<code folder>"))
    frames, out = _forward_locals(net, xs)
    try:
        variables = blob_variables(graph)
    except ConverterError:  # a layer type whose code emitter is not registered here
        variables = {}
    inputs = set(graph.input_shapes())
    final = final_writes(graph)
    for blob in sorted(final, key=final.__getitem__):
        value = frames.get(variables.get(blob, ""))
        if blob not in inputs and isinstance(value, torch.Tensor):
            hand_over(blob, value)
    return out


def _forward_locals(net: nn.Module, xs) -> tuple[dict[str, Any], Any]:
    """The local variables of ``net``'s own ``forward*`` methods as they return, and the
    output, from one call of ``net`` (a profile function sees each frame's return; it adds
    a few microseconds per call, and the previous one is restored)."""
    own = {
        getattr(type(net), name).__code__
        for name in dir(type(net))
        if name.startswith("forward") and hasattr(getattr(type(net), name), "__code__")
    }
    seen: dict[str, Any] = {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code in own and frame.f_locals.get("self") is net:
            seen.update(frame.f_locals)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        out = net(*xs)
    finally:
        sys.setprofile(previous)
    return seen, out


# ----------------------------------------------------------------------------- loading


def code_model(folder: str | Path, net: nn.Module, config: Mapping[str, Any]) -> CodeModel:
    """Wrap the module ``net`` loaded from ``folder`` (config.json: ``config``), reading
    the converted net's description from model.safetensors' metadata."""
    from converter.export import read_converted_header

    try:
        _, metadata = read_converted_header(Path(folder) / "model.safetensors")
        stored = json.loads(metadata.get("config", "{}"))
    except (ConverterError, ValueError):
        stored = {}  # not caffe2torch's: the output is all that can be compared
    stored = stored if isinstance(stored, dict) else {}
    return CodeModel(net, config, stored, str(Path(folder) / "model.py"))
