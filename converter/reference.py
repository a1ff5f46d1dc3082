"""Kept for callers of ``converter.reference.run_reference``: the executor now lives in
``converter.executor`` (one module per layer family); import it from there."""

from converter.executor import run_reference

__all__ = ["run_reference"]
