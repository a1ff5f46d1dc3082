"""PyTorch modules for the Caffe layers that no ``torch.nn`` module computes exactly.

One file per layer family, as in ``converter/layers/``; the builders registered there pick
the module and its arguments from a layer's parameters. Each class here takes plain
arguments (numbers, shapes) rather than protobuf messages where it can.
"""


def exporting() -> bool:
    """Whether ``torch.export`` is tracing the module now: checks on tensor values (which
    a trace cannot make) run only when it is not. False on a torch too old to say."""
    import torch

    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())
