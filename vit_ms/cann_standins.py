"""python -m vit_ms.cann_standins OUTDIR: build stand-in CANN libraries (needs g++, takes seconds), so that
MindSpore's Ascend plugin loads for a dry run (python -m vit_ms.doctor --dry-run ...) on a machine without CANN.
What they are and what a dry run proves: vit_ms/tools/cann_standins.py, docs/devices.md."""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import UserError, run_cli
from .tools.cann_standins import LIBRARIES, build, symbols


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vit_ms.cann_standins", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="the folder to build them in (created)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        built = build(Path(args.out_dir))
    except RuntimeError as err:  # g++ missing or failing: what it printed
        raise UserError(f"the stand-in CANN libraries could not be built in '{args.out_dir}': {err}") from err
    print(f"{len(symbols())} functions in {len(LIBRARIES)} libraries under {built.lib_dir}")
    print(built.exports())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
