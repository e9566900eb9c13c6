"""Entry point: python -m vit_ms.convert (the converter lives in vit_ms/weights/to_checkpoint.py)."""
import sys

from .errors import run_cli
from .weights.to_checkpoint import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
