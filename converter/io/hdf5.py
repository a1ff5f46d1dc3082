"""Caffe's HDF5 weights: what ``snapshot_format: HDF5`` and ``net.save_hdf5`` write.

The layout (Caffe's ``Net::ToHDF5``): a group ``/data`` holding one group per layer, named
after the layer, holding one dataset per parameter blob, named ``0``, ``1``, ... in blob
order, in the blob's own shape. Layers without parameters have an empty group. A
``/diff`` group (gradients, when asked for) is ignored.

h5py is an optional dependency (``pip install "caffe2torch[hdf5]"``): the file is
recognised by its signature without it, and only reading it needs h5py. Contiguous
float datasets are read as views of a memory map of the file, as binary caffemodels are.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from converter.errors import ConverterError
from converter.io.caffemodel import StoredLayer

INSTALL_HINT = 'pip install "caffe2torch[hdf5]" (or pip install h5py)'


def read_hdf5_weights(path: str | os.PathLike) -> list[StoredLayer]:
    """Every layer group under ``/data``, in the file's (name) order, blobs as arrays.

    float32 and float64 datasets keep their type; float16 and integer ones are widened to
    float32, as Caffe's float net does when it loads them (``H5LTread_dataset_float``).
    Raises ConverterError when h5py is missing, the file is damaged, or it is an HDF5 file
    of another kind (a Keras model, training data, ...).
    """
    path = Path(path)
    try:
        import h5py
    except ImportError:
        raise ConverterError(
            f"{path}: is Caffe HDF5 weights, which need h5py to read: {INSTALL_HINT}"
        ) from None
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(")[0].strip() or "unreadable"
        raise ConverterError(
            f"{path}: an HDF5 file that cannot be read ({reason}): truncated or damaged? "
            "download or copy it again"
        ) from None
    with handle:
        data = handle.get("data")
        if not isinstance(data, h5py.Group):
            top = ", ".join(f"'{key}'" for key in list(handle.keys())[:5]) or "nothing"
            raise ConverterError(
                f"{path}: is an HDF5 file but not Caffe's HDF5 weights: Caffe keeps them in a "
                f"group '/data', this file has {top} at its top level (a Keras model, or "
                "HDF5Data training data?)"
            )
        mapped = _map(path)
        layers = []
        for name, group in data.items():
            if not isinstance(group, h5py.Group):
                raise ConverterError(f"{path}: /data/{name} is not a group of blobs")
            layers.append(_read_layer(path, name, group, mapped, h5py))
    return layers


def _read_layer(path: Path, name: str, group, mapped, h5py) -> StoredLayer:
    datasets = {}
    for key, item in group.items():
        if not key.isdigit() or not isinstance(item, h5py.Dataset):
            raise ConverterError(
                f"{path}: layer '{name}': '{key}' is not a blob (Caffe names them 0, 1, ...)"
            )
        datasets[int(key)] = item
    layer = StoredLayer(name=name, type="")
    for index in range(len(datasets)):
        if index not in datasets:
            raise ConverterError(
                f"{path}: layer '{name}' has blobs {sorted(datasets)}: blob {index} is missing"
            )
        array, dtype = _read_dataset(datasets[index], mapped)
        layer.blobs.append(array)
        layer.legacy_dims.append(False)
        layer.dtypes.append(dtype)
    return layer


def _read_dataset(dataset, mapped) -> tuple[np.ndarray, str]:
    """(array, name of the stored dtype); a view of the mapped file where the data lies
    there as it is (contiguous, unfiltered, little-endian float32/float64)."""
    dtype = dataset.dtype
    if dtype.kind not in "fiub":
        raise ConverterError(f"{dataset.file.filename}: {dataset.name} holds {dtype}, not numbers")
    offset = dataset.id.get_offset() if dataset.chunks is None else None
    if (
        mapped is not None
        and offset is not None
        and dataset.compression is None
        and dtype in (np.dtype("<f4"), np.dtype("<f8"))
        and offset + dataset.size * dtype.itemsize <= len(mapped)
    ):
        array = np.frombuffer(mapped, dtype, count=dataset.size, offset=offset)
        return array.reshape(dataset.shape), dtype.name
    array = np.asarray(dataset[()])
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    return array, dtype.name


def _map(path: Path) -> mmap.mmap | None:
    """A read-only map of the file, or None (then datasets are read through h5py)."""
    try:
        with open(path, "rb") as handle:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
