"""Entry point: python -m vit_ms.plot RUN_DIR [RUN_DIR ...] --out cmp.png (the code is in vit_ms/tools/plot.py)."""
import sys

from .errors import run_cli
from .tools.plot import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
