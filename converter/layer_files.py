"""A user's own layer types, from Python files given on the command line (``--layers``).

Such a file calls ``converter.register_layer`` (README: "Adding a layer type") when it is
imported; the CLI imports each one before it reads the net, as a Python user would import
theirs before ``converter.load``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from converter.errors import ConverterError, file_error
from converter.layers.registry import lookup, registered_types


class LayerFileWarning(UserWarning):
    """A ``--layers`` file that registered no layer type."""


def load_layer_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Import each Python file in ``paths`` (in order; like an import, once per process)
    and return the layer type names they registered or replaced.

    A file runs as a module of its own (named after its path), with its folder on
    ``sys.path`` as a script's is, so it can import the modules beside it. Raises
    ``ConverterError`` naming the file when it is missing, is not a ``.py`` file, or fails
    to import (the exception and its message, on one line); warns (``LayerFileWarning``)
    when a file registers nothing.
    """
    registered: list[str] = []
    given = {Path(p).resolve(): Path(p) for p in reversed(paths)}  # the first spelling shown
    for path in dict.fromkeys(Path(p).resolve() for p in paths):
        shown = given[path]
        if not path.is_file():
            exc = FileNotFoundError() if not path.exists() else IsADirectoryError()
            raise file_error(shown, exc)
        if path.suffix != ".py":
            raise ConverterError(
                f"{shown}: --layers takes a Python file (.py) that calls converter.register_layer"
            )
        if _module_name(path) in sys.modules:
            continue  # imported before in this process: as an import, once
        before = {name: lookup(name) for name in registered_types()}
        _import(path, shown)
        changed = [name for name in registered_types() if lookup(name) is not before.get(name)]
        if not changed:
            warnings.warn(
                f"{shown}: registered no layer type (a --layers file calls "
                "converter.register_layer when imported)",
                LayerFileWarning,
                stacklevel=2,
            )
        registered += changed
    return registered


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return f"caffe2torch_layers_{digest}_{path.stem}"  # two files may share a stem


def _import(path: Path, shown: Path) -> None:
    try:
        path.read_bytes()  # unreadable: say so, not "failed to import"
    except OSError as exc:
        raise file_error(shown, exc) from None
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConverterError(f"{shown}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module  # as an import would: dataclasses and pickle look it up
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code: whatever it raises
        del sys.modules[name]
        detail = f"{type(exc).__name__}: {str(exc).removeprefix(f'{shown}: ')}"
        raise ConverterError(f"{shown}: failed to import ({detail})") from None
