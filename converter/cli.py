"""The ``caffe2torch`` command line: convert, verify, inspect.

Bad input ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence

from converter import __version__
from converter.errors import ConverterError, article
from converter.export import FORMATS as FORMAT_CHOICES


def _inspect(args: argparse.Namespace) -> int:
    from converter.inspect import conversion_target, format_table, layer_table, totals
    from converter.net import read_net

    # a data layer whose shape only the data says stops the table there, saying so
    net = read_net(args.prototxt, args.caffemodel, input_shapes(args.input_shape), open_shapes=True)
    rows = layer_table(net)
    if args.json:
        summary = {"layers": rows, "totals": totals(net, rows), "module": conversion_target(net)}
        print(json.dumps(summary, indent=1))
    else:
        print(format_table(net, rows))
    return 0


# Given to ``convert``, these imply --verify; --input not for detectron2/mmdet, where it is
# what the stem-pool difference is measured on (those checkpoints run in their framework,
# not here, so with them the others are refused).
IMPLY_VERIFY = ("reference", "input", "tol", "json", "plot")
# The model's input convention: recorded in every format's output (and applied to an image
# --input); they never imply --verify.
CONVENTION = ("mean", "scale")
CHECKPOINTS = ("detectron2", "mmdet")


def _convert(args: argparse.Namespace) -> int:
    from converter.export import default_output, output_format
    from converter.io.atomic import check_writable, staged

    output = (
        args.output if args.output is not None else default_output(args.caffemodel, args.format)
    )
    # every argument is checked before anything is written: a name that does not fit the
    # format, an output that cannot be written, the verification's options
    target = output_format(output, args.format)
    checkpoint = target in CHECKPOINTS
    implying = [o for o in IMPLY_VERIFY if not (checkpoint and o == "input")]
    given = [f"--{o}" for o in implying if getattr(args, o) is not None]
    verify = args.verify or bool(given)
    if verify and checkpoint:
        asked = f" (asked for by {', '.join(given)})" if given and not args.verify else ""
        raise ConverterError(
            f"{output}: --verify runs what caffe2torch can load{asked}; {article(target)} "
            f"{target} checkpoint "
            f"runs in {target} (check the net itself with: caffe2torch verify PROTOTXT "
            "CAFFEMODEL)"
        )
    check_writable(output, folder=target == "code")
    if verify:
        checks = _verify_checks(args, output, target == "code")
    else:
        checks = _input_checks(args) if checkpoint else None
    if verify and args.input is None:  # the mean and scale are the convention, not for noise
        verify_args = argparse.Namespace(**{**vars(args), "mean": None, "scale": None})
    else:
        verify_args = args
    if not verify:
        path = _convert_to(args, output, target, checks, verify_args)
        print(f"wrote {path}", file=_text_stream(args))
        return 0
    # verified before it stands as the output: a verification that ends in bad input (exit 2)
    # leaves no output and an existing one as it was; a verdict (PASS, FAIL, INCONCLUSIVE)
    # keeps the file, with the report that judged it
    from converter.codegen.folder import REPLACEABLE, record_parity
    from converter.conversion import check_not_a_source

    check_not_a_source(output, args.prototxt, args.caffemodel)
    with staged(output, folder=target == "code", replaceable=REPLACEABLE) as stage:
        _convert_to(args, stage, target, checks, verify_args)
        report = _verify_report(verify_args, converted=stage)
        if target == "code":
            record_parity(stage, report)
    print(f"wrote {output}", file=_text_stream(args))
    _show_report(verify_args, report)
    return report.exit_code


def _convert_to(args, output, target: str, checks, verify_args):
    """``conversion.convert`` with the command's options; the path written."""
    from converter.conversion import convert
    from converter.progress import PhaseBars

    bars = PhaseBars(enabled=not args.quiet)
    try:
        return convert(
            args.prototxt,
            args.caffemodel,
            output,
            format=target,
            generic=args.generic,
            progress=bars,
            fuse_bn=args.fuse_bn,
            hash_sources=args.hash,
            input_shapes=input_shapes(args.input_shape),
            mean=args.mean,
            scale=args.scale,
            input=_one_input(args.input, target in CHECKPOINTS),
            notes=lambda text: print(text, file=_text_stream(args)),
            check=checks and (lambda net: checks(net, verify_args)),
        )
    finally:
        bars.close()


def _verify_checks(args: argparse.Namespace, output: str, folder: bool):
    """What verify would refuse, refused before the conversion writes anything: the report
    files (``_check_report_paths``; ``output``, a ``folder`` for --format code, is what
    they must not overwrite) now, the options that need the net once it is read."""
    _check_report_paths(args, output, folder)

    def check(net, verify_args: argparse.Namespace) -> None:
        from converter.verify import check_options

        check_options(
            net,
            reference=verify_args.reference or "auto",
            input=input_files(verify_args.input),
            mean=verify_args.mean,
            scale=verify_args.scale,
            tolerance=verify_args.tol,
        )

    return check


def _input_checks(args: argparse.Namespace):
    """A checkpoint's --input (what its stem-pool difference is measured on, after the file
    is written), read once the net is known, before anything is written."""
    if args.input is None:
        return None

    def check(net, _args: argparse.Namespace) -> None:
        from converter.inputs import given_inputs
        from converter.preprocess import load_input

        given_inputs(net, input_files(args.input))  # a NAME= names one of the net's inputs
        shape = next(iter(net.input_shapes().values()))
        load_input(_one_input(args.input), (1, *shape[1:]))

    return check


def _text_stream(args: argparse.Namespace):
    """Where the text report goes: stdout, unless ``--json -`` takes it for the JSON."""
    return sys.stderr if getattr(args, "json", None) == "-" else sys.stdout


def _check_report_paths(
    args: argparse.Namespace, output: str | None = None, folder: bool = False
) -> None:
    """Report files that would fail after minutes of work fail now, in one line: an
    unwritable --json or --plot, --plot without a working matplotlib or in a format it
    cannot draw, and one that would overwrite another file of the command
    (``_check_report_collisions``)."""
    from converter.io.atomic import check_writable

    _check_report_collisions(args, output, folder)

    if args.json is not None and args.json != "-":
        check_writable(args.json)
    if args.plot is not None:
        if args.plot == "-":
            raise ConverterError(
                "--plot -: a plot is written to a file (.png, .svg or .pdf); '-' (stdout) is "
                "for --json"
            )
        from converter.parity import plot_format

        check_writable(args.plot)
        plot_format(args.plot)


def _check_report_collisions(args: argparse.Namespace, output: str | None, folder: bool) -> None:
    """ConverterError when --json or --plot names a file the command reads or writes: the
    output (``output``; for a --format code ``folder``, any path inside it, since the folder
    is replaced whole), an input (the prototxt, caffemodel, --converted, --input, --reference,
    --mean, --layers file), or the other report. Paths are compared resolved (links, ``..``)
    and, for existing files, as the same file under any name (hard links)."""
    others: list[tuple[str, str, bool]] = []  # (path, what it is, a folder replaced whole)
    if output is not None:
        kind = "the output folder" if folder else "the output"
        others.append((output, f"{kind} (-o {output})", folder))
    inputs = [
        (args.prototxt, "the prototxt"),
        (args.caffemodel, "the caffemodel"),
        (getattr(args, "converted", None), "the --converted output"),
        (args.reference, "the --reference file"),
        (args.mean, "the --mean file"),
    ]
    given = input_files(args.input)
    given = given.values() if isinstance(given, dict) else [given]
    inputs += [(path, f"the --input file ({path})") for path in given]
    inputs += [(path, f"the --layers file ({path})") for path in args.layers or ()]
    # only existing files: --reference numpy or --mean 104,117,123 name none
    inputs = [(path, what) for path, what in inputs if path and os.path.exists(path)]
    others += [(path, f"{what}, an input of this command", False) for path, what in inputs]
    for option in ("json", "plot"):
        report = getattr(args, option)
        if report is None or report == "-":
            continue
        for path, what, whole in others:
            if _same_path(report, path, inside=whole):
                where = "inside" if whole and not _same_path(report, path) else "also"
                raise ConverterError(
                    f"--{option} {report}: is {where} {what}; choose another file for the report"
                )
        others.append((report, f"the --{option} report", False))


def _same_path(path: str, other: str, inside: bool = False) -> bool:
    """Whether ``path`` names the file ``other`` names (resolved, or the same existing file
    under another name); ``inside``: or a path within the folder ``other``."""
    resolved, resolved_other = os.path.realpath(path), os.path.realpath(other)
    if resolved == resolved_other:
        return True
    if inside and resolved.startswith(resolved_other.rstrip(os.sep) + os.sep):
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist (yet)
        return False


def _verify_report(args: argparse.Namespace, converted=None):
    """The parity report of ``verify`` with the command's options."""
    from converter.verify import verify

    return verify(
        args.prototxt,
        args.caffemodel,
        reference=args.reference or "auto",
        input=input_files(args.input),
        mean=args.mean,
        scale=args.scale,
        tolerance=args.tol,
        generic=args.generic,
        converted=converted,
        input_shapes=input_shapes(args.input_shape),
        progress=not args.quiet,
    )


def _show_report(args: argparse.Namespace, report) -> None:
    """The report as text, and as the --json and --plot files asked for."""
    print(report.format(), file=_text_stream(args))
    if args.json == "-":
        print(json.dumps(report.to_dict(), indent=1))
    elif args.json:
        from converter.io.atomic import atomic_write

        with atomic_write(args.json) as handle:
            handle.write(json.dumps(report.to_dict(), indent=1).encode())
    if args.plot:
        from converter.parity import plot_report

        plot_report(report, args.plot)


def _verify(args: argparse.Namespace) -> int:
    _check_report_paths(args)
    report = _verify_report(args, converted=args.converted)
    _show_report(args, report)
    return report.exit_code


def input_files(values: Sequence[str] | None) -> str | dict[str, str] | None:
    """``--input`` values as verify's ``input``: ``FILE`` alone (a net with one input), or
    ``NAME=FILE`` for each input given (repeated; the others get random noise). A value is
    ``NAME=FILE`` when it is not itself an existing file and the text before its first
    ``=`` is no path."""
    if not values:
        return None
    named: dict[str, str] = {}
    bare: list[str] = []
    for value in values:
        name, equals, file = value.partition("=")
        if equals and name and file and not os.path.exists(value) and not set("/\\") & set(name):
            if name in named:
                raise ConverterError(f"--input {value}: input '{name}' is given twice")
            named[name] = file
        else:
            bare.append(value)
    if bare and (named or len(bare) > 1):
        raise ConverterError(
            f"--input {' '.join(values)}: give one FILE (a net with one input), or NAME=FILE "
            "for each input you supply (a net with several inputs)"
        )
    return bare[0] if bare else named


def _one_input(values: Sequence[str] | None, required: bool = True) -> str | None:
    """The one ``--input`` file a conversion reads: what a detectron2/mmdet checkpoint's
    stem-pool difference is measured on (``required``: those are ResNets, one input), and
    what completes a Data layer's sizes (``convert``'s ``input``). None, when not
    ``required``, for several inputs."""
    given = input_files(values)
    if isinstance(given, dict):
        if len(given) != 1:
            if not required:
                return None
            raise ConverterError(
                "--input: a checkpoint's stem-pool difference is measured on one input; "
                "give one FILE"
            )
        return next(iter(given.values()))
    return given


def input_shapes(values: Sequence[str] | None) -> dict[str, tuple[int, ...]] | tuple | None:
    """``--input-shape`` values as the API's ``input_shapes``: ``N,C,H,W`` alone (a net with
    one input), or ``NAME:N,C,H,W``, repeated or joined by commas for several inputs
    (``data:1,3,224,224,im_info:1,3``)."""
    if not values:
        return None
    named: dict[str, tuple[int, ...]] = {}
    bare: list[tuple[int, ...]] = []
    for value in values:
        groups: list[tuple[str | None, list[str]]] = []  # a name starts a new shape
        for token in value.split(","):
            if ":" in token:
                name, token = token.split(":", 1)
                groups.append((name.strip(), []))
            elif not groups:
                groups.append((None, []))
            groups[-1][1].append(token.strip())
        for name, dims in groups:
            if name == "" or not all(d.isdigit() and int(d) > 0 for d in dims):
                raise ConverterError(
                    f"--input-shape {value}: expected N,C,H,W or NAME:N,C,H,W (positive integers)"
                )
            if name is None:
                bare.append(tuple(int(d) for d in dims))
            else:
                named[name] = tuple(int(d) for d in dims)
    if bare and (named or len(bare) > 1):
        raise ConverterError(
            "--input-shape: give one unnamed shape (a net with one input), or NAME:N,C,H,W "
            "for each input"
        )
    return bare[0] if bare else named


class _Parser(argparse.ArgumentParser):
    """argparse, its errors on one line as every other error of the command is."""

    def error(self, message: str):
        self.exit(2, f"caffe2torch: error: {_one_line(message)} (see: {self.prog} --help)\n")


def _given(text: str) -> str:
    """A file name or value: an empty one (``-o ''``) is refused rather than read as "not
    given" (which for ``-o`` meant the default name)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give a value or leave the option out")
    return text


# Options whose values may start with '-' followed by a digit ("-1,3,224,224" is a bad shape
# to report as such, not an unknown option); given so, the value is joined to its option.
_DASHED_VALUES = ("--input-shape", "--mean")


def _join_dashed_values(argv: Sequence[str]) -> list[str]:
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] in _DASHED_VALUES and re.match(r"-[\d.]", arg):
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def _add_net_options(parser: argparse.ArgumentParser) -> None:
    """The options every command takes: how to read the net."""
    parser.add_argument(
        "--input-shape",
        action="append",
        metavar="[NAME:]N,C,H,W",
        help="the shape of an input, where the prototxt does not say it (a training net's "
        "Data layer) or to replace it; NAME: for nets with several inputs (repeat it, or "
        "join shapes with commas)",
    )
    parser.add_argument(
        "--layers",
        action="append",
        type=_given,
        metavar="FILE.py",
        help="import this Python file first: it registers your own layer types by calling "
        "converter.register_layer (README: 'Adding a layer type'); repeatable",
    )


def _add_verify_options(parser: argparse.ArgumentParser, implied: bool = False) -> None:
    """The options of a verification (``IMPLY_VERIFY`` and ``CONVENTION``); ``implied``:
    given to ``convert``, where the group's title says which imply --verify."""
    title = (
        "verification (--reference, --input, --tol, --json and --plot imply --verify, "
        "--input not with detectron2/mmdet; --mean and --scale never do: they are the input "
        "convention the output records)"
        if implied
        else "verification"
    )
    group = parser.add_argument_group(title)
    group.add_argument(
        "--reference",
        type=_given,
        help="auto (pycaffe, else OpenCV, else numpy; the report says which ran and why), "
        "numpy, opencv, caffe, or a .npz of blobs saved from a real Caffe run (default: auto)",
    )
    group.add_argument(
        "--input",
        type=_given,
        action="append",
        metavar="[NAME=]FILE",
        help="a .npy (NCHW, preprocessed) or an image file (resized, center-cropped, BGR 0-255 "
        "minus --mean); NAME= for nets with several inputs (repeat it; the inputs not given "
        "get noise); default: deterministic random N(0, 50) noise",
    )
    recorded = (
        "; recorded as the input convention (default: a training net's transform_param)"
        if implied
        else ""
    )
    group.add_argument(
        "--mean",
        type=_given,
        help=f"for an image --input: the mean to subtract, FILE.binaryproto or B,G,R{recorded}",
    )
    group.add_argument(
        "--scale",
        type=float,
        help=f"for an image --input: multiply by this after the mean{recorded}",
    )
    group.add_argument(
        "--tol",
        type=float,
        help="relative tolerance per blob (default: 1e-6 against numpy, in float64; "
        "against float32 references 1e-3, or 8x our own float32 rounding error if larger)",
    )
    group.add_argument(
        "--json",
        type=_given,
        metavar="FILE",
        help="also write the report as JSON ('-': to stdout)",
    )
    group.add_argument(
        "--plot",
        type=_given,
        metavar="FILE",
        help="draw relative error per blob (.png, .svg, .pdf)",
    )


def _subcommand(commands, name: str, summary: str, description: str, examples: list[str]):
    """A subcommand whose --help gives a short description and examples."""
    command = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars (drawn only on a terminal)"
    )
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="caffe2torch",
        description="Convert Caffe models to PyTorch and prove the numbers match.",
        epilog="Run 'caffe2torch COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"caffe2torch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = _subcommand(
        commands,
        "convert",
        "convert a Caffe model to PyTorch weights",
        "Convert a deploy.prototxt + .caffemodel into a safetensors (or .pt) file that\n"
        "converter.load() rebuilds as a PyTorch model. A Kaiming-style ResNet becomes a\n"
        "torchvision-shaped CaffeResNet, any other supported net a generic module.",
        [
            "caffe2torch convert ResNet-50-deploy.prototxt ResNet-50-model.caffemodel "
            "-o resnet50.safetensors",
            "caffe2torch convert deploy.prototxt model.caffemodel -o model.pt --fuse-bn",
            "caffe2torch convert deploy.prototxt model.caffemodel -o model.safetensors "
            "--reference blobs.npz --input input.npy   # converts, then verifies",
        ],
    )
    convert.add_argument("prototxt", type=_given, help="the net definition (deploy.prototxt)")
    convert.add_argument("caffemodel", type=_given, help="the trained weights (.caffemodel)")
    convert.add_argument(
        "-o",
        "--output",
        type=_given,
        help="output file, named for its format: .safetensors, .pt/.pth, .pt2, .onnx, .pkl "
        "(detectron2), .pth or .pt with --format mmdet, or a folder for --format code "
        "(default: the caffemodel's name without its weight suffixes, in this folder)",
    )
    convert.add_argument(
        "--format",
        choices=list(FORMAT_CHOICES),
        help="safetensors or pt: weights for caffe2torch; code: a folder with a standalone "
        "model.py; pt2: torch.export; onnx; detectron2 or mmdet: ResNet checkpoints "
        "(default: the one -o's extension names, else safetensors)",
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
    convert.add_argument(
        "--verify", action="store_true", help="verify the written file (see verify --help)"
    )
    _add_net_options(convert)
    _add_verify_options(convert, implied=True)
    convert.set_defaults(run=_convert, parser=convert)

    verify = _subcommand(
        commands,
        "verify",
        "prove the PyTorch model computes what Caffe computes, blob by blob",
        "Run the converted model and a reference on the same input and compare every blob.\n"
        "Exit 0: every blob within tolerance; 1: parity fails (the first diverging blob is\n"
        "marked); 2: bad input; 3: inconclusive, every compared blob agrees but none could\n"
        "show an error on this input (a saturated softmax, all a pt2 or ONNX file gives), or\n"
        "some differ only where the reference's scores tie (detections over saturated\n"
        "scores).\n"
        "The report's first line says which reference ran and why.",
        [
            "caffe2torch verify deploy.prototxt model.caffemodel --reference blobs.npz "
            "--input input.npy",
            "caffe2torch verify deploy.prototxt model.caffemodel --input cat.jpg "
            "--mean ResNet_mean.binaryproto --json -",
            "caffe2torch verify deploy.prototxt model.caffemodel --converted model.safetensors "
            "--reference numpy",
        ],
    )
    verify.add_argument("prototxt", type=_given, help="the net definition (deploy.prototxt)")
    verify.add_argument("caffemodel", type=_given, help="the trained weights (.caffemodel)")
    verify.add_argument(
        "--converted",
        type=_given,
        metavar="PATH",
        help="check this converted output instead of converting now: a safetensors, .pt, "
        ".pt2 or .onnx file, or a --format code folder",
    )
    verify.add_argument(
        "--generic", action="store_true", help="use the generic graph module even for a ResNet"
    )
    _add_net_options(verify)
    _add_verify_options(verify)
    verify.set_defaults(run=_verify, parser=verify)

    inspect = _subcommand(
        commands,
        "inspect",
        "list a net's layers, output shapes and parameters",
        "List every layer with its output and parameter shapes, the totals, and the module\n"
        "the net converts to (CaffeResNet or the generic module, and why).",
        [
            "caffe2torch inspect ResNet-50-deploy.prototxt",
            "caffe2torch inspect deploy.prototxt model.caffemodel --json",
            "caffe2torch inspect deploy.prototxt --layers mylayers.py   # your own layer types",
        ],
    )
    inspect.add_argument("prototxt", type=_given, help="the net definition (deploy.prototxt)")
    inspect.add_argument(
        "caffemodel", nargs="?", type=_given, help="weights, to show and check stored blobs"
    )
    inspect.add_argument(
        "--json", action="store_true", help="print the layer table and totals as JSON"
    )
    _add_net_options(inspect)
    inspect.set_defaults(run=_inspect, parser=inspect)
    return parser


def _one_line(text: str) -> str:
    """``text`` on one line, control characters escaped, safe to print to a terminal."""
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(
        _join_dashed_values(sys.argv[1:] if argv is None else argv)
    )
    if unknown:  # reported by the command they were given to, with its --help
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
            if args.layers:
                from converter.layer_files import load_layer_files

                load_layer_files(args.layers)
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
