"""Entry point: python -m vit_ms.convert (the converter lives in vit_ms/weights/convert.py)."""
import sys

from .errors import run_cli
from .weights.convert import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
