"""Layers that route, reshape or pick blobs: Input, Concat, Slice, Split, Flatten, Reshape,
Crop, Tile, Silence, Parameter, BatchReindex, and the forks' ShuffleChannel (ShuffleNet),
Permute (SSD) and Unsqueeze (inisis/caffe).

Caffe: ``src/caffe/layers/<type>_layer.cpp``; ShuffleChannel: farmingyard/ShuffleNet
``shuffle_channel_layer.cpp``. Split, Flatten and Reshape make their tops
share the bottom's memory (``ShareData``), and so do a one-bottom Concat and a one-top
Slice: an in-place layer writing one of those blobs changes the others too.
"""

from __future__ import annotations

import math

from converter.errors import ConverterError
from converter.layers.registry import (
    LayerCode,
    LayerShapes,
    Shape,
    canonical_axis,
    need_bottoms,
    register_layer,
)

# ----------------------------------------------------------------------------- Input


def input_shapes(layer, where: str) -> list[Shape]:
    """The shape an Input layer declares for each of its tops (one shape for all, or one each)."""
    declared = [tuple(s.dim) for s in layer.param.input_param.shape]
    if len(declared) > 1 and len(declared) != len(layer.tops):
        raise ConverterError(
            f"{where} has {len(layer.tops)} tops but {len(declared)} shapes "
            "(give one shape, or one per top)"
        )
    if layer.tops and not declared:
        raise ConverterError(f"{where} declares no shape")
    return [declared[i] if len(declared) > 1 else declared[0] for i in range(len(layer.tops))]


def _input_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 0, where)
    return LayerShapes(input_shapes(layer, where), [])


def _input_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import CaffeInput

    return CaffeInput()


register_layer("Input", shape=_input_shapes, module=_input_module)

# ----------------------------------------------------------------------------- Concat


def _concat_axis(layer, ndim: int, where: str) -> int:
    cp = layer.param.concat_param
    return canonical_axis(cp.concat_dim if cp.HasField("concat_dim") else cp.axis, ndim, where)


def _concat_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, (1, 1 << 30), where)
    axis = _concat_axis(layer, len(bottoms[0]), where)
    for b in bottoms[1:]:
        if len(b) != len(bottoms[0]) or any(
            x != y for i, (x, y) in enumerate(zip(b, bottoms[0])) if i != axis
        ):
            raise ConverterError(f"{where}: inputs {bottoms} differ outside axis {axis}")
    total = sum(b[axis] for b in bottoms)
    return LayerShapes([bottoms[0][:axis] + (total,) + bottoms[0][axis + 1 :]], [])


def _concat_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Concat

    return Concat(_concat_axis(layer, len(bottoms[0]), where))


def _concat_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    axis = _concat_axis(layer, len(bottoms[0]), where)
    names = ", ".join(f"{{{i}}}" for i in range(len(bottoms)))
    return LayerCode(f"torch.cat([{names}], dim={axis})")


register_layer(
    "Concat",
    shape=_concat_shapes,
    module=_concat_module,
    shares_memory=lambda layer: len(layer.bottoms) == 1,
    code=_concat_code,
)

# ----------------------------------------------------------------------------- Slice


def slice_axis(sp, ndim: int, where: str) -> int:
    """The axis a SliceParameter cuts (``slice_dim`` is its legacy spelling)."""
    return canonical_axis(sp.slice_dim if sp.HasField("slice_dim") else sp.axis, ndim, where)


def slice_bounds(sp, size: int, n_tops: int) -> list[tuple[int, int]]:
    """[start, end) of each Slice top along the slice axis."""
    points = list(sp.slice_point) or [size // n_tops * i for i in range(1, n_tops)]
    bounds = [0, *points, size]
    return list(zip(bounds, bounds[1:]))


def _slice_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    sp, n_tops = layer.param.slice_param, len(layer.tops)
    shape = bottoms[0]
    axis = slice_axis(sp, len(shape), where)
    size = shape[axis]
    points = list(sp.slice_point)
    if n_tops < 1:
        raise ConverterError(f"{where}: a Slice layer needs at least one top")
    if points:
        if len(points) != n_tops - 1 or points != sorted(points) or points[-1] >= size:
            raise ConverterError(
                f"{where}: slice points {points} do not fit {n_tops} tops of {size}"
            )
        bounds = [0, *points, size]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    else:
        if size % n_tops:
            raise ConverterError(f"{where}: {size} does not split evenly into {n_tops} tops")
        sizes = [size // n_tops] * n_tops
    return LayerShapes([shape[:axis] + (s,) + shape[axis + 1 :] for s in sizes], [])


def _slice_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Slice

    sp = layer.param.slice_param
    return Slice(sp, slice_axis(sp, len(bottoms[0]), where), len(layer.tops))


def _slice_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    sp, n_tops = layer.param.slice_param, len(layer.tops)
    axis = slice_axis(sp, len(bottoms[0]), where)
    if n_tops == 1:
        return LayerCode("{0}")
    points = list(sp.slice_point)
    if not points:  # equal parts (Caffe requires the size to divide evenly)
        return LayerCode(f"torch.chunk({{0}}, {n_tops}, dim={axis})")
    sizes = [str(b - a) for a, b in zip([0, *points], points)]
    sizes.append(f"{{0}}.shape[{axis}] - {points[-1]}")
    return LayerCode(f"torch.split({{0}}, [{', '.join(sizes)}], dim={axis})")


register_layer(
    "Slice",
    shape=_slice_shapes,
    module=_slice_module,
    shares_memory=lambda layer: len(layer.tops) == 1,
    code=_slice_code,
)

# ----------------------------------------------------------------------------- Split


def _split_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    return LayerShapes([bottoms[0]] * len(layer.tops), [])


def _split_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Split

    return Split(len(layer.tops))


def _split_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    return LayerCode("(" + ", ".join(["{0}"] * len(layer.tops)) + ")")


register_layer(
    "Split", shape=_split_shapes, module=_split_module, shares_memory=True, code=_split_code
)

# ----------------------------------------------------------------------------- Flatten


def flatten_axes(layer, ndim: int, where: str) -> tuple[int, int]:
    """First and last axis (inclusive) a Flatten layer merges."""
    fp = layer.param.flatten_param
    return canonical_axis(fp.axis, ndim, where), canonical_axis(fp.end_axis, ndim, where)


def _flatten_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    shape = bottoms[0]
    start, end = flatten_axes(layer, len(shape), where)
    return LayerShapes(
        [shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :]], []
    )


def _flatten_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Flatten

    return Flatten(*flatten_axes(layer, len(bottoms[0]), where))


def _flatten_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    start, end = flatten_axes(layer, len(bottoms[0]), where)
    return LayerCode(f"{{0}}.flatten({start}, {end})")


register_layer(
    "Flatten", shape=_flatten_shapes, module=_flatten_module, shares_memory=True, code=_flatten_code
)

# ----------------------------------------------------------------------------- Reshape


def reshape_shape(rp, shape: Shape, where: str) -> Shape:
    """Top shape of a Reshape layer: 0 copies an input axis, -1 is inferred (Caffe rules)."""
    dims = list(rp.shape.dim)
    start = canonical_axis(rp.axis, len(shape) + 1, where) if rp.axis < 0 else rp.axis
    if rp.axis < 0:
        start = len(shape) + 1 + rp.axis
    if start > len(shape):
        raise ConverterError(f"{where}: reshape axis {rp.axis} out of range for {shape}")
    end = len(shape) if rp.num_axes == -1 else start + rp.num_axes
    if rp.num_axes < -1 or end > len(shape):
        raise ConverterError(f"{where}: reshape num_axes {rp.num_axes} out of range for {shape}")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(shape):
                raise ConverterError(f"{where}: reshape dim {i} copies a missing input axis")
            new.append(shape[start + i])
        else:
            new.append(d)
    if new.count(-1) > 1 or any(d < -1 for d in new):
        raise ConverterError(f"{where}: invalid reshape dims {dims}")
    result = list(shape[:start]) + new + list(shape[end:])
    if -1 in result:
        known = math.prod(d for d in result if d != -1)
        total = math.prod(shape)
        if known == 0 or total % known:
            raise ConverterError(f"{where}: cannot infer -1 reshaping {shape} to {dims}")
        result[result.index(-1)] = total // known
    if math.prod(result) != math.prod(shape):
        raise ConverterError(f"{where}: reshape of {shape} to {tuple(result)} changes the count")
    return tuple(result)


def _reshape_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    return LayerShapes([reshape_shape(layer.param.reshape_param, bottoms[0], where)], [])


def _reshape_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Reshape

    return Reshape(layer.param.reshape_param, where)


def _reshape_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """The new shape as an expression of the input's: axes outside ``axis..axis+num_axes``
    and ``0`` dims copy the input's size (so the batch stays free), ``-1`` is inferred."""
    rp, shape = layer.param.reshape_param, bottoms[0]
    reshape_shape(rp, shape, where)  # the same refusals
    start = len(shape) + 1 + rp.axis if rp.axis < 0 else rp.axis
    end = len(shape) if rp.num_axes == -1 else start + rp.num_axes
    dims = [f"{{0}}.shape[{i}]" for i in range(start)]
    dims += [f"{{0}}.shape[{start + i}]" if d == 0 else str(d) for i, d in enumerate(rp.shape.dim)]
    dims += [f"{{0}}.shape[{i}]" for i in range(end, len(shape))]
    return LayerCode(f"{{0}}.reshape({', '.join(dims)})")


register_layer(
    "Reshape", shape=_reshape_shapes, module=_reshape_module, shares_memory=True, code=_reshape_code
)

# ----------------------------------------------------------------------------- ShuffleChannel


def shuffle_groups(layer, shape: Shape, where: str) -> int:
    """The ``group`` of a ShuffleChannel layer, checked as the fork checks it: positive and
    dividing the channels (axis 1). Output channel ``j * group + i`` is input channel
    ``i * (C / group) + j`` (farmingyard/ShuffleNet ``shuffle_channel_layer.cpp``)."""
    group = layer.param.shuffle_channel_param.group
    if len(shape) < 2:
        raise ConverterError(f"{where}: ShuffleChannel needs a channel axis, found {shape}")
    if group <= 0 or shape[1] % group:
        raise ConverterError(
            f"{where}: group {group} does not divide the {shape[1]} channels of {shape}"
        )
    return group


def _shuffle_channel_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    shuffle_groups(layer, bottoms[0], where)
    return LayerShapes([bottoms[0]], [])


def _shuffle_channel_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import ShuffleChannel

    return ShuffleChannel(shuffle_groups(layer, bottoms[0], where))


def _shuffle_channel_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """The channels as a (group, C / group) grid, transposed."""
    group = shuffle_groups(layer, bottoms[0], where)
    grid = f"({group}, {bottoms[0][1] // group})"
    return LayerCode(f"{{0}}.unflatten(1, {grid}).transpose(1, 2).flatten(1, 2)")


# Not in place: the fork copies channel blocks from bottom to top, which overwrites
# blocks it has yet to read when top == bottom.
register_layer(
    "ShuffleChannel",
    shape=_shuffle_channel_shapes,
    module=_shuffle_channel_module,
    code=_shuffle_channel_code,
)


# ----------------------------------------------------------------------------- Permute


def permute_order(layer, ndim: int, where: str) -> tuple[int, ...]:
    """The full axis order of a Permute layer (SSD's ``permute_layer.cpp``): ``order``, then
    the axes it leaves out in increasing order ([0, 3] on 4-D is [0, 3, 1, 2])."""
    order = list(layer.param.permute_param.order)
    if any(axis >= ndim for axis in order) or len(set(order)) != len(order):
        raise ConverterError(
            f"{where}: order {order} must name distinct axes of the {ndim}-D input"
        )
    return tuple(order + [axis for axis in range(ndim) if axis not in order])


def _permute_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    order = permute_order(layer, len(bottoms[0]), where)
    return LayerShapes([tuple(bottoms[0][axis] for axis in order)], [])


def _permute_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Permute

    return Permute(permute_order(layer, len(bottoms[0]), where))


def _permute_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    order = ", ".join(map(str, permute_order(layer, len(bottoms[0]), where)))
    return LayerCode(f"{{0}}.permute({order})")


register_layer("Permute", shape=_permute_shapes, module=_permute_module, code=_permute_code)

# ----------------------------------------------------------------------------- Unsqueeze


def unsqueeze_axis(layer, ndim: int, where: str) -> int:
    """Where inisis/caffe's Unsqueeze inserts its axis of size 1 (``dim``, a negative one
    counted as ``dim + ndim + 1``, as torch.unsqueeze does)."""
    up = layer.param.unsqueeze_param
    if not up.HasField("dim"):
        raise ConverterError(f"{where}: Unsqueeze needs dim")
    axis = up.dim + ndim + 1 if up.dim < 0 else up.dim
    if not 0 <= axis <= ndim:
        raise ConverterError(f"{where}: dim {up.dim} is out of range for a {ndim}-D input")
    return axis


def _unsqueeze_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    axis = unsqueeze_axis(layer, len(bottoms[0]), where)
    return LayerShapes([bottoms[0][:axis] + (1,) + bottoms[0][axis:]], [])


def _unsqueeze_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Unsqueeze

    return Unsqueeze(unsqueeze_axis(layer, len(bottoms[0]), where))


def _unsqueeze_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    return LayerCode(f"{{0}}.unsqueeze({unsqueeze_axis(layer, len(bottoms[0]), where)})")


register_layer("Unsqueeze", shape=_unsqueeze_shapes, module=_unsqueeze_module, code=_unsqueeze_code)


# ----------------------------------------------------------------------------- Crop


def crop_offsets(layer, bottoms: list[Shape], where: str) -> list[int]:
    """Per axis, where the crop starts (0 before ``axis``), by ``crop_layer.cpp``'s rules:
    no offset means 0, one offset is used for every cropped axis, else one per cropped axis.
    Checks that each window fits bottom 0."""
    need_bottoms(bottoms, 2, where)
    shape, target = bottoms
    if len(shape) != len(target):
        raise ConverterError(
            f"{where}: bottom 0 {shape} and the reference bottom {target} differ in axes"
        )
    cp = layer.param.crop_param
    start = canonical_axis(cp.axis, len(shape), where)
    given = list(cp.offset)
    if len(given) > 1 and len(given) != len(shape) - start:
        raise ConverterError(
            f"{where}: {len(given)} offsets for the {len(shape) - start} cropped axes "
            f"from axis {start}"
        )
    offsets = [0] * len(shape)
    for axis in range(start, len(shape)):
        offsets[axis] = given[0] if len(given) == 1 else given[axis - start] if given else 0
        if shape[axis] - offsets[axis] < target[axis]:
            raise ConverterError(
                f"{where}: the crop of axis {axis} (size {target[axis]} at offset "
                f"{offsets[axis]}) does not fit the input size {shape[axis]}"
            )
    return offsets


def _crop_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    crop_offsets(layer, bottoms, where)  # the checks
    start = canonical_axis(layer.param.crop_param.axis, len(bottoms[0]), where)
    return LayerShapes([bottoms[0][:start] + bottoms[1][start:]], [])


def _crop_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Crop

    start = canonical_axis(layer.param.crop_param.axis, len(bottoms[0]), where)
    return Crop(start, crop_offsets(layer, bottoms, where)[start:])


def _crop_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """Axes from ``axis`` on take the reference's (bottom 1's) size, from the offsets."""
    start = canonical_axis(layer.param.crop_param.axis, len(bottoms[0]), where)
    expr = "{0}"
    for i, offset in enumerate(crop_offsets(layer, bottoms, where)[start:]):
        expr += f".narrow({start + i}, {offset}, {{1}}.shape[{start + i}])"
    return LayerCode(expr)


register_layer("Crop", shape=_crop_shapes, module=_crop_module, code=_crop_code)

# ----------------------------------------------------------------------------- Tile


def tile_axis(layer, ndim: int, where: str) -> int:
    """The axis a Tile layer repeats along; refuses ``tiles`` < 1 as ``tile_layer.cpp``."""
    tp = layer.param.tile_param
    if tp.tiles < 1:
        raise ConverterError(f"{where}: tiles must be positive, found {tp.tiles}")
    return canonical_axis(tp.axis, ndim, where)


def _tile_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    shape = bottoms[0]
    axis = tile_axis(layer, len(shape), where)
    tiles = layer.param.tile_param.tiles
    return LayerShapes([shape[:axis] + (shape[axis] * tiles,) + shape[axis + 1 :]], [])


def _tile_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Tile

    return Tile(tile_axis(layer, len(bottoms[0]), where), layer.param.tile_param.tiles)


def _tile_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    repeats = [1] * len(bottoms[0])
    repeats[tile_axis(layer, len(bottoms[0]), where)] = layer.param.tile_param.tiles
    return LayerCode(f"{{0}}.repeat({', '.join(map(str, repeats))})")


register_layer("Tile", shape=_tile_shapes, module=_tile_module, code=_tile_code)

# ----------------------------------------------------------------------------- Silence


def _silence_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    if layer.tops:
        raise ConverterError(f"{where}: a Silence layer has no tops, found {layer.tops}")
    return LayerShapes([], [])


def _silence_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Silence

    return Silence()


# It stays in the net: it consumes its bottoms, so they are not outputs of the net.
def _silence_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    return LayerCode("")  # no tops: nothing to compute


register_layer("Silence", shape=_silence_shapes, module=_silence_module, code=_silence_code)

# ----------------------------------------------------------------------------- Parameter


def _parameter_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 0, where)
    shape = tuple(layer.param.parameter_param.shape.dim)
    return LayerShapes([shape], [shape])


def _parameter_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import Parameter

    return Parameter(tuple(layer.param.parameter_param.shape.dim))


# Its top is its one blob (``parameter_layer.hpp``), the module's ``weight``.
_PARAMETER = '''
class CaffeParameter(nn.Module):
    """Caffe's Parameter layer: its top is its learned blob."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape))

    def forward(self) -> torch.Tensor:
        return self.weight.clone()
'''


def _parameter_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    shape = ", ".join(map(str, layer.param.parameter_param.shape.dim))
    return LayerCode("{m}()", f"CaffeParameter({shape})", (_PARAMETER,))


register_layer("Parameter", shape=_parameter_shapes, module=_parameter_module, code=_parameter_code)

# ----------------------------------------------------------------------------- BatchReindex


def _batch_reindex_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 2, where)
    if len(bottoms[1]) != 1:
        raise ConverterError(f"{where}: the index bottom must be 1-D, found {bottoms[1]}")
    return LayerShapes([bottoms[1] + bottoms[0][1:]], [])


def _batch_reindex_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.shape import BatchReindex

    return BatchReindex()


def _batch_reindex_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    return LayerCode("{0}.index_select(0, {1}.long())")


register_layer(
    "BatchReindex",
    shape=_batch_reindex_shapes,
    module=_batch_reindex_module,
    code=_batch_reindex_code,
)
