"""Entry point: python -m vit_ms.convert. Weights in (--src ...: vit_ms/weights/to_checkpoint.py) or out
(--to timm CKPT OUT: vit_ms/inference/to_timm.py)."""
import sys
from typing import Optional, Sequence

from .errors import run_cli
from .weights.to_checkpoint import main as convert_in


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--to" or a.startswith("--to=") for a in argv):
        from .inference.to_timm import main as convert_out  # MindSpore's checkpoint reader: only for --to

        return convert_out(argv)
    return convert_in(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))
