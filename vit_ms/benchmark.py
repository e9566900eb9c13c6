"""Measure a config's speed on this machine, or the folder scan's cost: python -m vit_ms.benchmark

    python -m vit_ms.benchmark --config vit_ti16.yaml --batch 16 --compare mindcv   # train step, eval, memory, data
    python -m vit_ms.benchmark --config vit_b16.yaml --data-only --compare mindcv   # the data pipelines alone
    python -m vit_ms.benchmark --scan --scan-files 100000 --scan-distinct 500       # the folder scan alone

The command line only; the measurements: vit_ms/tools/model_bench.py (train step, eval, memory, FLOPs, --profile,
--distill, --compare), vit_ms/tools/data_bench.py (--data-only), vit_ms/tools/scan_bench.py (--scan).
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from .cli import base_parser, config_from_args
from .errors import ConfigError, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__.split("\n\n")[0], config_required=False, prog="python -m vit_ms.benchmark")
    parser._option_string_actions["--config"].help = ("YAML config: a path, or a name in configs/ such as "
                                                      "vit_b16.yaml (required, except with --scan)")
    parser.add_argument("--batch", type=int, default=0, help="batch size (default: train.batch_size)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (default 2)")
    parser.add_argument("--mode", choices=["graph", "pynative"], default=None, help="default: train.mode")
    parser.add_argument("--compare", choices=["mindcv"], default=None, help="also time mindcv's ViT of this size")
    parser.add_argument("--distill", action="store_true",
                        help="also time a distilled train step (distill.* of the config) against the student's step "
                             "plus the teacher's forward pass (vit_ms/tools/distill_bench.py)")
    parser.add_argument("--formulation", action="append", default=[], metavar="LAYER=WAY",
                        help="time our model with a layer computed another way than the device's choice "
                             "(repeatable): patch_embed=conv|matmul, backward=autodiff|handwritten, "
                             "bias_grad=reduce|gemm; the function and the weights stay the same")
    parser.add_argument("--skip-data", action="store_true", help="do not time the data pipeline")
    parser.add_argument("--data-image-size", type=int, default=0,
                        help="side of the images written for the data pipeline (default: 9/7 of model.image_size, "
                             "288 px at 224, as photos are larger than the crop); --data-only: width, height 3/4 "
                             "of it (default 500x375)")
    parser.add_argument("--data-batches", type=int, default=20, help="batches timed through the data pipeline")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="CPU: after the timed steps, profile one more train step of ours with mindspore.profiler, "
                             "write the trace into DIR and print the time per op type (vit_ms/tools/profile_step.py)")
    data = parser.add_argument_group("--data-only: the data pipelines alone (vit_ms/tools/data_bench.py)")
    data.add_argument("--data-only", action="store_true",
                      help="time only the data pipelines (train and eval; against mindcv's loader with --compare "
                           "mindcv) on photo-sized JPEGs")
    data.add_argument("--data-images", type=int, default=512, help="JPEGs per split (default 512)")
    data.add_argument("--data-rounds", type=int, default=5, help="alternating rounds (default 5)")
    data.add_argument("--device-rate", type=float, default=1500.0,
                      help="images/s one device trains, for the host cores it needs (default 1500, ViT-B/16 on one "
                           "Ascend 910 / A100)")
    scan = parser.add_argument_group("--scan: the folder scan's cost, no config (vit_ms/tools/scan_bench.py)")
    scan.add_argument("--scan", action="store_true",
                      help="time the first, checked scan of a split of hard-linked photo-sized JPEGs and a later "
                           "start on the unchanged split")
    scan.add_argument("--scan-files", type=int, default=100_000, help="files in the split (default 100,000)")
    scan.add_argument("--scan-distinct", type=int, default=500, help="distinct JPEGs written (default 500)")
    scan.add_argument("--scan-dir", default=os.path.join(tempfile.gettempdir(), "vit_ms_scan_bench"),
                      help="folder for the split and its index cache (default: vit_ms_scan_bench in the temp folder)")
    scan.add_argument("--scan-keep", action="store_true", help="leave the files in --scan-dir for another run")
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.scan:
        others = [flag for flag, given in (("--config", args.config), ("--data-only", args.data_only),
                                           ("--compare", args.compare), ("--distill", args.distill),
                                           ("--profile", args.profile)) if given]
        if others:
            raise ConfigError(f"--scan measures the folder scan alone, without a config; it cannot go with "
                              f"{', '.join(others)}: run those in a separate command")
        if args.scan_files < 1 or args.scan_distinct < 1:
            raise ConfigError("--scan-files and --scan-distinct must be >= 1")
        return
    if args.config is None:
        raise ConfigError("--config is required: the YAML config to measure, e.g. --config vit_b16.yaml (only "
                          "--scan runs without one)")
    if args.steps < 1 or args.warmup < 0 or args.batch < 0 or args.data_batches < 1:
        raise ConfigError("--steps and --data-batches must be >= 1, --warmup and --batch >= 0")
    if args.data_images < 1 or args.data_rounds < 1 or args.device_rate <= 0:
        raise ConfigError("--data-images and --data-rounds must be >= 1, --device-rate > 0")
    if args.profile and args.data_only:
        raise ConfigError("--profile profiles a train step; it cannot go with --data-only")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _check(args)
    if args.scan:
        from .tools.scan_bench import scan_benchmark  # the measurements import MindSpore: after the checks, below

        print("\n".join(scan_benchmark(Path(args.scan_dir), args.scan_files, args.scan_distinct, args.scan_keep)))
        return 0
    # MindSpore and mindcv take seconds to import: loaded once the arguments check, so --help and usage errors
    # answer at once
    from .tools.data_bench import data_benchmark, format_data_table
    from .tools.distill_bench import check_distill_config  # (the same reason)
    from .tools.model_bench import bench_config, benchmark, format_table  # (the same reason)
    from .plan import parse_formulation  # (the same reason)
    from .weights.hub import cache_dir_from_env  # (the same reason)

    cfg = config_from_args(args)
    if args.distill:
        check_distill_config(cfg)
    if args.data_only:
        batch = args.batch or min(cfg.train.batch_size, 64)
        size = (args.data_image_size, args.data_image_size * 3 // 4) if args.data_image_size else (500, 375)
        records = data_benchmark(cfg, batch, args.data_images, args.data_rounds, args.compare, args.device_rate,
                                 *size)
        print(format_data_table(records, cfg.run_name))
    else:
        cfg = bench_config(cfg, args.batch or cfg.train.batch_size, args.mode)
        records = benchmark(cfg, args.steps, args.warmup, args.compare, not args.skip_data, args.data_image_size,
                            args.data_batches, args.profile, args.distill, parse_formulation(args.formulation),
                            cache_dir_from_env(os.environ))
        print(format_table(records))
    for record in records:
        print(json.dumps(record))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
