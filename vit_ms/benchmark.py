"""Entry point: python -m vit_ms.benchmark (the benchmark lives in vit_ms/tools/benchmark.py)."""
import sys

from .errors import run_cli
from .tools.benchmark import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
