"""Caffe layer types, one module per family, each type registered once (``register_layer``).

A type's record (``LayerType``) holds its shape rule, its PyTorch module builder, its
weight mapping and its flags; ``converter.net`` (shape inference) and
``converter.generic`` (the generic module) only drive these records. The NumPy executor
(``converter.executor``) keeps its own forward functions, by family too.

Families: ``conv`` (Convolution, Deconvolution, InnerProduct), ``pool`` (Pooling), ``norm``
(BatchNorm, Scale, Bias, LRN, MVN, BN, Normalize), ``activation`` (ReLU, PReLU, Sigmoid,
..., ReLU6, HardSwish, HardSigmoid), ``eltwise`` (Eltwise, Axpy), ``shape`` (Input, Concat,
Slice, Split, Flatten, Reshape, ShuffleChannel, Permute, Unsqueeze), ``resize`` (Interp,
Upsample, BilinearInterpolate, Resize, PixelShuffle, Pad, MaxUnPool), ``detection``
(PriorBox, DetectionOutput). Fork types: see each family's docstring.
"""

from converter.layers import (  # noqa: F401
    activation,
    conv,
    detection,
    eltwise,
    norm,
    pool,
    reduce,
    resize,
    shape,
)
from converter.layers.conv import conv_geometry
from converter.layers.pool import PoolGeometry, pool_geometry
from converter.layers.registry import (
    ExactPart,
    LayerCode,
    LayerShapes,
    LayerType,
    Shape,
    canonical_axis,
    lookup,
    need_bottoms,
    register_layer,
    registered_types,
    same_shape,
    supported_layer_types,
    unregister_layer,
    weight_and_bias,
)
from converter.layers.shape import reshape_shape, slice_bounds

__all__ = [
    "ExactPart",
    "LayerCode",
    "LayerShapes",
    "LayerType",
    "PoolGeometry",
    "Shape",
    "canonical_axis",
    "conv_geometry",
    "lookup",
    "need_bottoms",
    "pool_geometry",
    "register_layer",
    "registered_types",
    "reshape_shape",
    "same_shape",
    "slice_bounds",
    "supported_layer_types",
    "unregister_layer",
    "weight_and_bias",
]
