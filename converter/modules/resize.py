"""Modules of the resizing family: the DeepLab / PSPNet forks' Interp."""

from __future__ import annotations

import torch
from torch import nn

from converter.layers.resize import InterpSpec


class Interp(nn.Module):
    """Interp: crop by ``pad_beg``/``pad_end``, then resample with aligned corners.

    Source positions are computed in float32 whatever the tensor's dtype, as
    ``caffe_cpu_interp2`` does (``float rheight = (in - 1) / (out - 1)``, position
    ``rheight * i``, its integer part and fraction), so a float64 model reproduces a
    float64 Caffe exactly; ``torch.nn.functional.interpolate`` would compute them in the
    tensor's dtype. An output of the cropped input's size is a copy.
    """

    def __init__(self, spec: InterpSpec, where: str):
        super().__init__()
        self.spec = spec
        self.where = where

    def extra_repr(self) -> str:
        return repr(self.spec)

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        spec = self.spec
        height, width = x.shape[2:]
        ref_shape = None if reference is None else tuple(reference.shape)
        in_h, in_w, out_h, out_w = spec.output_size(height, width, ref_shape, self.where)
        x = x[:, :, -spec.pad_beg : -spec.pad_beg + in_h, -spec.pad_beg : -spec.pad_beg + in_w]
        if (in_h, in_w) == (out_h, out_w):
            return x.clone()
        rows, row_weight = _positions(in_h, out_h, spec.nearest, x.device)
        cols, col_weight = _positions(in_w, out_w, spec.nearest, x.device)
        if spec.nearest:
            return x[:, :, rows[0]][:, :, :, cols[0]]
        top, bottom = x[:, :, rows[0]], x[:, :, rows[1]]
        lam_h = row_weight.to(x.dtype)[:, None]
        lam_w = col_weight.to(x.dtype)
        # Caffe's order: h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11).
        upper = (1 - lam_w) * top[..., cols[0]] + lam_w * top[..., cols[1]]
        lower = (1 - lam_w) * bottom[..., cols[0]] + lam_w * bottom[..., cols[1]]
        return (1 - lam_h) * upper + lam_h * lower


def _positions(size_in: int, size_out: int, nearest: bool, device):
    """([first index, second index], fraction) per output position, in float32 arithmetic.

    The second index is the next input position, or the same one at the last; nearest
    rounds the position half up (``floor(pos + 0.5)``) and takes no fraction.
    """
    f32 = torch.float32
    if size_out > 1:
        ratio = torch.tensor(size_in - 1, dtype=f32) / torch.tensor(size_out - 1, dtype=f32)
    else:
        ratio = torch.tensor(0.0, dtype=f32)
    position = ratio * torch.arange(size_out, dtype=f32)
    if nearest:
        index = torch.floor(position.double() + 0.5).long()
        return [index.to(device)], None
    index = position.long()  # truncation, as the int conversion in Caffe
    fraction = position - index.to(f32)
    following = torch.where(index < size_in - 1, index + 1, index)
    return [index.to(device), following.to(device)], fraction.to(device)
