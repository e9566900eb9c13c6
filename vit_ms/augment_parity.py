"""Entry point: python -m vit_ms.augment_parity (the comparison with timm lives in vit_ms/tools/augment_parity.py)."""
import sys

from .errors import run_cli
from .tools.augment_parity import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
