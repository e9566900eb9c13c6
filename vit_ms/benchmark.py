"""Entry point: python -m vit_ms.benchmark (the benchmark lives in vit_ms/tools/model_bench.py)."""
import sys

from .errors import run_cli
from .tools.model_bench import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
