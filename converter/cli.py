"""The ``caffe2torch`` command line: convert, verify, inspect.

Bad input ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

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


class _ProgressBar:
    """A one-line progress bar on stderr, shown only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        width = 30
        filled = int(width * done / total)
        size = f" {done / 2**20:.0f}/{total / 2**20:.0f} MiB" if total > 1 else ""
        print(
            f"\r{phase:>5} [{'#' * filled}{'.' * (width - filled)}]{size}", end="", file=sys.stderr
        )
        self.shown = True

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def _convert(args: argparse.Namespace) -> int:
    from converter.conversion import convert

    output = (
        args.output
        or Path(args.caffemodel).with_suffix(".pt" if args.format == "pt" else ".safetensors").name
    )
    bar = _ProgressBar()
    try:
        path = convert(
            args.prototxt,
            args.caffemodel,
            output,
            format=args.format,
            generic=args.generic,
            progress=bar,
            fuse_bn=args.fuse_bn,
            hash_sources=args.hash,
        )
    finally:
        bar.close()
    print(f"wrote {path}")
    if args.verify:
        report = _run_verify(args, converted=path)
        return 0 if report.passed else 1
    return 0


def _run_verify(args: argparse.Namespace, converted=None):
    from converter.verify import verify

    report = verify(
        args.prototxt,
        args.caffemodel,
        reference=args.reference,
        input=args.input,
        mean=args.mean,
        scale=args.scale,
        tolerance=args.tol,
        generic=args.generic,
        converted=converted,
    )
    print(report.format())
    if args.json:
        from converter.io.atomic import atomic_write

        with atomic_write(args.json) as handle:
            handle.write(json.dumps(report.to_dict(), indent=1).encode())
    if args.plot:
        from converter.parity import plot_report

        plot_report(report, args.plot)
    return report


def _verify(args: argparse.Namespace) -> int:
    report = _run_verify(args, converted=args.converted)
    return 0 if report.passed else 1


def _add_verify_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference",
        default="auto",
        help="auto (pycaffe, else OpenCV, else numpy), numpy, opencv, caffe, or a .npz of "
        "blobs saved from a real Caffe run (default: auto)",
    )
    parser.add_argument(
        "--input",
        help="a .npy (NCHW, preprocessed) or an image file (resized, center-cropped, BGR 0-255 "
        "minus --mean); default: a deterministic random input",
    )
    parser.add_argument("--mean", help="mean to subtract from an image: FILE.binaryproto or B,G,R")
    parser.add_argument("--scale", type=float, help="multiply the image by this after the mean")
    parser.add_argument(
        "--tol",
        type=float,
        help="relative tolerance per blob (default: 1e-6 against numpy, in float64; "
        "against float32 references 1e-3, or 8x our own float32 rounding error if larger)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--plot", metavar="FILE", help="draw relative error per blob (PNG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caffe2torch",
        description="Convert Caffe models to PyTorch and prove the numbers match.",
    )
    parser.add_argument("--version", action="version", version=f"caffe2torch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser("convert", help="convert a Caffe model to PyTorch weights")
    convert.add_argument("prototxt", help="the net definition (deploy.prototxt)")
    convert.add_argument("caffemodel", help="the trained weights (.caffemodel)")
    convert.add_argument(
        "-o", "--output", help="output file (default: the caffemodel's name, in this folder)"
    )
    convert.add_argument(
        "--format",
        choices=["safetensors", "pt"],
        help="default: from -o's extension, else safetensors",
    )
    convert.add_argument(
        "--generic", action="store_true", help="use the generic graph module even for a ResNet"
    )
    convert.add_argument(
        "--fuse-bn",
        action="store_true",
        help="fold BatchNorm+Scale into the convs for deployment (ResNets)",
    )
    convert.add_argument(
        "--hash",
        action="store_true",
        help="record the sources' sha256 in the metadata (on CPUs without SHA instructions, "
        "hashing a 250 MB file takes several times longer than converting it)",
    )
    convert.add_argument("--verify", action="store_true", help="run verify on the written file")
    _add_verify_options(convert)
    convert.set_defaults(run=_convert)

    verify = commands.add_parser(
        "verify", help="prove the PyTorch model computes what Caffe computes, blob by blob"
    )
    verify.add_argument("prototxt", help="the net definition (deploy.prototxt)")
    verify.add_argument("caffemodel", help="the trained weights (.caffemodel)")
    verify.add_argument(
        "--converted", metavar="FILE", help="check this converted file instead of converting now"
    )
    verify.add_argument(
        "--generic", action="store_true", help="use the generic graph module even for a ResNet"
    )
    _add_verify_options(verify)
    verify.set_defaults(run=_verify)

    inspect = commands.add_parser(
        "inspect", help="list a net's layers, output shapes and parameters"
    )
    inspect.add_argument("prototxt", help="the net definition (deploy.prototxt)")
    inspect.add_argument("caffemodel", nargs="?", help="weights, to show and check stored blobs")
    inspect.add_argument("--json", action="store_true", help="print the layer table as JSON")
    inspect.set_defaults(run=_inspect)
    return parser


def _one_line(text: str) -> str:
    """``text`` on one line, control characters escaped, safe to print to a terminal."""
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        show_others = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            """The package's own warnings as one line each; others as Python shows them."""
            if category.__module__.startswith("converter"):
                print(f"caffe2torch: warning: {_one_line(message)}", file=sys.stderr)
            else:
                show_others(message, category, filename, lineno, file, line)

        warnings.filterwarnings("always", module=r"converter(\.|$)")
        warnings.showwarning = show
        try:
            return args.run(args)
        except ConverterError as exc:
            print(f"caffe2torch: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except MemoryError as exc:  # sizes a prototxt declares can exceed any machine
            print(f"caffe2torch: error: out of memory: {_one_line(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("caffe2torch: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # e.g. `caffe2torch verify ... | head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141


if __name__ == "__main__":
    sys.exit(main())
