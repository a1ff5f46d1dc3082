"""The NumPy executor of Caffe's TEST-phase forward pass: the independent cross-check.

It computes every blob of a ``Net`` in float64 (or a given dtype) with Caffe's own rules:
pooling sizes and divisors, BatchNorm's stored scale factor, in-place layers overwriting
their blob, the empty windows of ceil-mode pooling. One module per layer family, each
forward registered with ``@executes("Type")``. It shares no forward code with the torch
modules (``converter.layers``, ``converter.modules``), so that agreement between the two
means something; it does share the shape rules and geometry helpers (``pool_geometry``,
``conv_geometry``, ...), which say what Caffe computes, not how.
"""

from converter.executor import (  # noqa: F401
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
from converter.executor.registry import FORWARD, executes
from converter.executor.run import iter_blobs, run_reference

__all__ = ["FORWARD", "executes", "iter_blobs", "run_reference"]
