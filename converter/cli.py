"""The ``caffe2torch`` command line: convert, verify, inspect.

Bad input ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from converter import __version__
from converter.errors import ConverterError


def _inspect(args: argparse.Namespace) -> int:
    from converter.inspect import format_table, layer_table
    from converter.net import read_net

    net = read_net(args.prototxt, args.caffemodel)
    rows = layer_table(net)
    if args.json:
        print(json.dumps({"layers": rows}, indent=1))
    else:
        print(format_table(net, rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caffe2torch",
        description="Convert Caffe models to PyTorch and prove the numbers match.",
    )
    parser.add_argument("--version", action="version", version=f"caffe2torch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect", help="list a net's layers, output shapes and parameters"
    )
    inspect.add_argument("prototxt", help="the net definition (deploy.prototxt)")
    inspect.add_argument("caffemodel", nargs="?", help="weights, to show and check stored blobs")
    inspect.add_argument("--json", action="store_true", help="print the layer table as JSON")
    inspect.set_defaults(run=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConverterError as exc:
        print(f"caffe2torch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caffe2torch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
