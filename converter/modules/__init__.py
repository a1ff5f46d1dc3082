"""PyTorch modules for the Caffe layers that no ``torch.nn`` module computes exactly.

One file per layer family, as in ``converter/layers/``; the builders registered there pick
the module and its arguments from a layer's parameters. Each class here takes plain
arguments (numbers, shapes) rather than protobuf messages where it can.
"""
