"""The checked-in caffe_pb2 module must be what proto/caffe.proto compiles to."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

grpc_tools = pytest.importorskip("grpc_tools")


def test_checked_in_module_matches_schema(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
         f"--python_out={tmp_path}", str(ROOT / "proto" / "caffe.proto")],
        check=True,
    )  # fmt: skip
    fresh = (tmp_path / "caffe_pb2.py").read_text()
    checked_in = (ROOT / "converter" / "caffe_pb2.py").read_text()
    assert fresh == checked_in, (
        "converter/caffe_pb2.py is stale: regenerate it with "
        "python -m grpc_tools.protoc -Iproto --python_out=converter proto/caffe.proto"
    )


def test_bvlc_field_numbers_we_depend_on():
    from converter import caffe_pb2

    def number(message, field):
        return message.DESCRIPTOR.fields_by_name[field].number

    assert number(caffe_pb2.NetParameter, "layer") == 100
    assert number(caffe_pb2.NetParameter, "layers") == 2
    assert number(caffe_pb2.LayerParameter, "blobs") == 7
    assert number(caffe_pb2.V1LayerParameter, "blobs") == 6
    assert number(caffe_pb2.BlobProto, "data") == 5
    assert number(caffe_pb2.BlobProto, "double_data") == 8
    assert number(caffe_pb2.PoolingParameter, "round_mode") == 13
    assert caffe_pb2.PoolingParameter.CEIL == 0 and caffe_pb2.PoolingParameter.FLOOR == 1
