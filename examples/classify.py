"""Classify an image with a converted Caffe model, preprocessing it the way Caffe did.

    python examples/classify.py ResNet-50-deploy.prototxt ResNet-50-model.caffemodel cat.jpg \
        --mean ResNet_mean.binaryproto --labels synset_words.txt
    python examples/classify.py resnet50.safetensors cat.jpg --mean 104,117,123

The image is resized, center-cropped to the net's input size, turned to BGR 0-255 and has
the training mean subtracted (Kaiming's models: the per-pixel mean image). A net with
several outputs (a detector's class scores and boxes) needs ``--output NAME``: the blob
holding the class scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import converter
from converter.export import read_converted
from converter.preprocess import load_input


def read_labels(path: str, classes: int) -> list[str]:
    """One class name per line, as many lines as the model has classes."""
    try:
        names = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise converter.ConverterError(f"{path}: cannot read the labels file ({exc})") from None
    if len(names) != classes:
        raise converter.ConverterError(
            f"{path}: {len(names)} labels for a model with {classes} classes; give the labels "
            "file that belongs to this model (one class name per line)"
        )
    return names


def class_scores(model, x: torch.Tensor, output: str | None) -> torch.Tensor:
    """The first sample's scores from the output blob ``output`` (default: the net's only
    output), flattened. ConverterError when the net has several outputs and none is
    chosen, or ``output`` is not one of them."""
    names = list(model.output_names)
    if output is None and len(names) > 1:
        raise converter.ConverterError(
            f"the net has {len(names)} outputs ({', '.join(names)}); choose the one holding "
            "the class scores with --output NAME"
        )
    if output is not None and output not in names:
        raise converter.ConverterError(
            f"--output {output}: not an output of this net; its outputs: {', '.join(names)}"
        )
    with torch.no_grad():
        values = model(x)
    if len(names) == 1:
        values = (values,)
    return dict(zip(names, values))[output or names[0]][0].flatten()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="+", help="PROTOTXT CAFFEMODEL, or a converted file")
    parser.add_argument("image", help="an image file (png, jpg, ...)")
    parser.add_argument("--mean", help="FILE.binaryproto or B,G,R (default: no mean)")
    parser.add_argument("--labels", help="a text file with one class name per line")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print")
    parser.add_argument(
        "--output", help="the output blob holding the class scores (nets with several outputs)"
    )
    args = parser.parse_args(argv)
    try:
        if len(args.model) == 2:
            model = converter.load(*args.model)
            shapes = converter.read_net(args.model[0]).input_shapes()
        elif len(args.model) == 1:
            model = converter.load(args.model[0])
            shapes = json.loads(read_converted(args.model[0])[1]["input_shapes"])
        else:
            parser.error("give PROTOTXT CAFFEMODEL or one converted file")
        if len(shapes) != 1:
            raise converter.ConverterError(
                f"the net has {len(shapes)} inputs ({', '.join(shapes)}); this example "
                "classifies nets with one image input"
            )
        x = torch.from_numpy(load_input(args.image, next(iter(shapes.values())), mean=args.mean))
        scores = class_scores(model, x, args.output)
        names = read_labels(args.labels, scores.numel()) if args.labels else []
    except converter.ConverterError as exc:
        print(f"classify: error: {exc}", file=sys.stderr)
        return 2
    values, indices = scores.topk(min(args.top, scores.numel()))
    for value, index in zip(values.tolist(), indices.tolist()):
        label = names[index] if index < len(names) else f"class {index}"
        print(f"{value:10.4f}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
