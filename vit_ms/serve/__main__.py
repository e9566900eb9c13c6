"""python -m vit_ms.serve: see vit_ms/serve/cli.py."""
import sys

from ..errors import run_cli
from .cli import main

sys.exit(run_cli(main))
