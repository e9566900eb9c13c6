"""Train a Vision Transformer: python train.py --config configs/vit_b16.yaml [--set k=v ...] [--resume ckpt|auto]"""
import os
import sys

from vit_ms.cli import base_parser, config_from_args
from vit_ms.errors import run_cli
from vit_ms.train.stopping import watch_stop_signals


def build_parser():
    parser = base_parser(__doc__)
    parser.add_argument("--resume", default=None, metavar="CKPT",
                        help="continue from a checkpoint, or 'auto' for the newest complete one in the run directory")
    parser.add_argument("--allow-changes", action="store_true",
                        help="resume even when the settings differ from the checkpoint's in a way that jumps the lr "
                             "schedule or drops saved state (EMA weights); without it such a resume is refused")
    return parser


def main(argv=None) -> int:
    watch_stop_signals()  # before MindSpore starts threads: SIGTERM/SIGINT stop training gracefully (143/130)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    from vit_ms.train.trainer import run_training  # imports MindSpore: after the config is known to be good
    from vit_ms.weights.hub import cache_dir_from_env

    run_training(cfg, resume=args.resume, cache_dir=cache_dir_from_env(os.environ), allow_changes=args.allow_changes)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
