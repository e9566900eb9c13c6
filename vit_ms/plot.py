"""Training curves of one or more runs: python -m vit_ms.plot RUN_DIR [RUN_DIR ...] [--out cmp.png]

    python -m vit_ms.plot runs/demo                          # -> curves.png in the current folder
    python -m vit_ms.plot runs/a runs/b --out cmp.png         # overlaid, labelled by run name

The command line only; the figure: vit_ms/figures/run_curves.py.
"""
import argparse
import sys
from typing import Optional, Sequence

from .errors import UserError, run_cli
from .figures.run_curves import plot_runs, read_records, run_labels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vit_ms.plot",
                                     description="Plot training curves of one or more runs from their "
                                                 "metrics.jsonl (overlaid, labelled by run name).")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<run_name>)")
    parser.add_argument("--out", default="curves.png", help="PNG to write (default: curves.png)")
    parser.add_argument("--title", default="", help="figure title (default: the run names)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    runs = {label: read_records(d) for label, d in zip(run_labels(args.run_dirs), args.run_dirs)}
    empty = [label for label, records in runs.items() if not records]
    if empty:
        raise UserError(f"no epoch records yet in {', '.join(empty)} (metrics.jsonl is empty): plot after the "
                        f"first epoch has finished")
    print(f"wrote {plot_runs(runs, args.out, args.title)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
