"""Entry point: python -m vit_ms.plot RUN_DIR [RUN_DIR ...] --out cmp.png (the code: vit_ms/figures/run_curves.py)."""
import sys

from .errors import run_cli
from .figures.run_curves import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
