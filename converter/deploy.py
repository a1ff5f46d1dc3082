"""A training net, or a deploy file with training leftovers, as the net Caffe runs in TEST.

Caffe builds a net for one phase: read in the TEST phase, a train_val.prototxt keeps the
layers whose include/exclude rules select TEST (``net.net_from_param`` applies them). What
Caffe then reads from a database, this tool has to be told: each data layer becomes an
``Input`` of the shape Caffe would give its tops, by the rules of Caffe's own sources
(below), and what the file cannot say comes from ``input_shapes`` (``--input-shape``).
Losses and Accuracy are dropped, with the label blobs only they read, and so is any layer
that reads a dropped blob (a Silence on the label, ...); the net's output is then what fed
the loss. One ``DeployNetWarning`` line lists every change.

Shapes of the data layers' tops (BVLC Caffe, ``src/caffe/layers/*_layer.cpp``):

- Data (``data_layer.cpp``, ``DataTransformer::InferBlobShape`` of the first datum):
  ``(batch_size, C, crop_size or H, crop_size or W)``, C, H, W those of the database's
  images. Known from the prototxt: C when ``transform_param`` has one ``mean_value`` per
  channel (Caffe accepts one, or one per channel), or ``force_color`` (3) / ``force_gray``
  (1); H and W with ``crop_size``.
- ImageData (``image_data_layer.cpp``): ``(batch_size, 3 if is_color else 1, crop_size or
  new_height, crop_size or new_width)``; without those, the first image's size.
- MemoryData (``memory_data_layer.cpp``): ``(batch_size, channels, height, width)``.
- WindowData (``window_data_layer.cpp``): ``(batch_size, C, crop_size, crop_size)`` with C
  from the window file; its images are read in colour, so 3 unless ``mean_value`` says
  otherwise.
- DummyData (``dummy_data_layer.cpp``): its ``shape`` (one, or one per top), or the legacy
  ``num/channels/height/width`` (each given once or per top).
- HDF5Data (``hdf5_data_layer.cpp``): ``(batch_size, ...)`` of each top's dataset in the
  listed HDF5 files, which are not read here; a bottomless Python layer: whatever its code
  makes. Both need ``input_shapes``.

A label top is ``(batch_size,)``. A missing ``batch_size`` gives batch 1 (said in the line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from converter import caffe_pb2
from converter.errors import ConverterError, counted, noun

Shape = tuple[int, ...]
InputShapes = Mapping[str, Sequence[int]] | Sequence[int] | None

DATA_LAYER_TYPES = ("Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData")
_LABELLED = ("Data", "ImageData", "MemoryData", "WindowData")  # top 1 is the label


class DeployNetWarning(UserWarning):
    """The net was changed into the deploy net Caffe runs: the message lists the changes."""


def is_training_only(lp: caffe_pb2.LayerParameter) -> bool:
    """A loss or an Accuracy layer: nothing a deploy net computes depends on it."""
    return lp.type.endswith("Loss") or lp.type == "Accuracy"


def is_data_layer(lp: caffe_pb2.LayerParameter) -> bool:
    return lp.type in DATA_LAYER_TYPES or (lp.type == "Python" and not lp.bottom)


def to_deploy(
    layers: Sequence[caffe_pb2.LayerParameter],
    source: str,
    input_shapes: InputShapes = None,
    left_out: int = 0,
    fill_shape: Sequence[int] | None = None,
    unfilled: dict[str, str] | None = None,
) -> tuple[list[caffe_pb2.LayerParameter], list[str]]:
    """The TEST-phase ``layers`` as a deploy net, and what was changed (empty: nothing).

    ``left_out``: how many TRAIN-only layers the phase rules removed (for the message).
    ``input_shapes`` gives or replaces input shapes: ``{blob: shape}``, or one shape for a
    net with one input; a shape keeps the number of axes the file declares. ``fill_shape``
    (the shape of the array verify runs on) completes the one input whose sizes only the
    data says (a Data layer without crop_size) where ``input_shapes`` does not, if it fits
    what the file says (``_fits``). Raises ConverterError for a data layer whose shape
    neither gives, and for an ``input_shapes`` naming no input or with other axes; given
    an ``unfilled`` dict, such a layer becomes an Input without a shape instead, and the
    error's message goes into it under the top's name (``inspect`` shows the net up to it).
    """
    training = {i for i, lp in enumerate(layers) if is_training_only(lp)}
    gone = _unused_inputs(layers, training)
    removed_inputs = sorted(gone)
    dropped = _dropped_layers(layers, training, gone)
    result: list[caffe_pb2.LayerParameter] = []
    converted: list[tuple[caffe_pb2.LayerParameter, str]] = []
    unknown: dict[str, tuple[str, tuple]] = {}  # top -> (data layer, partial shape)
    for index, lp in enumerate(layers):
        data = is_data_layer(lp)
        if index in dropped:
            continue
        if not data and not (lp.type == "Input" and gone.intersection(lp.top)):
            result.append(lp)
            continue
        tops = [t for t in lp.top if t not in gone]
        if not tops:
            dropped.add(index)
            continue
        if data:
            shapes, note = _data_shapes(lp, source)
            converted.append((lp, note))
        else:
            shapes = _declared_shapes(lp)
        kept = [shapes[list(lp.top).index(t)] for t in tops]
        if data:
            unknown.update((t, (lp.name, s)) for t, s in zip(tops, kept) if None in s)
        result.append(_input_layer(lp.name, tops, kept))
        if data and lp.HasField("transform_param"):
            # what the layer did to its images (mean, scale) is the model's input
            # convention: kept on the Input (which Caffe's Input ignores), for the record
            result[-1].transform_param.CopyFrom(lp.transform_param)
    declared = {
        top: shape
        for lp in result
        if lp.type == "Input"
        for top, shape in zip(lp.top, _declared_shapes(lp))
        if shape
    }
    # a data layer's partial shape has its number of axes, but (None,) (HDF5Data, Python) not
    declared.update((top, partial) for top, (_, partial) in unknown.items() if len(partial) > 1)
    given = normalize_input_shapes(input_shapes, _input_tops(result), source, declared)
    open_tops = [top for top in unknown if top not in given]
    filled = None
    if len(open_tops) == 1 and _fits(fill_shape, unknown[open_tops[0]][1]):
        filled = open_tops[0]
        given[filled] = _with_batch_axis(tuple(fill_shape), unknown[filled][1])
    result = [_with_shapes(lp, given) for lp in result]
    for top, (name, partial) in unknown.items():
        if top not in given:
            known = _shape_text(partial)
            unfit = (
                f"; the input array's shape {_shape_text(fill_shape)} does not fit it"
                if fill_shape is not None and len(open_tops) == 1
                else ""
            )
            message = (
                f"{source}: data layer '{name}' gives its top '{top}' no complete shape "
                f"(known: {known}; Caffe takes the rest from the data it reads){unfit}: pass "
                f"--input-shape {top}:N,C,H,W (Python: input_shapes={{'{top}': (N, C, H, W)}})"
            )
            if unfilled is None:
                raise ConverterError(message)
            unfilled[top] = message
    if not (converted or dropped or removed_inputs):
        return result, []
    changes = [
        "read as the deploy net Caffe runs in the TEST phase"
        + (f" ({counted(left_out, 'TRAIN-only layer')} left out)" if left_out else "")
    ]
    inputs = {lp.name: lp for lp in result if lp.type == "Input"}
    for lp, note in converted:
        if lp.name in inputs:
            shape = tuple(inputs[lp.name].input_param.shape[0].dim)
            if filled in lp.top:
                note = " (its sizes from the input array)"
            open_top = next((t for t in lp.top if t in (unfilled or {})), None)
            if open_top is not None:
                shape = _shape_text(unknown[open_top][1])  # inspect: the sizes stay open
            changes.append(f"{lp.type} '{lp.name}' became an Input of shape {shape}{note}")
    if dropped:
        names = ", ".join(f"{layers[i].type} '{layers[i].name}'" for i in sorted(dropped))
        changes.append(f"dropped {names}")
    if removed_inputs:
        names = ", ".join(f"'{b}'" for b in removed_inputs)
        changes.append(f"dropped the {noun(len(removed_inputs), 'blob')} {names}")
    outputs = _outputs(result)
    if outputs:
        changes.append("the output is " + ", ".join(f"'{o}'" for o in outputs))
    return result, changes


def _unused_inputs(layers: Sequence[caffe_pb2.LayerParameter], training: set[int]) -> set[str]:
    """Tops of data and Input layers that no deploy layer reads: labels, mostly.

    A data layer's label top always goes, and any of its tops that no layer but losses,
    Accuracy and Silence reads; an Input's top only when a loss or Accuracy reads it and no
    other layer but Silence does (an Input that nothing, or only a Silence, reads stays, as
    in Caffe).
    """
    readers: dict[str, list[int]] = {}
    for index, lp in enumerate(layers):
        for bottom in lp.bottom:
            readers.setdefault(bottom, []).append(index)

    def deploy_read(blob: str) -> bool:
        return any(i not in training and layers[i].type != "Silence" for i in readers.get(blob, []))

    def training_read(blob: str) -> bool:
        return any(i in training for i in readers.get(blob, []))

    gone: set[str] = set()
    for lp in layers:
        if is_data_layer(lp):
            labels = lp.top[1:] if lp.type in _LABELLED else []
            gone.update(t for t in lp.top if t in labels or not deploy_read(t))
        elif lp.type == "Input":
            gone.update(t for t in lp.top if training_read(t) and not deploy_read(t))
    return gone


def _dropped_layers(
    layers: Sequence[caffe_pb2.LayerParameter], training: set[int], gone: set[str]
) -> set[int]:
    """Losses, Accuracy, and every layer reading a blob that is gone; ``gone`` grows with
    the blobs only those layers made."""
    dropped: set[int] = set()
    kept: set[str] = set()  # blobs a kept layer makes
    for index, lp in enumerate(layers):
        if lp.type == "Input" or is_data_layer(lp):
            kept.update(t for t in lp.top if t not in gone)
        elif index in training or any(b in gone for b in lp.bottom):
            dropped.add(index)
            gone.update(t for t in lp.top if t in lp.bottom or t not in kept)
        else:
            kept.update(lp.top)
            gone.difference_update(lp.top)
    return dropped


def _data_shapes(lp: caffe_pb2.LayerParameter, source: str) -> tuple[list[tuple], str]:
    """Each top's shape as Caffe makes it (None for a size only the data says), and a note
    when the batch was not given."""
    t, tp = lp.type, lp.transform_param
    if t == "DummyData":
        return _dummy_shapes(lp, source), ""
    if t in ("HDF5Data", "Python"):
        return [(None,)] * len(lp.top), ""
    crop = tp.crop_size
    if t == "Data":
        n = lp.data_param.batch_size
        crop = crop or lp.data_param.crop_size
        data = (n, _channels(tp), crop or None, crop or None)
    elif t == "ImageData":
        ip = lp.image_data_param
        n = ip.batch_size
        crop = crop or ip.crop_size
        if crop:
            h, w = crop, crop
        elif ip.new_height > 0 and ip.new_width > 0:
            h, w = ip.new_height, ip.new_width
        else:
            h = w = None
        data = (n, 3 if ip.is_color else 1, h, w)
    elif t == "MemoryData":
        mp = lp.memory_data_param
        n = mp.batch_size
        data = (n, mp.channels or None, mp.height or None, mp.width or None)
    else:  # WindowData
        wp = lp.window_data_param
        n = wp.batch_size
        crop = crop or wp.crop_size
        data = (n, _channels(tp) or 3, crop or None, crop or None)
    note = "" if n else " (batch 1: the layer gives no batch_size)"
    n = n or 1
    return [(n, *data[1:])] + [(n,)] * (len(lp.top) - 1), note


def _channels(tp: caffe_pb2.TransformationParameter) -> int | None:
    """Channels a data layer's transform_param implies: one mean_value per channel, or
    forced colour (3) or grey (1) decoding."""
    if len(tp.mean_value) > 1:
        return len(tp.mean_value)
    if tp.force_color or tp.force_gray:
        return 3 if tp.force_color else 1
    return None


def _dummy_shapes(lp: caffe_pb2.LayerParameter, source: str) -> list[tuple]:
    dp, n_tops = lp.dummy_data_param, len(lp.top)
    legacy = (dp.num, dp.channels, dp.height, dp.width)
    where = f"{source}: DummyData layer '{lp.name}'"
    if any(legacy):
        if dp.shape:
            raise ConverterError(f"{where}: gives both shape and num/channels/height/width")
        if any(len(values) not in (1, n_tops) for values in legacy):
            raise ConverterError(
                f"{where}: give each of num, channels, height and width once or once per top"
            )
        return [tuple(v[0] if len(v) == 1 else v[i] for v in legacy) for i in range(n_tops)]
    if len(dp.shape) not in (1, n_tops):
        raise ConverterError(
            f"{where}: {len(dp.shape)} shapes for {n_tops} tops (give one, or one per top)"
        )
    return [tuple(dp.shape[0 if len(dp.shape) == 1 else i].dim) for i in range(n_tops)]


def _declared_shapes(lp: caffe_pb2.LayerParameter) -> list[tuple]:
    """An Input layer's shape for each top (one shape given for all tops is repeated)."""
    declared = [tuple(s.dim) for s in lp.input_param.shape]
    if len(declared) == 1:
        return declared * len(lp.top)
    return declared if len(declared) == len(lp.top) else [()] * len(lp.top)


def _input_layer(name: str, tops: list[str], shapes: Sequence[tuple]) -> caffe_pb2.LayerParameter:
    """An Input layer; a shape with unknown sizes is left empty (``input_shapes`` fills it)."""
    layer = caffe_pb2.LayerParameter(name=name, type="Input")
    layer.top.extend(tops)
    for shape in shapes:
        layer.input_param.shape.add().dim.extend(shape if None not in shape else ())
    return layer


def _input_tops(layers: Sequence[caffe_pb2.LayerParameter]) -> list[str]:
    return [top for lp in layers if lp.type == "Input" for top in lp.top]


def _with_shapes(
    lp: caffe_pb2.LayerParameter, given: Mapping[str, Shape]
) -> caffe_pb2.LayerParameter:
    """``lp`` (a copy, when changed) with the shapes ``given`` for its tops."""
    if lp.type != "Input" or not given.keys() & set(lp.top):
        return lp
    shapes = [given.get(t, s) for t, s in zip(lp.top, _declared_shapes(lp))]
    layer = caffe_pb2.LayerParameter()
    layer.CopyFrom(lp)  # its other fields stay (a data layer's transform_param)
    layer.input_param.ClearField("shape")
    for shape in shapes:
        layer.input_param.shape.add().dim.extend(shape if None not in shape else ())
    return layer


def normalize_input_shapes(
    input_shapes: InputShapes,
    inputs: Sequence[str],
    source: str,
    declared: Mapping[str, tuple] | None = None,
) -> dict[str, Shape]:
    """``input_shapes`` as ``{input blob: shape}``, checked against the net's ``inputs``.

    A bare shape (a sequence of ints) is for a net with exactly one input. A shape replaces
    the sizes the file ``declared`` for an input (None: a size only the data says), not
    their number: ``--input-shape 1,3,224`` for a net declaring 1x3x224x224 is refused
    here, not at the first layer that needs the fourth axis.
    """
    if input_shapes is None:
        return {}
    if isinstance(input_shapes, Mapping):
        pairs = list(input_shapes.items())
    else:
        if len(inputs) != 1:
            raise ConverterError(
                f"{source}: the net has {len(inputs)} inputs ({', '.join(inputs) or 'none'}): "
                "name the one each shape is for (NAME:N,C,H,W)"
            )
        pairs = [(inputs[0], input_shapes)]
    result = {}
    for name, shape in pairs:
        if name not in inputs:
            raise ConverterError(
                f"{source}: an input shape is given for '{name}', which is not an input of "
                f"the net (inputs: {', '.join(inputs) or 'none'})"
            )
        dims = tuple(shape) if isinstance(shape, Sequence) and not isinstance(shape, str) else ()
        if not dims or not all(_positive_int(d) for d in dims):
            raise ConverterError(
                f"{source}: the shape for input '{name}' must be positive integers, found {shape!r}"
            )
        known = (declared or {}).get(name)
        if known and len(known) != len(dims):
            raise ConverterError(
                f"{source}: the shape given for input '{name}', {_shape_text(dims)}, has "
                f"{counted(len(dims), 'axis', 'axes')}; the net declares "
                f"{counted(len(known), 'axis', 'axes')} ({_shape_text(known)}): give a size "
                "for each"
            )
        result[name] = tuple(int(d) for d in dims)
    return result


def _shape_text(shape: Sequence[int | None]) -> str:
    """1x3x?x?: a shape with the sizes only the data says as '?'."""
    return "x".join("?" if d is None else str(d) for d in shape)


def _fits(shape: Sequence[int] | None, partial: tuple) -> bool:
    """Whether ``shape`` (an input array's) can complete a data layer's ``partial`` shape:
    the same number of axes (or one fewer, the batch axis, which ``load_input`` adds), every
    size the file gives after the batch, positive sizes. The batch is the array's: Caffe's
    comes from batch_size, the number of images it reads at once."""
    if not shape or not all(_positive_int(d) for d in shape):
        return False
    if len(partial) == 1 and partial[0] is None:  # HDF5Data, Python: the data says all
        return True
    full = _with_batch_axis(tuple(shape), partial)
    return len(full) == len(partial) and all(
        p is None or p == d for p, d in zip(partial[1:], full[1:])
    )


def _with_batch_axis(shape: tuple[int, ...], partial: tuple) -> tuple[int, ...]:
    return (1, *shape) if len(shape) == len(partial) - 1 else shape


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _outputs(layers: Sequence[caffe_pb2.LayerParameter]) -> list[str]:
    """Blobs made and never read afterwards: the net's outputs (``Net.outputs``)."""
    available: dict[str, None] = {}
    for lp in layers:
        for bottom in lp.bottom:
            available.pop(bottom, None)
        available.update(dict.fromkeys(lp.top))
    return list(available)
