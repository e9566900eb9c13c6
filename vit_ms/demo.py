"""python -m vit_ms.demo: write a small ImageNet-style dataset with no download (vit_ms/data/demo.py).

    python -m vit_ms.demo --out data/digits
    python -m vit_ms.demo --out /tmp/synth --kind synthetic --image-size 224 --train-per-class 50

digits: scikit-learn's handwritten digits upscaled to PNGs (the demo recipe's data, configs/demo.yaml);
synthetic: random but learnable JPEG and PNG images, for tests and benchmarks.
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vit_ms.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write <out>/train/<class>/ and <out>/val/<class>/")
    parser.add_argument("--kind", choices=["digits", "synthetic"], default="digits")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="digits only")
    parser.add_argument("--num-classes", type=int, default=10, help="synthetic only")
    parser.add_argument("--train-per-class", type=int, default=20, help="synthetic only")
    parser.add_argument("--val-per-class", type=int, default=5, help="synthetic only")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # MindSpore takes seconds to import (the data package loads it): imported once the arguments parse, so --help
    # and usage errors answer at once
    from .data.demo import digits_counts, write_digits_folder, write_synthetic_folder

    if args.kind == "digits":
        root = write_digits_folder(Path(args.out), args.image_size, args.val_fraction, args.seed)
        counts = digits_counts(root)
    else:
        root = write_synthetic_folder(Path(args.out), args.num_classes, args.train_per_class, args.val_per_class,
                                      args.image_size, args.seed)
        counts = {"train": args.num_classes * args.train_per_class, "val": args.num_classes * args.val_per_class}
    print(f"wrote {args.kind} dataset to {root}: {counts['train']} train / {counts['val']} val images")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
