"""ResNet checkpoints for detectron2 (``.pkl``) and mmdetection / mmpretrain (``.pth``).

Both frameworks build Kaiming's ResNet themselves (``RESNETS.STRIDE_IN_1X1``,
``style='caffe'``) but with a stem conv that has no bias, BatchNorm eps 1e-5 and a stem
max-pool of pad 1, floor mode. The first two are folded into the weights exactly (for
eval-mode BN, ``BN(y + b)`` equals BN with ``running_mean - b``; ``sqrt(var + eps)`` equals
``sqrt((var + eps - 1e-5) + 1e-5)``); the max-pool cannot be, and ``stem_pool_difference``
measures what it changes. The key names and settings are those of
``../shared/ECOSYSTEM.md`` (read from the frameworks' sources): neither library installs
here without CUDA builds or torchvision, so the tests check these documented semantics.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from converter import __version__
from converter.errors import ConverterError
from converter.fuse import conv_of
from converter.io.atomic import atomic_write
from converter.resnet.config import ResNetConfig, block_specs

if TYPE_CHECKING:
    from converter.preprocess import InputConvention

FRAMEWORKS = ("detectron2", "mmdet")
FRAMEWORK_BN_EPS = 1e-5  # FrozenBatchNorm2d's and BatchNorm2d's default, fixed in both
# Depth -> blocks per stage, as both frameworks build them (no other depth exists there).
STANDARD_DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}


def framework_depth(config: ResNetConfig, framework: str, source: str) -> int:
    """The depth the framework must be told, after checking it builds this net.

    Raises ConverterError (one line, naming what differs) for a net it cannot build:
    folded BN, another stem, other widths or strides, a depth it has no table for.
    """

    def refuse(why: str) -> ConverterError:
        return ConverterError(f"{source}: --format {framework} cannot represent this net: {why}")

    if config.fused_bn:
        raise refuse("its BatchNorm is folded (--fuse-bn); the frameworks keep BN layers")
    blocks = tuple(stage.blocks for stage in config.stages)
    depth = STANDARD_DEPTHS.get((config.block, blocks))
    if depth is None:
        known = ", ".join(f"{d} ({k}, {list(b)})" for (k, b), d in STANDARD_DEPTHS.items())
        raise refuse(f"{config.block} blocks {list(blocks)} are no depth it builds: {known}")
    stem = (config.stem_kernel, config.stem_stride, config.stem_pad)
    if stem != ([7, 7], [2, 2], [3, 3]):
        raise refuse(f"its stem conv has kernel/stride/pad {stem}; the frameworks' is 7/2/3")
    pool = config.maxpool
    if pool.global_pool or (pool.kernel, pool.stride) != ([3, 3], [2, 2]):
        raise refuse(f"its stem pools {pool.kernel}/{pool.stride}; the frameworks' pool is 3/2")
    expansion = 1 if config.block == "basic" else 4
    base = config.stages[0].width
    for index, stage in enumerate(config.stages):
        want = (base * 2**index, base * 2**index * expansion, 1 if index == 0 else 2)
        found = (stage.width, stage.out_channels, stage.stride)
        if found != want:
            raise refuse(
                f"stage {index + 1} has width/outputs/stride {found}; the frameworks build "
                f"{want} from a base width of {base}"
            )
    for spec in block_specs(config):
        if spec.downsample != (spec.stride != 1 or spec.inplanes != spec.stage.out_channels):
            raise refuse(f"block {spec.name} has a projection shortcut where none is needed")
    return depth


def folded_arrays(config: ResNetConfig, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CaffeResNet's state dict (torchvision names) with every conv bias folded into the
    BatchNorm after it (``running_mean - b``) and each BN's eps into its variance
    (``running_var + eps - 1e-5``), computed in float64 and stored as float32 once."""
    folded: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        folded[key] = np.asarray(value, dtype=np.int64 if key.endswith("tracked") else np.float32)
    for key in [k for k in arrays if k.endswith(".running_mean")]:
        bn = key[: -len(".running_mean")]
        mean = np.asarray(arrays[key], dtype=np.float64)
        bias = arrays.get(f"{conv_of(bn)}.bias")
        if bias is not None:
            mean = mean - np.asarray(bias, dtype=np.float64)
            del folded[f"{conv_of(bn)}.bias"]
        var = np.asarray(arrays[f"{bn}.running_var"], dtype=np.float64)
        folded[key] = mean.astype(np.float32)
        folded[f"{bn}.running_var"] = (var + (config.eps(bn) - FRAMEWORK_BN_EPS)).astype(np.float32)
    return folded


def detectron2_name(key: str) -> str:
    """A CaffeResNet (torchvision) key as detectron2's ResNet names it: ``conv1`` ->
    ``stem.conv1``, ``layer1.0.bn2`` -> ``res2.0.conv2.norm``, ``downsample.0/1`` ->
    ``shortcut`` / ``shortcut.norm``, ``fc`` -> ``linear``."""
    parts = key.split(".")
    if parts[0] == "fc":
        return "linear." + parts[1]
    if parts[0] in ("conv1", "bn1"):
        return "stem.conv1." + ("norm." if parts[0] == "bn1" else "") + parts[1]
    stage, block, module, rest = f"res{int(parts[0][5:]) + 1}", parts[1], parts[2], parts[3:]
    if module == "downsample":
        name = "shortcut" if rest[0] == "0" else "shortcut.norm"
        rest = rest[1:]
    elif module.startswith("bn"):
        name = f"conv{module[2:]}.norm"
    else:
        name = module
    return ".".join([stage, block, name, *rest])


def detectron2_state(folded: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """detectron2's keys and values (FrozenBN keeps no ``num_batches_tracked``)."""
    return {detectron2_name(k): v for k, v in sorted(folded.items()) if not k.endswith("tracked")}


def write_checkpoint(
    framework: str,
    folded: Mapping[str, np.ndarray],
    metadata: Mapping[str, str],
    path: str | os.PathLike,
) -> Path:
    """detectron2: a pickle of ``{"model": arrays, "__author__", "matching_heuristics"}``,
    which its checkpointer uses as is. mmdet: ``torch.save({"state_dict", "meta"})`` with
    torchvision's names, as mmengine's ``load_checkpoint`` reads it. Written atomically."""
    path = Path(path)
    if framework == "detectron2":
        payload = {
            "model": detectron2_state(folded),
            "__author__": f"caffe2torch {__version__}",
            "matching_heuristics": True,
        }
        with atomic_write(path) as handle:
            pickle.dump(payload, handle, protocol=4)
        return path
    import torch

    state = {k: torch.from_numpy(np.array(v)) for k, v in sorted(folded.items())}
    with atomic_write(path, defer_errors=True) as handle:
        torch.save({"state_dict": state, "meta": dict(metadata)}, handle)
    return path


# ----------------------------------------------------------------------------- what to tell users


def _stage_blob(config: ResNetConfig, tap: str) -> str:
    return next(blob for t, blob in reversed(config.blobs) if t == tap)


def stem_pool_difference(
    model, config: ResNetConfig, x: np.ndarray
) -> tuple[dict[str, float], tuple[int, ...], tuple[int, ...]]:
    """What the frameworks' stem max-pool (pad 1, floor) changes against Caffe's (pad 0,
    ceil) in ``model`` (a float32 CaffeResNet) on input ``x``: ``max|theirs - caffe| /
    max|caffe|`` at the last residual blob and at the fc blob, and both pool1 sizes.
    Sizes differ when the input side mod 4 is 1 or 2; then no error is measured."""
    import torch
    from torch import nn

    last = f"layer{len(config.stages)}.{config.stages[-1].blocks - 1}"
    names = [_stage_blob(config, last), _stage_blob(config, "fc")]
    ours = model.forward_blobs(torch.from_numpy(x), names)
    caffe_pool = model.maxpool
    theirs_pool = nn.MaxPool2d(3, 2, 1)
    try:
        stem = model.relu(model.bn1(model.conv1(torch.from_numpy(x))))
        sizes = tuple(caffe_pool(stem).shape[2:]), tuple(theirs_pool(stem).shape[2:])
        if sizes[0] != sizes[1]:
            return {}, sizes[0], sizes[1]
        model.maxpool = theirs_pool
        theirs = model.forward_blobs(torch.from_numpy(x), names)
    finally:
        model.maxpool = caffe_pool
    errors = {}
    for name in names:
        ref = ours[name].double()
        scale = float(ref.abs().max()) or 1.0
        errors[name] = float((theirs[name].double() - ref).abs().max()) / scale
    return errors, sizes[0], sizes[1]


def settings_text(
    framework: str,
    config: ResNetConfig,
    depth: int,
    path: str | os.PathLike,
    convention: InputConvention,
) -> str:
    """The lines a user puts in their framework config to use the checkpoint; the mean and
    std from the input convention ((x - mean) * scale is (x - mean) / std, std = 1 / scale)."""
    means = convention.mean
    mean = "[" + ", ".join(f"{m:.3f}" for m in means) + "]" if means is not None else "[B, G, R]"
    note = (
        []
        if means is not None
        else [
            "  ([B, G, R]: the per-channel mean the net was trained with; --mean fills it in. "
            "Kaiming's ResNet_mean.binaryproto: [103.063, 115.903, 123.152])"
        ]
    )
    std = "[" + ", ".join([str(round(convention.std, 6))] * config.input_shape[1]) + "]"
    bottleneck = config.block == "bottleneck"
    base, stem = config.stages[0].width, config.stem_channels
    if framework == "detectron2":
        lines = [
            f'MODEL.WEIGHTS: "{path}"',
            f"MODEL.RESNETS.DEPTH: {depth}",
            'MODEL.RESNETS.NORM: "FrozenBN"',
        ]
        if bottleneck:
            lines.append(f"MODEL.RESNETS.STRIDE_IN_1X1: {config.stride_in_1x1}")
        if stem != 64:
            lines.append(f"MODEL.RESNETS.STEM_OUT_CHANNELS: {stem}")
        if config.stages[0].out_channels != (256 if bottleneck else 64):
            lines.append(f"MODEL.RESNETS.RES2_OUT_CHANNELS: {config.stages[0].out_channels}")
            if not bottleneck:
                lines.append(
                    "  (detectron2's build_resnet_backbone accepts only 64 for R18/R34: "
                    "build the backbone with ResNet.make_default_stages instead)"
                )
        if bottleneck and base != 64:
            lines.append(f"MODEL.RESNETS.WIDTH_PER_GROUP: {base}")
        lines += ['INPUT.FORMAT: "BGR"', f"MODEL.PIXEL_MEAN: {mean}", *note]
        lines.append(f"MODEL.PIXEL_STD: {std}")
        return "\n".join(lines)
    style = "caffe" if config.stride_in_1x1 or not bottleneck else "pytorch"
    extra = f", base_channels={base}" if base != 64 else ""
    extra += f", stem_channels={stem}" if stem != base else ""
    return "\n".join(
        [
            f"backbone=dict(type='ResNet', depth={depth}{extra}, style='{style}',",
            "    norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,",
            f"    init_cfg=dict(type='Pretrained', checkpoint='{path}'))",
            f"data_preprocessor=dict(mean={mean}, std={std}, bgr_to_rgb=False)",
            *note,
        ]
    )
