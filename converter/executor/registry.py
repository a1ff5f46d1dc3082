"""The executor's table of forward functions, keyed by Caffe layer type.

A forward is ``(layer, bottoms, params, where) -> [top arrays]``: ``bottoms`` are the
bottom blobs' values, ``params`` the layer's caffemodel blobs (checked against the shapes
its shape rule implies, in the executor's dtype), one array per top in the result. Built-in
families register theirs with ``@executes("Type")``; ``converter.register_layer(...,
reference=f)`` registers a user's through the same decorator.
"""

from __future__ import annotations

from collections.abc import Callable

from converter.errors import ConverterError
from converter.layers.registry import Forward

FORWARD: dict[str, Forward] = {}


def executes(*types: str, replace: bool = False) -> Callable[[Forward], Forward]:
    """Decorator: the function is the NumPy forward of each of ``types``."""

    def register(forward: Forward) -> Forward:
        taken = [t for t in types if t in FORWARD]
        if taken and not replace:
            raise ConverterError(
                f"the executor already has a forward for {', '.join(taken)}; "
                "pass replace=True to replace it"
            )
        for t in types:
            FORWARD[t] = forward
        return forward

    return register
