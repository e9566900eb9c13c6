"""python -m vit_ms.augment_parity: our augmentation and eval transform beside timm's own code, in one table.

The comparison itself is vit_ms/tools/augment_parity.py; it needs timm (and torch, torchvision) importable, in a
side environment: timm is no dependency of vit-ms.
"""
import argparse
import sys
from typing import Optional, Sequence

from .errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vit_ms.augment_parity",
                                     description="Compare RandAugment, random erasing, the training resize and the "
                                                 "eval transform with timm's own code on real photos (needs timm).")
    parser.add_argument("--draws", type=int, default=500,
                        help="random draws for the whole-policy and erasing statistics (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both sides' draws (default 0)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ops", "policy", "erasing", "resize", "weights"],
                        help="leave these parts out")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.draws < 1:
        raise UserError(f"--draws={args.draws} must be at least 1")
    from .tools.augment_parity import format_table, parity_rows  # MindSpore's import: after the arguments check

    rows, versions = parity_rows(args.draws, args.seed, args.skip)
    print(format_table(rows, versions))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
