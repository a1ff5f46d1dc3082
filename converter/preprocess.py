"""Inputs for a parity check: a saved array, an image preprocessed the Caffe way, or noise.

Image preprocessing (what ``load_input`` does to a .png/.jpg, step by step):

1. Decode to 8-bit pixels, channel order BGR (Caffe's, via OpenCV; Pillow's RGB is flipped).
   A net with one input channel gets a grayscale image.
2. Resize, keeping the aspect ratio, so the shorter side is ``S = round(max(H, W) / 0.875)``
   where HxW is the net's input size (224 -> 256, 227 -> 259), the longer side
   ``round(long * S / short)`` (rounding half up). The resize is bilinear with half-pixel
   centres and no antialiasing (OpenCV's INTER_LINEAR, which Caffe's data layers use), done
   here in NumPy on float values, so both image libraries give the same numbers.
3. Crop the centre HxW: offsets ``(h - H) // 2`` and ``(w - W) // 2``.
4. Values stay in 0-255 (float32); subtract the mean (a per-pixel mean image from a
   .binaryproto, centre-cropped to HxW when larger, else resized; or one value per
   channel, "B,G,R"); then multiply by ``scale`` (Caffe's transform_param scale).

The result is float32 NCHW with a batch of 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.errors import ConverterError
from converter.io import sniff
from converter.io.caffemodel import read_blob

CROP_FRACTION = 0.875  # 224 / 256: the share of the resized image the centre crop keeps

Mean = str | os.PathLike | Sequence[float] | np.ndarray


class InputWarning(UserWarning):
    """The input is usable but probably not what the model expects (an image, no mean)."""


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``load_input`` treats the file as an image: anything but a .npy array, told
    by its content (a file that cannot be read: by its name)."""
    return input_kind(path) != "npy"


def input_kind(path: str | os.PathLike) -> str | None:
    """What an input file is, by its content (``sniff.identify_path``): "npy", an image
    kind, another kind of ``sniff.WHAT`` (``load_input`` refuses it, naming it), or None
    (unknown bytes: left to the image decoder, which reads more formats than are sniffed),
    "text" (a text file). Unknown bytes or a missing file named .npy: "npy" (its reader
    says what is wrong)."""
    try:
        kind = sniff.identify_path(path)
    except ConverterError:
        kind = None
    if kind is None and Path(path).is_file() and sniff.is_text(sniff.read_head(path)):
        kind = "text"
    if kind is None and Path(path).suffix.lower() == ".npy":
        kind = "npy"
    return kind


def array_shape(input: str | os.PathLike | np.ndarray | None) -> tuple[int, ...] | None:
    """The shape of an input array or .npy file (read from its header), None for an image,
    no input or a file that is not one readable array (``load_input`` then says why): what
    completes the shape of a Data layer that leaves its sizes to the data (``read_net``'s
    ``fill_shape``)."""
    if isinstance(input, np.ndarray):
        return input.shape
    if input is None or is_image(input) or not Path(input).is_file():
        return None
    try:
        array = np.load(input, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return array.shape if isinstance(array, np.ndarray) else None


def random_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Deterministic float32 N(0, 50) noise: the scale of mean-subtracted 0-255 pixels."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 50.0, size=tuple(shape)).astype(np.float32)


def load_input(
    path: str | os.PathLike,
    net_input_shape: Sequence[int],
    mean: Mean | None = None,
    scale: float | None = None,
) -> np.ndarray:
    """A float32 NCHW input for the net: a .npy as is, or an image preprocessed as above.

    A .npy must match the net's input shape except for the batch size (a missing batch
    axis is added); mean and scale do not apply to it.
    """
    path = Path(path)
    net_input_shape = tuple(int(d) for d in net_input_shape)
    if not path.exists():
        raise ConverterError(f"{path}: no such input file")
    if path.is_dir():
        raise ConverterError(f"{path}: is a directory, expected an input file (.npy or an image)")
    kind = input_kind(path)  # by content, never by name
    if kind == "text":
        data = sniff.read_head(path, sniff.SHORT_TEXT_BYTES + 1)
        raise ConverterError(sniff.short_text_message(path, "input", data))
    if kind is not None and kind != "npy" and kind not in sniff.IMAGES:
        raise ConverterError(sniff.impostor_message(path, "input", kind, sniff.read_head(path)))
    if kind == "npy":
        if mean is not None or scale is not None:
            raise ConverterError(
                f"{path}: a .npy input is used as is; mean and scale apply to images only"
            )
        return _load_array(path, net_input_shape)

    if len(net_input_shape) != 4 or net_input_shape[1] not in (1, 3):
        raise ConverterError(
            f"{path}: an image needs a net input of shape (N, 3 or 1, H, W), "
            f"the net's is {net_input_shape}; give a .npy instead"
        )
    channels, height, width = net_input_shape[1:]
    image = read_image(path, channels).astype(np.float32)
    image = center_crop(_resize_shorter_side(image, height, width), height, width)
    array = image.transpose(2, 0, 1)  # HWC -> CHW
    if mean is not None:
        array = array - _mean_array(mean, channels, height, width)
    if scale is not None:
        array = array * np.float32(scale)
    return np.ascontiguousarray(array[np.newaxis], dtype=np.float32)


def _load_array(path: Path, net_input_shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ConverterError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise ConverterError(f"{path}: expected one array (.npy), found an archive")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConverterError(f"{path}: the array has dtype {array.dtype}, expected numbers")
    if array.ndim == len(net_input_shape) - 1 and array.shape == net_input_shape[1:]:
        array = array[np.newaxis]
    if array.ndim != len(net_input_shape) or array.shape[1:] != net_input_shape[1:]:
        expected = ("N",) + net_input_shape[1:]
        raise ConverterError(
            f"{path}: input shape {array.shape} does not fit the net's input "
            f"{'x'.join(map(str, expected))} (any batch size N)"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


# ----------------------------------------------------------------------------- images


def _load_cv2():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _load_pil():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Decode an image to uint8 HxWxC: BGR for 3 channels, grayscale for 1."""
    path = Path(path)
    cv2 = _load_cv2()
    if cv2 is not None:
        flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flag)
        if image is None:
            raise ConverterError(f"{path}: OpenCV cannot decode this file as an image")
    else:
        pil = _load_pil()
        if pil is None:
            raise ConverterError(
                f"{path}: reading images needs OpenCV or Pillow "
                "(pip install 'caffe2torch[opencv]' or pip install pillow), or give a .npy"
            )
        try:
            with pil.open(path) as img:
                image = np.asarray(img.convert("RGB" if channels == 3 else "L"))
        except (OSError, ValueError) as exc:
            raise ConverterError(
                f"{path}: Pillow cannot read this file as an image ({exc})"
            ) from None
        if channels == 3:
            image = image[:, :, ::-1]  # RGB -> BGR
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if image.dtype != np.uint8:
        raise ConverterError(f"{path}: expected an 8-bit image, found {image.dtype}")
    return np.ascontiguousarray(image)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _resize_shorter_side(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale so the shorter side is round(max(H, W) / 0.875), keeping the aspect ratio."""
    short_target = _round_half_up(max(height, width) / CROP_FRACTION)
    h, w = image.shape[:2]
    if h <= w:
        new_h, new_w = short_target, _round_half_up(w * short_target / h)
    else:
        new_h, new_w = _round_half_up(h * short_target / w), short_target
    return resize_bilinear(image, new_h, new_w)


def _axis_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights for half-pixel bilinear sampling along one axis."""
    position = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    position = np.clip(position, 0.0, size_in - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (position - low)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an HxWxC array (half-pixel centres, edges clamped, no antialias)."""
    image = np.asarray(image, dtype=np.float64)
    low, high, frac = _axis_weights(image.shape[0], height)
    rows = image[low] * (1 - frac)[:, None, None] + image[high] * frac[:, None, None]
    low, high, frac = _axis_weights(image.shape[1], width)
    out = rows[:, low] * (1 - frac)[None, :, None] + rows[:, high] * frac[None, :, None]
    return out.astype(np.float32)


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The central HxW window of an HxWxC array (offsets rounded down)."""
    h, w = image.shape[:2]
    if h < height or w < width:
        raise ValueError(f"cannot crop {height}x{width} from {h}x{w}")
    top, left = (h - height) // 2, (w - width) // 2
    return image[top : top + height, left : left + width]


# ----------------------------------------------------------------------------- mean


def _mean_values(text: str) -> list[float] | None:
    """ "104,117,123" -> [104.0, 117.0, 123.0]; None when the text is not a list of numbers."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        return None


def _mean_image(path: Path, channels: int) -> np.ndarray:
    """The (C, H, W) image of a .binaryproto mean file, checked against the net's channels."""
    if not path.exists():
        raise ConverterError(f"{path}: no such mean file (expected a .binaryproto or 'B,G,R')")
    blob = read_blob(path)
    while blob.ndim > 3 and blob.shape[0] == 1:
        blob = blob[0]
    if blob.ndim != 3 or blob.shape[0] != channels:
        raise ConverterError(
            f"{path}: mean image of shape {blob.shape}, expected ({channels}, H, W) "
            f"for a net with {channels} input channels"
        )
    return blob


def channel_means(mean: Mean, channels: int) -> list[float]:
    """The per-channel means of ``mean`` (a mean file's image averaged over H and W, or the
    given values), in the net's channel order (B, G, R for Kaiming's nets)."""
    values = _mean_values(mean) if isinstance(mean, str) else None
    if values is not None or not isinstance(mean, (str, os.PathLike)):
        return [float(v) for v in _mean_array(mean, channels, 1, 1).reshape(-1)]
    image = _mean_image(Path(mean), channels).astype(np.float64)
    return [float(v) for v in image.mean(axis=(1, 2))]


@dataclass(frozen=True)
class InputConvention:
    """How the model's input is made from 0-255 pixels in the net's channel order (BGR for
    Kaiming's nets): ``(pixel - mean) * scale``, as Caffe's DataTransformer does."""

    mean: tuple[float, ...] | None  # per channel; None: not known
    mean_source: str | None  # a file's name, "B,G,R values", or what the prototxt names
    scale: float  # Caffe's transform_param scale (1: none)
    given_by: str | None  # "--mean" / "the prototxt's transform_param" / None

    @property
    def std(self) -> float:
        """The divisor frameworks write for ``scale`` ((x - mean) / std)."""
        return 1.0 / self.scale if self.scale else math.inf


def input_convention(net, mean: Mean | None = None, scale: float | None = None) -> InputConvention:
    """The input convention to record with a conversion of ``net``: ``mean`` and ``scale``
    when given (``--mean``, ``--scale``), else what a training net's data layer applied
    (its ``transform_param``: ``mean_value``, ``mean_file``, ``scale``; ``read_net`` keeps it
    on the Input the data layer became). A ``mean_file`` is read when it is found as given
    or beside the prototxt; else the record names it and says it was not found.
    ConverterError for a ``mean`` that does not fit the net's channels."""
    shapes = net.input_shapes()
    channels = next(iter(shapes.values()))[1] if shapes else 0
    transform = next(
        (
            layer.param.transform_param
            for layer in net.layers
            if layer.type == "Input" and layer.param.HasField("transform_param")
        ),
        None,
    )
    if mean is not None:
        means = tuple(channel_means(mean, channels))
        given = isinstance(mean, (str, os.PathLike)) and _mean_values(str(mean)) is None
        source = Path(mean).name if given else "B,G,R values"
        by: str | None = "--mean"
    elif transform is not None and (transform.mean_value or transform.mean_file):
        means, source, by = _transform_mean(transform, channels, net.source)
    else:
        means, source, by = None, None, None
    if scale is None and transform is not None and transform.HasField("scale"):
        scale = transform.scale
        by = by or "the prototxt's transform_param"
    return InputConvention(means, source, 1.0 if scale is None else float(scale), by)


def _transform_mean(transform, channels: int, prototxt: str):
    """(means, source, given_by) of a data layer's transform_param."""
    by = "the prototxt's transform_param"
    if transform.mean_value:
        values = list(transform.mean_value)
        if len(values) not in (1, channels):
            raise ConverterError(
                f"{prototxt}: transform_param has {len(values)} mean_value for {channels} "
                "channels (Caffe takes one, or one per channel)"
            )
        return tuple(float(v) for v in np.broadcast_to(values, (channels,))), None, by
    named = Path(transform.mean_file)
    for candidate in (named, Path(prototxt).parent / named, Path(prototxt).parent / named.name):
        if candidate.is_file():
            return tuple(channel_means(candidate, channels)), named.name, by
    return None, f"{transform.mean_file} (named by the prototxt; not found: give --mean)", by


def _mean_array(mean: Mean, channels: int, height: int, width: int) -> np.ndarray:
    """The mean as a CxHxW (or Cx1x1) float32 array to subtract from a CHW image."""
    values = None
    if isinstance(mean, str):
        values = _mean_values(mean)
    elif not isinstance(mean, os.PathLike):
        values = [float(v) for v in np.asarray(mean, dtype=np.float64).ravel()]
    if values is not None:
        if len(values) not in (1, channels):
            raise ConverterError(
                f"mean '{mean}': expected {channels} comma-separated values (B,G,R order), "
                f"found {len(values)}"
            )
        per_channel = np.broadcast_to(np.asarray(values, dtype=np.float32), (channels,))
        return per_channel.reshape(channels, 1, 1)

    # CHW -> HWC for the helpers above
    image = _mean_image(Path(mean), channels).astype(np.float32).transpose(1, 2, 0)
    h, w = image.shape[:2]
    if (h, w) != (height, width):
        if h >= height and w >= width:
            image = center_crop(image, height, width)
        else:
            image = resize_bilinear(image, height, width)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
