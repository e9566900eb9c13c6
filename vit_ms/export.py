"""Entry point: python -m vit_ms.export (the exporter lives in vit_ms/inference/to_mindir_onnx.py)."""
import sys

from .errors import run_cli
from .inference.to_mindir_onnx import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
