"""Entry point: python -m vit_ms.convert. Weights in (--src ...: vit_ms/weights/to_checkpoint.py) or out
(--to timm CKPT OUT: vit_ms/inference/to_timm.py)."""
import argparse
import sys
from typing import Optional, Sequence

from .errors import run_cli
from .weights.to_checkpoint import build_parser as build_in_parser
from .weights.to_checkpoint import main as convert_in


def build_parser() -> argparse.ArgumentParser:
    """Both directions on one help page (`-h`); each direction parses its arguments with its own parser."""
    from .inference.to_timm import add_options  # MindSpore's checkpoint reader: only for --to

    parser = build_in_parser()
    parser.usage = ("python -m vit_ms.convert --src WEIGHTS --model NAME --out FILE [options]\n"
                    "       python -m vit_ms.convert --to timm CKPT OUT [--weights {raw,ema}] [--config YAML] "
                    "[--force]")
    add_options(parser.add_argument_group("weights out (--to timm CKPT OUT: one of our checkpoints as a timm / "
                                          "Hugging Face folder)"))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--to" or a.startswith("--to=") for a in argv):
        from .inference.to_timm import main as convert_out  # MindSpore's checkpoint reader: only for --to

        return convert_out(argv)
    if any(a in ("-h", "--help") for a in argv):
        build_parser().parse_args(["-h"])  # prints both directions' options and exits
    return convert_in(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
