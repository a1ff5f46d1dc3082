"""pt2 and ONNX files: the converted net as a traced program that runs without caffe2torch.

``--format pt2`` writes a ``torch.export`` ExportedProgram (``torch.export.load(path)``);
``--format onnx`` an ONNX model (opset 18) for onnxruntime and other runtimes. Both take
the net's inputs in ``input_names`` order, return what the converted module returns (its
output blob, or every output blob in ``output_names`` order; ONNX outputs carry the blob
names), and leave the batch dimension dynamic. ``load_program`` runs either as a module,
for ``verify``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converter.errors import ConverterError
from converter.io import sniff
from converter.io.atomic import atomic_write

ONNX_OPSET = 18
ONNX_HINT = "pip install 'caffe2torch[onnx]' (onnx, onnxscript and onnxruntime)"
METADATA_KEY = "caffe2torch.json"  # pt2 extra file / ONNX metadata_props key (JSON)


class _Inputs(nn.Module):
    """Calls the model with the net's inputs as positional arguments (a fixed signature
    for torch.export, whatever the model's own forward looks like)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.model(*inputs)


def _example_inputs(input_shapes: dict[str, Sequence[int]]) -> tuple[torch.Tensor, ...]:
    """Zeros of the declared shapes, with batch 2 where the net says 1: torch.export treats
    a size-1 dimension as a constant, and the batch must stay free."""
    return tuple(
        torch.zeros((max(2, int(shape[0])), *map(int, shape[1:])))
        for shape in input_shapes.values()
    )


def export_program(
    model: nn.Module,
    input_shapes: dict[str, Sequence[int]],
    warn: Callable[[str], None] | None = None,
    where: str = "<net>",
    instead: Callable[[], str] | None = None,
    fixed_by: Callable[[], str | None] | None = None,
) -> torch.export.ExportedProgram:
    """``model`` (float32, eval mode) traced by ``torch.export`` with a dynamic batch.

    A net whose layers fix the batch size (a Reshape naming it, say) is traced at its
    declared batch instead, and ``warn`` is told so, with the layer ``fixed_by()`` names
    (torch's words, "Constraints violated (batch)!", tell a user nothing). A net that
    cannot be traced is one ConverterError (``where`` starts it) naming the layer whose
    module failed, when the model is a ``CaffeGraph``, torch's reason, and what
    ``instead()`` says to use instead (called only then: knowing may take some work).
    """
    wrapper = _Inputs(model).eval()
    with _quiet_torch():
        return _export(wrapper, input_shapes, warn, where, instead, fixed_by)


def _export(wrapper, input_shapes, warn, where, instead, fixed_by) -> torch.export.ExportedProgram:
    """The tracing itself: dynamic batch first, then the declared shapes."""
    examples = _example_inputs(input_shapes)
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in examples)
    with torch.no_grad():
        try:
            return torch.export.export(wrapper, examples, dynamic_shapes=(dynamic,))
        except Exception:  # torch reports a fixed batch with several error types
            pass
        declared = tuple(torch.zeros(tuple(map(int, s))) for s in input_shapes.values())
        try:
            program = torch.export.export(wrapper, declared)
        except Exception as exc:
            raise ConverterError(
                f"{where}: torch.export cannot trace this net: "
                + _blamed(exc, _raising_layer(exc, wrapper.model), where, instead)
            ) from None
    if warn is not None:
        layer = fixed_by() if fixed_by is not None else None
        reason = f"{layer} fixes it" if layer else "a layer's shape fixes it"
        warn(f"the batch size stays fixed at the declared {declared[0].shape[0]} ({reason})")
    return program


def write_pt2(
    program: torch.export.ExportedProgram, metadata: dict[str, str], path: str | os.PathLike
) -> Path:
    """Save ``program`` atomically (``torch.export.save``), ``metadata`` (``program_metadata``)
    as an extra file of the archive (``torch.export.load(path, extra_files=...)``)."""
    with atomic_write(path, defer_errors=True) as handle:
        torch.export.save(program, handle, extra_files=dict(metadata))
    return Path(path)


def write_onnx(
    program: torch.export.ExportedProgram,
    input_names: Sequence[str],
    output_name: str | Sequence[str],
    metadata: dict[str, str],
    path: str | os.PathLike,
    layers: Mapping[str, str] | None = None,
    instead: Callable[[], str] | None = None,
) -> Path:
    """Translate ``program`` to ONNX (opset ``ONNX_OPSET``, weights inside the file, the
    net's blob names on inputs and output, ``metadata`` as model properties), atomically.
    ``output_name`` names the program's output, or each of its outputs (a sequence).

    An operation the exporter cannot translate is one ConverterError naming the layer it
    belongs to (``layers``: the traced model's module names -> the words for their layers,
    ``layer_descriptions``), the operation, and what ``instead()`` says to use instead;
    nothing is written."""
    output_names = [output_name] if isinstance(output_name, str) else list(output_name)
    try:
        import onnx  # noqa: F401  (the exporter needs it and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConverterError(f"--format onnx needs {exc.name}: {ONNX_HINT}") from None
    try:
        with _quiet_torch(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program,
                input_names=list(input_names),
                output_names=output_names,
                opset_version=ONNX_OPSET,
                custom_translation_table=_onnx_translations(),
                dynamo=True,
                verbose=False,
            )
    except Exception as exc:
        layer = _translated_layer(exc, program, layers or {})
        raise ConverterError(
            f"{path}: the ONNX exporter cannot translate this net: "
            + _blamed(exc, layer, str(path), instead)
        ) from None
    proto = onnx_program.model_proto
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    with atomic_write(path) as handle:
        handle.write(proto.SerializeToString())
    return Path(path)


def _onnx_translations() -> dict:
    """ONNX for the aten operations torch's exporter has none for. A stable sort is ONNX's
    TopK over the whole axis: TopK's specification gives equal values in the order of
    their indices, which is what "stable" means (DetectionOutput ranks its priors so)."""
    from onnxscript import opset18 as op

    def sort_stable(self, stable=None, dim: int = -1, descending: bool = False):
        size = op.Gather(op.Shape(self), op.Constant(value_ints=[dim]), axis=0)
        return op.TopK(self, size, axis=dim, largest=descending, sorted=True)

    return {torch.ops.aten.sort.stable: sort_stable}


@contextlib.contextmanager
def _quiet_torch():
    """torch's loggers and warnings silenced while tracing and translating, restored
    afterwards: a failed trace logs pages (the traced graph), and the exporter notes what
    it skips ("torchvision is not installed"); the one-line error says what went wrong."""
    loggers = [logging.getLogger("torch")] + [
        logger
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if name.startswith("torch.") and isinstance(logger, logging.Logger)
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        # torch.export also prints the graph of a failed trace to sys.stderr itself
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def layer_descriptions(model: nn.Module) -> dict[str, str]:
    """The model's module names -> "layer 'name' (Type)", for a ``CaffeGraph`` (whose
    submodules are the Caffe layers; ``steps``); empty for other models."""
    return {
        step.module: f"layer '{step.layer}' ({step.type})" for step in getattr(model, "steps", ())
    }


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _raising_layer(exc: BaseException, model: nn.Module) -> str | None:
    """The layer whose module was running when tracing failed: the innermost frame, in the
    tracebacks of ``exc``'s chain, of a ``forward`` whose ``self`` is one of ``model``'s
    layer modules (torch.export's default, non-strict tracing runs the modules' Python)."""
    layers = layer_descriptions(model)
    children = {id(child): layers[name] for name, child in model.named_children() if name in layers}
    found = None
    for error in _chain(exc):
        tb = error.__traceback__
        while tb is not None:
            layer = children.get(id(tb.tb_frame.f_locals.get("self")))
            found = layer or found
            tb = tb.tb_next
        if found:
            return found
    return None


_OVERLOAD = re.compile(r"<OpOverload\(op='([\w.]+)', overload='(\w+)'\)>")


def _translated_layer(
    exc: BaseException, program: torch.export.ExportedProgram, layers: Mapping[str, str]
) -> str | None:
    """The layer of the graph node the ONNX exporter failed on, by that node's module path
    (``model.`` and the module name, as ``export_program`` traces). The node is the one a
    frame of the failure was translating (the exporter first decomposes the program, so
    its node may be none of ``program``'s), else the first of ``program``'s nodes calling
    the operation the error names."""
    nodes = [
        frame.f_locals["node"]
        for error in _chain(exc)
        for frame, _ in traceback.walk_tb(error.__traceback__)
        if isinstance(frame.f_locals.get("node"), torch.fx.Node)
    ]
    overload = _OVERLOAD.search("\n".join(str(error) for error in _chain(exc)))
    if overload:
        target = ".".join(overload.groups())
        nodes += [node for node in program.graph.nodes if str(node.target) == target]
    for node in nodes:
        for path, _ in (node.meta.get("nn_module_stack") or {}).values():
            name = path.removeprefix("model.").split(".")[0]
            if name in layers:
                return layers[name]
    return None


def _blamed(
    exc: BaseException, layer: str | None, where: str, instead: Callable[[], str] | None
) -> str:
    """What failed, for a message: the layer (when known) and torch's reason, with what to
    use instead; a layer's own ConverterError (it names itself and says what to do) as it is."""
    own = next((e for e in _chain(exc) if isinstance(e, ConverterError)), None)
    if own is not None:
        return str(own).removeprefix(f"{where}: ")
    reason = _OVERLOAD.sub(lambda m: ".".join(m.groups()), _root_cause(exc))
    reason = reason.split(". Failure message:")[0].split(" (unhinted:")[0].rstrip(". ")
    if "data-dependent" in reason:
        reason += " (the module branches on, or sizes a tensor by, its input's values)"
    text = f"{layer}: {reason}" if layer else reason
    return f"{text}; {instead()}" if instead is not None else text


def _root_cause(exc: BaseException) -> str:
    """The first line of the innermost error (the exporter wraps the one that says which
    operation it lacks in several of its own), without terminal colour codes."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def program_metadata(
    metadata: dict[str, str], tensor_shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, str]:
    """What a pt2 or ONNX file keeps of a conversion's metadata (under one key, as JSON):
    with the config and ``tensor_shapes`` (the traced model's state dict: name -> shape),
    ``verify`` tells a file of another net (``provenance.check_program_source``)."""
    keep = ("producer", "architecture", "source_prototxt", "source_caffemodel", "input_names")
    keep += ("input_shapes", "input_convention", "input_mean", "input_mean_source")
    keep += ("input_scale", "output_blob", "output_blobs", "config")
    kept = {k: metadata[k] for k in keep if k in metadata}
    if tensor_shapes is not None:
        shapes = {name: [int(d) for d in shape] for name, shape in tensor_shapes.items()}
        kept["tensor_shapes"] = json.dumps(shapes)
    # the producer last: an ONNX file ends with its metadata, and sniff.by_caffe2torch
    # reads only the file's tail (the config and tensor shapes take tens of kB)
    if "producer" in kept:
        kept["producer"] = kept.pop("producer")
    return {METADATA_KEY: json.dumps(kept)}


# ----------------------------------------------------------------------------- running them


def outputs_by_name(
    names: Sequence[str], value: torch.Tensor | Sequence[torch.Tensor], source: object
) -> dict[str, torch.Tensor]:
    """A converted model's return value (a tensor, or one per output) by output blob name.
    ConverterError, naming ``source``, when it holds another number of tensors."""
    values = [value] if isinstance(value, torch.Tensor) else list(value)
    if len(values) != len(names):
        raise ConverterError(
            f"{source}: returned {len(values)} tensors for the {len(names)} output blobs "
            f"{list(names)} it records"
        )
    return dict(zip(names, values))


class LoadedProgram(nn.Module):
    """A pt2 or ONNX file as a module: ``forward(*inputs)`` gives the net's output blob (a
    tuple of every output blob, in ``output_names`` order, when the net has several) and
    ``forward_blobs`` gives them by name (a traced program keeps no other blob). It runs in
    float32 only (``fixed_dtype``)."""

    fixed_dtype = torch.float32

    def __init__(self, run: Callable[..., torch.Tensor], metadata: dict[str, str], source: str):
        super().__init__()
        self._run = run
        self._source = source
        self.metadata = dict(metadata)
        self.input_names = json.loads(metadata["input_names"])
        self.input_shapes = json.loads(metadata["input_shapes"])
        self.output_name = metadata["output_blob"]
        # files written before several outputs were kept record one output blob
        self.output_names = json.loads(metadata.get("output_blobs", "null")) or [self.output_name]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        blobs = outputs_by_name(self.output_names, self._run(*inputs), self._source)
        outputs = tuple(blobs.values())
        return outputs[0] if len(outputs) == 1 else outputs

    def forward_blobs(
        self,
        *inputs: torch.Tensor,
        names: Sequence[str] | None = None,
        on_final: Callable[[str, torch.Tensor], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The inputs and the output blobs (``on_final`` is handed each too, as converter
        models do): a traced program keeps no other blob."""
        blobs = dict(zip(self.input_names, inputs))
        blobs.update(outputs_by_name(self.output_names, self._run(*inputs), self._source))
        if names is not None:
            blobs = {name: value for name, value in blobs.items() if name in names}
        if on_final is not None:
            for name, value in blobs.items():
                on_final(name, value)
        return blobs

    def caffe_config(self) -> dict[str, object]:
        return {"input_shapes": self.input_shapes}


def load_program(path: str | os.PathLike) -> LoadedProgram:
    """A ``.pt2`` (``torch.export.load``) or ``.onnx`` (onnxruntime) file written by
    caffe2torch, ready to run. Raises ConverterError for an unreadable file, one without
    caffe2torch's metadata, or a missing onnxruntime."""
    path = Path(path)
    if not path.is_file():
        raise ConverterError(f"{path}: no such file")
    if sniff.identify_path(path) == "onnx":  # by content, whatever the name
        run, stored = _onnx_runner(path)
    else:
        extra = {METADATA_KEY: ""}
        try:
            run = torch.export.load(path, extra_files=extra).module()
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConverterError(
                f"{path}: not a readable torch.export (.pt2) file ({reason})"
            ) from None
        stored = extra[METADATA_KEY]
    try:
        metadata = json.loads(stored)
        return LoadedProgram(run, metadata, str(path))
    except (ValueError, KeyError, TypeError):
        raise ConverterError(
            f"{path}: holds no caffe2torch metadata ({METADATA_KEY}); was it written by "
            "caffe2torch convert?"
        ) from None


def _onnx_runner(path: Path) -> tuple[Callable[..., tuple[torch.Tensor, ...]], str]:
    """A function running the ONNX file with onnxruntime (every output, in the file's
    order), and the file's stored metadata."""
    try:
        import onnxruntime
    except ImportError:
        raise ConverterError(f"{path}: running ONNX needs onnxruntime: {ONNX_HINT}") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConverterError(f"{path}: onnxruntime cannot load it ({reason})") from None
    names = [item.name for item in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {
            name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
            for name, x in zip(names, inputs)
        }
        return tuple(torch.from_numpy(value) for value in session.run(None, feed))

    return run, session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "")
