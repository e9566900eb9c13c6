"""Check that this machine can run vit-ms: python -m vit_ms.doctor [--config X.yaml] [--set key=value ...]

Reports MindSpore's version and build, the device and chip, the CANN or CUDA version, the launcher environment,
host cores per device, free disk and memory; on an Ascend node it then compiles the config's real train step in a
dry run (does it compile, does it fit the device's memory); then trains a tiny ViT on the device with the plan's
real choices for the config (amp level and dtype, attention, sink mode): a few steps with finite losses, a save,
an exact resume, an eval and a MindIR export. Prints a table and one JSON line; exits 1 naming what failed and its
fix (2 for a config that does not load). Run it first on a new machine or cluster node, directly (not under msrun).

    python -m vit_ms.doctor --dry-run 910b --ranks 64 --config vit_b16.yaml [--standins DIR]

compiles rank 0 of 64 for an Ascend 910B without one (`vit_ms.tools.dryrun`): the plan for that chip, the compile
seconds, the peak device memory against the chip's; its last line is JSON (compiled, peak_mb, device_mb, fits).
Exits 0 when it compiles and fits, 1 with the stage that failed and what to change.
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
from .runtime import read_chip, resolve_device_target
from .tools.dryrun import CHIPS, DryRunResult, dry_run, libraries_for
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
    parser.add_argument("--dry-run", dest="dry_run", metavar="CHIP", choices=sorted(CHIPS), default=None,
                        help="compile the config's train step for this Ascend chip (910a, 910b, 910c) without one "
                             "and report its device memory, instead of checking this machine")
    parser.add_argument("--ranks", type=int, default=1, help="with --dry-run: data-parallel ranks of the job "
                                                             "(rank 0 is compiled; default 1)")
    parser.add_argument("--standins", default=None, metavar="DIR",
                        help="with --dry-run on a machine without CANN: the stand-in CANN libraries built by "
                             "python -m vit_ms.cann_standins DIR (default: the host's CANN)")
    return parser


def print_dry_run(result: DryRunResult) -> int:
    """The report, the JSON line last; the paragraph of what to change on stderr. 0 when it compiled and fits."""
    print(result.report())
    print(json.dumps(result.to_dict()))
    if not result.fits:
        print(f"doctor: dry run: {result.advice()}", file=sys.stderr)
    return 0 if result.fits else 1


def dry_run_main(args) -> int:
    if args.ranks < 1:
        raise UserError(f"--ranks {args.ranks}: the job's data-parallel ranks must be 1 or more")
    load_config(args.config, args.overrides)  # a config that does not load stops here (exit 2), not in the child
    standins = libraries_for(args.standins, dict(os.environ))
    return print_dry_run(dry_run(args.config, args.overrides, args.dry_run, args.ranks, standins))


def node_dry_run(config: Optional[str], overrides: Sequence[str], chip: str) -> Check:
    """On an Ascend node, before the tiny training: the config's own step compiled in a dry run for this chip
    (`chip`: MindSpore's SoC name), with the node's CANN."""
    name = next((short for short, soc in CHIPS.items() if soc == chip), None)
    if name is None:
        return Check("dry run", "warn", f"no dry run for chip '{chip}' (known: {', '.join(sorted(CHIPS.values()))})")
    result = dry_run(config, overrides, name)
    detail = (f"compiles in {result.seconds:.0f} s; peak {result.actual_mb:,} MB of {result.usable_mb:,} MB usable"
              if result.compiled else f"does not compile ({result.stage})")
    return Check("dry run", "ok" if result.fits else "fail", detail, result.advice(), round(result.seconds, 1))


def ascend_preflight(cfg, config: Optional[str], overrides: Sequence[str]) -> List[Check]:
    """The dry run of the config's step on an Ascend node (none elsewhere), so "compiles, fits" comes before
    "trains"."""
    target = resolve_device_target(cfg.train.device_target)
    if target != "Ascend":
        return []
    device_id = int(os.environ.get("DEVICE_ID", cfg.train.device_id))  # as setup_runtime reads it
    return [node_dry_run(config, overrides, read_chip(target, device_id)[0])]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dry_run:
        return dry_run_main(args)
    if args.ranks != 1 or args.standins:
        raise UserError("--ranks and --standins belong to a dry run: add --dry-run 910a, 910b or 910c")
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
        checks = (machine_checks(cfg, os.environ) + ascend_preflight(cfg, args.config, args.overrides)
                  + run_checks(args.config, args.overrides, work, log_file))
    failed = [c for c in checks if c.status == "fail"]
    print(table(checks))
    print(json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}))
    for c in failed:
        print(f"doctor: {c.name} failed: {c.detail}" + (f"\n  fix: {c.fix}" if c.fix else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
