"""Arguments shared by the entry scripts: --config, repeatable --set, --debug."""
import argparse

from .config import Config
from .config_loader import load_config


def base_parser(description: str, config_required: bool = True, **kwargs) -> argparse.ArgumentParser:
    """A parser with --config, --set and --debug; `kwargs` go to argparse.ArgumentParser (prog, formatter_class)."""
    parser = argparse.ArgumentParser(description=description, **kwargs)
    parser.add_argument("--config", required=config_required, default=None,
                        help="YAML config: a path, or a name in configs/ such as vit_b16.yaml"
                             + ("" if config_required else " (default: the one the checkpoint records)"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    """--weights raw|ema for the scripts that load a checkpoint (vit_ms.weights.checkpoint.chosen_weights)."""
    parser.add_argument("--weights", choices=["raw", "ema"], default=None,
                        help="a checkpoint trained with train.ema holds both: the raw weights or their moving "
                             "average (default: the ones the checkpoint records as its best)")
