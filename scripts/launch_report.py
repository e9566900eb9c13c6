"""Which rank ended an msrun job, and how: the line run_distribute_train.sh prints when msrun fails.

    python scripts/launch_report.py <log_dir> <node_rank> <workers_per_node>

msrun stops every process once one exits with an error, then reports it by process id only ("Worker process 4121
exit with exception. Error code: -9", in the stderr the script keeps as <log_dir>/msrun.err), and its scheduler
may name another worker ("worker 0 is the first one timed out"). The process id is matched to msrun's
worker_<i>.log, whose MindSpore lines carry it ("DISTRIBUTED(4121,..."; a process that stopped before MindSpore
logged anything: the log with train.py's "error: ..." line), and worker i of node n is rank
n * workers_per_node + i (msrun numbers ranks by node when --node_rank is given). Standard library only.
"""
import argparse
import re
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

_FAILED = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")


def _how(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return (f"was killed by {name} (signal {-code}: the OOM killer, kill -9, or a crash in native code); msrun "
                f"stopped the other processes. Checkpoints are written whole or not at all, so last.ckpt is the "
                f"newest complete one: run the same command with --resume auto to continue")
    return f"exited with status {code} (its log says why); msrun stopped the other processes"


def report(log_dir: Path, node_rank: int, workers: int) -> Optional[str]:
    """The sentence naming the first failed rank, or None when msrun's output names none."""
    try:
        found = _FAILED.search((log_dir / "msrun.err").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    if found is None:
        return None
    pid, code = found.group(1), int(found.group(2))
    logs = {int(p.stem.split("_")[1]): p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(log_dir.glob("worker_*.log")) if p.stem.split("_")[1].isdigit()}
    worker = next((i for i, text in sorted(logs.items()) if f"({pid}," in text), None)
    if worker is None:  # it stopped before MindSpore logged anything: the worker whose log ends in our error
        worker = next((i for i, text in sorted(logs.items()) if re.search(r"^error: ", text, re.M)), None)
    who = (f"rank {node_rank * workers + worker} (worker {worker} of node {node_rank}, pid {pid}, log "
           f"{log_dir / f'worker_{worker}.log'})" if worker is not None else f"the process {pid} of node {node_rank}")
    return f"{who} {_how(code)}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python scripts/launch_report.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("log_dir", type=Path, help="msrun's --log_dir (holds msrun.err and worker_<i>.log)")
    parser.add_argument("node_rank", type=int, help="this node's rank (0 on one machine)")
    parser.add_argument("workers", type=int, help="worker processes per node")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    line = report(args.log_dir, args.node_rank, args.workers)
    if line:
        print(f"error: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
