"""Check that this machine can run vit-ms: python -m vit_ms.doctor [--config X.yaml] [--set key=value ...]

Reports MindSpore's version and build, the device and chip, the CANN or CUDA version, the launcher environment,
host cores per device, free disk and memory; then trains a tiny ViT on the device with the plan's real choices
for the config (amp level and dtype, attention, sink mode): a few steps with finite losses, a save, an exact
resume, an eval and a MindIR export. Prints a table and one JSON line; exits 1 naming what failed and its fix
(2 for a config that does not load). Run it first on a new machine or cluster node, directly (not under msrun).
"""
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from .cli import base_parser
from .config_loader import load_config
from .errors import UserError, run_cli
from .tools.selfcheck import Check, machine_checks, run_checks

MARKS = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skipped": "-"}


def table(checks: List[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  {'status':<6}  {'seconds':>7}  detail"]
    for c in checks:
        seconds = f"{c.seconds:7.1f}" if c.seconds else " " * 7
        lines.append(f"{c.name:<{width}}  {MARKS[c.status]:<6}  {seconds}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<{width}}  {'':<6}  {'':>7}  fix: {c.fix}")
    return "\n".join(lines)


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0], config_required=False, prog="python -m vit_ms.doctor")
    parser.add_argument("--out", default=None, help="keep the tiny run's data, runs, export and doctor.log in this "
                                                    "folder (default: a temporary folder, removed afterwards)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)  # a config that does not load stops here (exit 2)
    with tempfile.TemporaryDirectory(prefix="vit_ms_doctor_") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the doctor's folder '{work}' ({err.strerror}); pass a writable --out")
        log_file = work / "doctor.log"
        if not args.out:
            log_file = Path(tempfile.gettempdir()) / f"vit_ms_doctor_{os.getpid()}.log"
        checks = machine_checks(cfg, os.environ) + run_checks(args.config, args.overrides, work, log_file)
    failed = [c for c in checks if c.status == "fail"]
    print(table(checks))
    print(json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}))
    for c in failed:
        print(f"doctor: {c.name} failed: {c.detail}" + (f"\n  fix: {c.fix}" if c.fix else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
