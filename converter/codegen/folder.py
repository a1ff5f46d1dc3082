"""``--format code``: a folder a person can read, copy and publish, needing only PyTorch.

    model.py           the module (``load()`` returns it in eval mode with its weights)
    model.safetensors  exactly that module's state dict (BN statistics already divided by
                       Caffe's scale factor), plus caffe2torch's metadata
    config.json        architecture, inputs, input convention, output blobs, sources, version
    README.md          a model card: how to load it, the preprocessing, the parity verified

That is the layout the Hugging Face hub and timm's ``local-dir:`` loading expect. The
folder is written whole or not at all (``atomic_folder``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converter import __version__
from converter.codegen.resnet import fits_resnet_form, resnet_source
from converter.conversion import output_names
from converter.errors import ConverterError, counted
from converter.export import write_converted
from converter.io.atomic import atomic_folder, atomic_write, check_folder_replaceable
from converter.resnet.config import ResNetConfig

if TYPE_CHECKING:
    from converter.conversion import Plan
    from converter.net import Net
    from converter.parity import ParityReport
    from converter.preprocess import InputConvention

CODE_FILES = ("model.py", "model.safetensors", "config.json", "README.md")
# What an existing folder may hold and still be replaced: the files a previous run wrote, and
# the bytecode Python leaves beside model.py once ``from model import load`` has imported it.
REPLACEABLE = (*CODE_FILES, "__pycache__")


def model_source(net: Net, plan: Plan) -> tuple[str, str, Plan]:
    """(model.py's text, its model class name, the plan whose arrays fill it) for ``net``.

    A recognised ResNet of torchvision's form gets the ResNet file; any other net (or
    ``--generic``) the straight-line one. Raises ConverterError, before anything is
    written, for a net this format cannot represent.
    """
    prototxt = Path(net.source).name
    caffemodel = Path(net.weights_source or "").name
    if plan.config.get("fused_bn"):
        raise ConverterError(
            f"{net.source}: --format code writes BatchNorm as Caffe has it; --fuse-bn "
            "is for weight files, pt2 and ONNX"
        )
    if plan.config["architecture"] == "resnet":
        config = ResNetConfig.from_dict(plan.config)
        if fits_resnet_form(config):
            return resnet_source(config, prototxt, caffemodel, __version__), "ResNet", plan
    from converter.codegen.graph import check_codegen, graph_source
    from converter.conversion import plan_conversion

    check_codegen(net)  # before building anything
    if plan.config["architecture"] != "generic":
        plan = plan_conversion(net, generic=True)
    source = graph_source(net, plan.build(), prototxt, caffemodel, __version__)
    return source, "Net", plan


def _state(plan: Plan) -> dict[str, np.ndarray]:
    """The generated module's state dict: float32 tensors (BN statistics were derived in
    float64), integer counters kept."""
    return {
        name: value if value.dtype.kind in "iub" else np.asarray(value, dtype=np.float32)
        for name, value in ((k, np.asarray(v)) for k, v in plan.arrays.items())
    }


def code_config(
    net: Net,
    plan: Plan,
    model_class: str,
    convention: InputConvention,
) -> dict[str, Any]:
    """config.json: what the folder holds and how to feed the model (``convention``: the
    input convention, ``preprocess.input_convention``)."""
    shapes = {name: list(shape) for name, shape in net.input_shapes().items()}
    channels = next(iter(shapes.values()))[1] if shapes else 0
    config: dict[str, Any] = {
        "architecture": plan.config["architecture"],
        "model_file": "model.py",
        "model_class": model_class,
        "weights_file": "model.safetensors",
        "input_names": list(shapes),
        "input_shapes": shapes,
        "input_convention": {
            "layout": "NCHW",
            "channel_order": "BGR" if channels == 3 else "as in training",
            "range": [0, 255],
            "mean": None if convention.mean is None else [round(m, 4) for m in convention.mean],
            "mean_source": convention.mean_source,
            "scale": convention.scale,
            "std": [round(convention.std, 6)] * channels,
            "given_by": convention.given_by,
            "description": (
                "Caffe convention: (values 0-255 minus the training mean, per-pixel or "
                "per-channel) times scale; std is 1 / scale"
            ),
        },
        "output_blob": plan.config["output_name"],
        "output_blobs": output_names(plan.config),
    }
    if plan.config["architecture"] == "resnet":
        config["num_classes"] = plan.config["num_classes"]
    config.update(
        {
            "source_prototxt": Path(net.source).name,
            "source_caffemodel": Path(net.weights_source or "").name,
            "caffe2torch_version": __version__,
            "verified": None,
        }
    )
    return config


_OUTCOME = {
    "pass": "passed",
    "fail": "FAILED",
    "inconclusive": "INCONCLUSIVE (agreeing on the blobs compared could not show an error "
    "on that input)",
}


def model_card(config: Mapping[str, Any], title: str) -> str:
    """README.md: YAML front matter for the hub, then loading, preprocessing and parity."""
    convention = config["input_convention"]
    given_by = convention.get("given_by")
    if convention["mean"] is not None:
        mean = f"minus the mean {convention['mean']} (per channel"
        mean += f", from {convention['mean_source']}" if convention["mean_source"] else ""
        mean += f", as {given_by} says)" if given_by and given_by != "--mean" else ")"
    elif convention.get("mean_source"):
        mean = f"minus the mean the net was trained with ({convention['mean_source']})"
    else:
        mean = "minus the mean the net was trained with (not given at conversion: `--mean`)"
    scale = convention.get("scale", 1.0)
    if scale != 1.0:
        mean += f", multiplied by {scale:g} (std {convention['std'][0]:g})"
    else:
        mean += ", no division by a std"
    inputs = ", ".join(f"`{n}` {tuple(s)}" for n, s in config["input_shapes"].items())
    verified = config["verified"]
    if verified:
        parity = (
            f"Verified at conversion (`caffe2torch convert --verify`) against "
            f"{verified['reference']}: {counted(verified['compared'], 'blob')} compared, worst "
            f"relative error {verified['worst_rel']:.2e} at blob `{verified['worst_blob']}` "
            f"(tolerance {verified['tolerance']:.0e}, measured as max|ours - ref| / max|ref|); "
            f"{_OUTCOME[verified.get('status', 'pass' if verified['passed'] else 'fail')]}."
        )
    else:
        parity = (
            "Not verified at conversion time. Run `caffe2torch verify "
            f"{config['source_prototxt']} {config['source_caffemodel']} --converted <this "
            "folder>` to compare it with a reference."
        )
    tags = ["caffe2torch", "caffe", "image-classification"]
    if config["architecture"] == "resnet":
        tags.append("resnet")
    lines = [
        "---",
        "library_name: pytorch",
        "tags:",
        *[f"- {tag}" for tag in tags],
        "# license: set it to the licence of the original Caffe weights before publishing",
        "# (caffe2torch cannot know it; Kaiming He's ResNet weights are described as MIT).",
        "---",
        "",
        f"# {title}",
        "",
        f"A PyTorch conversion of `{config['source_prototxt']}` + "
        f"`{config['source_caffemodel']}`, made by caffe2torch {config['caffe2torch_version']}. "
        "`model.py` needs only PyTorch; `model.safetensors` holds its weights.",
        "",
        "## Load",
        "",
        "```python",
        "from model import load  # with this folder on sys.path, or copy model.py",
        "",
        "model = load()  # eval mode, weights from the model.safetensors beside model.py",
        *_call_lines(config.get("output_blobs") or [config["output_blob"]]),
        "```",
        "",
        "## Preprocessing",
        "",
        f"Input {inputs}, float32, {convention['layout']}, "
        f"{convention['channel_order']} channel order, values 0-255 {mean}: Caffe's "
        "convention.",
        "",
        "## Parity",
        "",
        parity,
        "",
    ]
    return "\n".join(lines)


def write_code_folder(
    net: Net,
    plan: Plan,
    folder: str | os.PathLike,
    convention: InputConvention | None = None,
) -> Path:
    """Write the folder (see the module docstring) atomically; returns its path.
    model.safetensors also carries caffe2torch's metadata, so ``converter.load`` reads it."""
    from converter.conversion import file_metadata
    from converter.preprocess import input_convention

    folder = Path(folder)
    check_folder_replaceable(folder, REPLACEABLE)
    source, model_class, plan = model_source(net, plan)
    convention = convention or input_convention(net)
    config = code_config(net, plan, model_class, convention)
    metadata = file_metadata(plan, net, convention)
    with atomic_folder(folder, REPLACEABLE) as tmp:
        (tmp / "model.py").write_text(source, encoding="utf-8")
        write_converted(_state(plan), metadata, tmp / "model.safetensors")
        _write_json(tmp / "config.json", config)
        (tmp / "README.md").write_text(model_card(config, _title(net)), encoding="utf-8")
    return folder


def _call_lines(outputs: Sequence[str]) -> list[str]:
    """The card's lines calling the model: what it returns."""
    if len(outputs) == 1:
        return [f"out = model(x)  # blob '{outputs[0]}'"]
    listed = ", ".join(f"'{name}'" for name in outputs)
    return [
        f"outputs = model(x)  # a tuple of the net's {len(outputs)} output blobs:",
        f"# model.output_names == [{listed}] (Caffe's order)",
        "named = dict(zip(model.output_names, outputs))",
    ]


def _title(net: Net) -> str:
    return Path(net.weights_source or net.source).stem


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_write(path) as handle:
        handle.write((json.dumps(data, indent=2) + "\n").encode())


def record_parity(folder: str | os.PathLike, report: ParityReport) -> None:
    """Write ``verify``'s result into config.json (``verified``) and the card."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    worst = max(report.rows, key=lambda row: row.rel, default=None)
    config["verified"] = {
        "reference": report.reference,
        "precision": report.precision,
        "compared": len(report.rows),
        "worst_blob": worst.name if worst else None,
        "worst_rel": worst.rel if worst else None,
        "tolerance": report.tolerance,
        "passed": report.passed,
        "status": report.status,
    }
    _write_json(folder / "config.json", config)
    title = (folder / "README.md").read_text(encoding="utf-8").split("\n# ", 1)[1].split("\n")[0]
    with atomic_write(folder / "README.md") as handle:
        handle.write(model_card(config, title).encode())


# ----------------------------------------------------------------------------- running one


def is_code_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / "model.py").is_file() and (Path(path) / "config.json").is_file()


def load_code_folder(folder: str | os.PathLike):
    """The folder's model.py imported under a name of its own (no clash with another
    ``model`` module) and its ``load()`` called, as a module whose ``forward_blobs`` gives
    every blob it can read (``converter.code_taps``): what ``verify --converted FOLDER`` runs."""
    from converter.code_taps import code_model

    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConverterError(
            f"{folder / 'config.json'}: not a caffe2torch config ({exc})"
        ) from None
    needed = ("output_blob", "input_names", "input_shapes")
    missing = [key for key in needed if not isinstance(config, dict) or key not in config]
    if missing:
        raise ConverterError(
            f"{folder / 'config.json'}: not a caffe2torch config (no {', '.join(missing)})"
        )
    name = f"_caffe2torch_code_{abs(hash(str(folder.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # no __pycache__ written into the folder: it is the user's (or, for convert --verify, a
    # staged output whose bytecode would name the temporary path and stop a rerun)
    writing_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
        net = module.load(folder / "model.safetensors")
    except Exception as exc:  # the user may have edited it: report, do not crash
        raise ConverterError(f"{folder / 'model.py'}: cannot load the model ({exc})") from None
    finally:
        sys.dont_write_bytecode = writing_bytecode
        sys.modules.pop(name, None)
    return code_model(folder, net, config).eval()
