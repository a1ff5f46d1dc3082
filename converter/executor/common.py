"""Small array helpers the executor's families share."""

from __future__ import annotations

import numpy as np


def broadcast(operand: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Reshape ``operand`` so it lines up with axes [axis, axis + operand.ndim) of an array."""
    return operand.reshape(operand.shape + (1,) * (ndim - axis - operand.ndim))
