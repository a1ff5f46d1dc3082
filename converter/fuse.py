"""Fold BatchNorm+Scale into the convolution before it, for deployment.

For a conv ``y = W*x + b`` followed by BN (mean, var, eps) and Scale (gamma, beta)::

    k  = gamma / sqrt(var + eps)
    W' = W * k        (per output channel)
    b' = (b - mean) * k + beta

computed in float64 and stored as float32, so the only new error is one rounding of W'
and b' (about 6e-8 relative per layer).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from converter.errors import ConverterError
from converter.resnet.config import ResNetConfig


def conv_of(bn_module: str) -> str:
    """The conv that feeds a BatchNorm2d module of CaffeResNet, by torchvision naming."""
    head, _, last = bn_module.rpartition(".")
    prefix = f"{head}." if head else ""
    if last.startswith("bn"):
        return f"{prefix}conv{last[2:]}"
    if bn_module.endswith("downsample.1"):
        return f"{head}.0"
    raise ConverterError(f"cannot find the conv feeding BatchNorm module '{bn_module}'")


def fuse_resnet(
    config: ResNetConfig, arrays: dict[str, np.ndarray]
) -> tuple[ResNetConfig, dict[str, np.ndarray]]:
    """The config and state-dict arrays of the same ResNet with every BN folded into its conv."""
    if config.fused_bn:
        return config, arrays
    fused = dict(arrays)
    for key in [k for k in arrays if k.endswith(".running_mean")]:
        bn = key[: -len(".running_mean")]
        conv = conv_of(bn)
        mean = arrays[f"{bn}.running_mean"].astype(np.float64)
        var = arrays[f"{bn}.running_var"].astype(np.float64)
        gamma = arrays[f"{bn}.weight"].astype(np.float64)
        beta = arrays[f"{bn}.bias"].astype(np.float64)
        weight = arrays[f"{conv}.weight"].astype(np.float64)
        bias = arrays.get(f"{conv}.bias")
        bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
        # What overflows float32 or turns NaN here is reported once, by name, by the
        # conversion's non-finite screen, not as NumPy warnings pointing at this line.
        with np.errstate(all="ignore"):
            k = gamma / np.sqrt(var + config.eps(bn))
            fused[f"{conv}.weight"] = (weight * k[:, None, None, None]).astype(np.float32)
            fused[f"{conv}.bias"] = ((bias - mean) * k + beta).astype(np.float32)
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            fused.pop(f"{bn}.{suffix}", None)
    # Taps between a conv and its BN no longer exist; the last tap of each blob still does.
    final_taps = {blob: tap for tap, blob in config.blobs}
    blobs = [[tap, blob] for tap, blob in config.blobs if final_taps[blob] == tap]
    new_config = dataclasses.replace(config, fused_bn=True, blobs=blobs)
    return new_config, fused
