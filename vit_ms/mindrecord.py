"""python -m vit_ms.mindrecord: convert an ImageNet-style folder to MindRecord shards (vit_ms/data/mindrecord.py).

    python -m vit_ms.mindrecord --root /data/imagenet --out /data/imagenet_mr [--samples-per-shard 10000]

Resumable: a second run with the same --out skips the shards already written (for the same source only).
Train and evaluate from it with `data.format: mindrecord` and `data.root: <out>`.
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import DataConfig
from .errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vit_ms.mindrecord", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder holding <root>/<split>/<class>/<image>")
    parser.add_argument("--out", required=True, help="output folder (<out>/<split>/...); resumable")
    parser.add_argument("--splits", nargs="+", default=["train", "val"],
                        help="split folder names, the first labels the others (default: train val)")
    parser.add_argument("--samples-per-shard", type=int, default=10000,
                        help="records per shard file (default 10000, about 1.1 GB of ImageNet JPEGs)")
    parser.add_argument("--max-image-pixels", type=int, default=DataConfig.max_image_pixels)
    parser.add_argument("--index-cache-dir", default="", help="as data.index_cache_dir ('off': no cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # MindSpore takes seconds to import (the converter writes with it): imported once the arguments parse, so
    # --help and usage errors answer at once
    from .data.index_cache import resolve_cache_dir
    from .data.mindrecord import convert_folder

    results = convert_folder(Path(args.root), Path(args.out), args.splits, args.samples_per_shard,
                             args.max_image_pixels, not args.quiet, resolve_cache_dir(args.index_cache_dir))
    for split, progress in results.items():
        count = sum(s["count"] for s in progress["shards"].values())
        left = len(progress["scan_bad"]) + sum(len(s["left_out"]) for s in progress["shards"].values())
        print(f"{split}: {count} images in {len(progress['shards'])} shards, {left} files left out (listed in "
              f"{Path(args.out) / split / 'bad_files.txt'})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
