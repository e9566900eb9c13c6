"""A dry run: the real training step compiled for an Ascend chip on a machine without one, and the device memory
MindSpore plans for it.

    result = dry_run("vit_b16.yaml", overrides, chip="910b", ranks=8, standins=StandIns.at(folder))
    result.compiled, result.peak_mb, result.fits, result.report(), result.advice()

MindSpore's dry run (`MS_SIMULATION_LEVEL=1`) mocks the device: the graph goes through MindSpore's front end, its
backend passes, kernel selection and the data-sink graph for `device_target="Ascend"`, nothing is computed, and
MindSpore prints the peak device memory it planned for the rank. The child process (`python -m
vit_ms.tools.dryrun`) builds what train.py builds (runtime and plan with the given chip and ranks, the model, the
teacher, the optimizer, the train step and `mindspore.train.Model`) and trains 2 steps on batches of the config's
shapes, so no dataset is read. Rank 0 of N is compiled (MindSpore simulates the others' collectives).

What it does not check: CANN's own kernel checks and each kernel's workspace memory (not in the peak), and
jit_level O2 (CANN's graph engine; the dry run compiles at O0 instead, and says so). On a host without CANN the
stand-in libraries of `vit_ms.tools.cann_standins` (built by python -m vit_ms.cann_standins) let MindSpore's Ascend plugin load.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..errors import UserError
from .cann_standins import LIBRARIES, StandIns

CHIPS = {"910a": "ascend910", "910b": "ascend910b", "910c": "ascend910_93"}  # MindSpore's SoC names (vit_ms.chips)
# Memory (HBM) of one device, in MB (GB x 1024). 910A: 32 GB HBM (Atlas 300T/800 training
# series); 910B: 64 GB (Atlas 800T A2, Ascend910B1-B3; the 910B4 has 32 GB); 910C: 64 GB per die, two dies per
# package shown as two devices (128 GB a package: Huawei, "Serving Large Language Models on Huawei CloudMatrix384",
# arXiv:2506.12708, 2025).
DEVICE_MB = {"910a": 32 * 1024, "910b": 64 * 1024, "910c": 64 * 1024}
# MindSpore 2.10's default jit_level: O2 (CANN's graph engine) on the first-generation Atlas training series,
# O0 elsewhere (mindspore.set_context jit_config docs). A stand-in cannot judge O2, so O2 is checked at O0.
DEFAULT_JIT_LEVEL = {"910a": "O2", "910b": "O0", "910c": "O0"}
CHECKED_INSTEAD_OF_O2 = "O0"
# MindSpore's memory pool takes this share of the device (the dry run printed "MindSpore Used memory size: 61430M"
# of "Device MOC memory size: 65536M" for its simulated 64 GB device; the same share is assumed for 32 GB);
# everything the rank allocates comes out of the pool.
POOL_SHARE = 61430 / 65536
# Level 1 leaves out each kernel's workspace memory (it appears on a device only): the share of the pool a fit keeps
# free for it.
WORKSPACE_MARGIN = 0.10
STEPS = 2
# MindSpore 2.10 runs a graph with a tensor `if` (the train step's skip of an overflowed update) at jit_level O0/O1
# as ConditionSwitch kernels inside its kernel-by-kernel sub-graph execution, which it turns off when the runtime
# has a single actor thread (GraphScheduler::Initialize: actor threads <= kAsyncLaunchThreadNum = 1). Unless set,
# the actor threads are floor(0.18 x min(runtime_num_threads = 30, CPU cores)), at least 1 (ComputeThreadNums):
# 5 on a training server with 28 cores or more, 1 on a host with fewer than 12, where BuildKernelActor stops with
# "Can not build a sub graph which contains ConditionSwitch". The dry run sets the server's count, so it takes
# the device's path on any host; `mindspore.runtime.dispatch_threads_num` does the same on a small host.
HOST_DISPATCH_THREADS = 5
RESULT_MARK = "vit_ms.dryrun result: "

_PEAK = re.compile(r"Used peak memory usage \(without fragments\): *(\d+)M")
_ACTUAL = re.compile(r"Actual peak memory usage \(with fragments\): *(\d+)M")
_BACKEND = ("graph_scheduler", "ccsrc/backend", "ccsrc/runtime", "kernel", "ConditionSwitch", "Can not build")
_MEMORY = ("Out of memory", "out of memory", "Malloc device memory failed", "memory isn't enough")


@dataclass
class DryRunResult:
    chip: str
    ranks: int
    compiled: bool
    seconds: float = 0.0
    peak_mb: int = 0  # MindSpore's "used peak memory usage (without fragments)"
    actual_mb: int = 0  # "actual peak memory usage (with fragments)": what the pool has to hold
    jit_level: str = ""  # the level compiled
    plan: str = ""  # the plan's one-line description
    notes: List[str] = field(default_factory=list)  # what was checked differently from the device, and why
    stage: str = ""  # where it failed: "front end", "backend" or "memory"; "" when it compiled and fits
    error: str = ""  # the failure's last lines

    @property
    def device_mb(self) -> int:
        return DEVICE_MB[self.chip]

    @property
    def usable_mb(self) -> int:
        """What the peak may reach: MindSpore's pool on this device, less the workspace margin."""
        return int(self.device_mb * POOL_SHARE * (1 - WORKSPACE_MARGIN))

    @property
    def headroom_mb(self) -> int:
        return self.usable_mb - self.actual_mb

    @property
    def fits(self) -> bool:
        return self.compiled and self.headroom_mb >= 0

    def to_dict(self) -> dict:
        return {"compiled": self.compiled, "fits": self.fits, "chip": self.chip, "ranks": self.ranks,
                "seconds": round(self.seconds, 1), "peak_mb": self.peak_mb, "actual_peak_mb": self.actual_mb,
                "device_mb": self.device_mb, "usable_mb": self.usable_mb, "headroom_mb": self.headroom_mb,
                "jit_level": self.jit_level,
                "stage": self.stage or ("memory" if self.compiled and not self.fits else ""), "notes": self.notes}


    def report(self) -> str:
        """The lines a user reads: the plan, the compile, the memory against the device."""
        done = f"compiled in {self.seconds:.1f} s" if self.compiled else f"did not compile ({self.stage})"
        lines = [f"plan: {self.plan or '(not resolved)'}",
                 f"rank 0 of {self.ranks} on {self.chip.upper()}, jit_level {self.jit_level or '?'}: {done}"]
        if self.compiled:
            lines += [f"peak device memory: {self.peak_mb:,} MB without fragments, {self.actual_mb:,} MB with",
                      f"device memory: {self.device_mb:,} MB ({self.chip.upper()}); usable {self.usable_mb:,} MB "
                      f"(MindSpore's pool, {WORKSPACE_MARGIN:.0%} of it kept for kernel workspace, which a dry run "
                      f"does not count); headroom {self.headroom_mb:,} MB"]
        lines += [f"note: {note}" for note in self.notes if "unchecked" in note]
        return "\n".join(lines)

    def advice(self) -> str:
        """One paragraph for a run that did not compile or does not fit: the stage and what to change."""
        if self.fits:
            return ""
        if self.stage == "memory":
            return (f"memory: rank 0 of {self.ranks} needs {self.actual_mb:,} MB at its peak but {self.chip.upper()} "
                    f"leaves {self.usable_mb:,} MB; lower train.batch_size (keep train.global_batch_size and "
                    f"accumulation makes up the rest), set train.recompute=blocks, or train on more ranks")
        what = {"front end": "MindSpore's front end (types, shapes, the parallel strategy) rejected the train step",
                "backend": "MindSpore's backend (graph passes, kernel selection, the data-sink graph) could not "
                           "build the train step"}[self.stage]
        last = " ".join(line.strip() for line in self.error.splitlines() if line.strip() and not line.startswith("-"))
        return (f"{self.stage}: {what}: {last[:600]}. The plan above names each choice; change the key the error "
                f"points to (model.attention, amp.level/amp.dtype, train.sink_mode, train.jit_level) and run the "
                f"dry run again")


def has_cann(environ: Dict[str, str]) -> bool:
    """True where CANN's runtime library (libascendcl.so) is on LD_LIBRARY_PATH, as its set_env.sh puts it."""
    return any((Path(folder) / "libascendcl.so").is_file()
               for folder in environ.get("LD_LIBRARY_PATH", "").split(":") if folder)


def libraries_for(standins_dir: Optional[str], environ: Dict[str, str]) -> Optional[StandIns]:
    """The stand-ins in `standins_dir`, or None to use the host's CANN; UserError when neither is there."""
    if standins_dir:
        found = StandIns.at(Path(standins_dir))
        if not found.complete():
            raise UserError(f"--standins {standins_dir}: no stand-in CANN libraries there (looked for "
                            f"{found.lib_dir}/libascendcl.so and {len(LIBRARIES) - 1} others); build them with "
                            f"python -m vit_ms.cann_standins {standins_dir} (needs g++, takes seconds)")
        return found
    if not has_cann(environ):
        raise UserError("the dry run needs CANN's libraries for MindSpore's Ascend plugin, and libascendcl.so is "
                        "not on LD_LIBRARY_PATH. On an Ascend host, source CANN's set_env.sh "
                        "(/usr/local/Ascend/ascend-toolkit/set_env.sh); on a machine without CANN, build stand-ins "
                        "with python -m vit_ms.cann_standins /tmp/cann-standins (needs g++) and pass "
                        "--standins /tmp/cann-standins")
    return None


def dry_run_overrides(chip: str, ranks: int, out_dir: Path) -> List[str]:
    """What the child sets on top of the user's config: the Ascend target, the ranks, a throw-away run folder."""
    return ["train.device_target=Ascend", f"distributed={'true' if ranks > 1 else 'false'}",
            "train.compile_cache=false", f"output_dir={out_dir}", "train.tensorboard=false"]


def child_environ(base: Dict[str, str], ranks: int, standins=None) -> Dict[str, str]:
    """The child's environment: MindSpore's dry run at level 1, rank 0 of `ranks`, the stand-ins when given."""
    env = standins.environ(base) if standins is not None else dict(base)
    repo = str(Path(__file__).resolve().parents[2])  # the child imports this vit_ms, installed or not
    env["PYTHONPATH"] = ":".join([repo] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(MS_SIMULATION_LEVEL="1", RANK_SIZE=str(ranks), RANK_ID="0", GLOG_v=env.get("GLOG_v", "2"))
    for var in ("MS_WORKER_NUM", "MS_ROLE", "RANK_TABLE_FILE", "DEVICE_ID"):  # not one of a launcher's workers
        env.pop(var, None)
    return env


def parse_output(text: str, result: DryRunResult) -> DryRunResult:
    """MindSpore's two peak lines (the last of each: the largest graph is compiled last) and the child's result."""
    peaks, actuals = [int(x) for x in _PEAK.findall(text)], [int(x) for x in _ACTUAL.findall(text)]
    marked = [line[len(RESULT_MARK):] for line in text.splitlines() if line.startswith(RESULT_MARK)]
    if marked:
        found = json.loads(marked[-1])
        result = replace(result, compiled=found["compiled"], seconds=found["seconds"], plan=found["plan"],
                         jit_level=found["jit_level"], notes=found["notes"], error=found.get("error", ""))
    if peaks:
        result = replace(result, peak_mb=max(peaks), actual_mb=max(actuals or peaks))
    if not result.compiled:
        tail = result.error or "\n".join(text.strip().splitlines()[-15:])
        stage = "memory" if any(m in tail for m in _MEMORY) else \
            "backend" if any(m in tail for m in _BACKEND) else "front end"
        result = replace(result, stage=stage, error=tail)
    elif not result.fits:
        result = replace(result, stage="memory")
    return result


def dry_run(config: Optional[str], overrides: Sequence[str], chip: str, ranks: int = 1, standins=None,
            timeout: float = 3600, environ: Optional[Dict[str, str]] = None) -> DryRunResult:
    """Compile rank 0 of `ranks` of the training step for `chip` in a child process; the result parsed from it."""
    if chip not in CHIPS:
        raise ValueError(f"chip must be one of {sorted(CHIPS)}, got {chip!r}")
    env = child_environ(dict(os.environ if environ is None else environ), ranks, standins)
    with tempfile.TemporaryDirectory(prefix="vit_ms_dryrun_") as tmp:
        command = [sys.executable, "-m", "vit_ms.tools.dryrun", "--chip", chip,
                   *(["--config", config] if config else []), *[f"--set={o}" for o in overrides],
                   *[f"--set={o}" for o in dry_run_overrides(chip, ranks, Path(tmp))]]
        try:
            done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout)
            text = done.stdout + "\n" + done.stderr
        except subprocess.TimeoutExpired as err:
            text = f"{err.stdout or ''}\n{err.stderr or ''}\nthe compile did not finish in {timeout:.0f} s"
    return parse_output(text, DryRunResult(chip, ranks, compiled=False))


def standin_batches(cfg, plan):
    """`STEPS` steps of zeros in the shapes the training data has under `plan`: images (B, 3, S, S) float32, labels
    (B,) int32, or (B, classes) float32 soft labels with mixup/cutmix; (k, B, ...) when accumulating k steps."""
    import mindspore.dataset as ds  # the child only: importing this module stays free of MindSpore
    import numpy as np
    from ..data.batch_ops import build_mixup

    lead = (plan.accum_steps,) if plan.accum_steps > 1 else ()
    b, s, classes = plan.batch_size, plan.arch.image_size, plan.arch.num_classes
    images = np.zeros(lead + (b, 3, s, s), np.float32)
    if build_mixup(cfg.data, classes, cfg.loss.label_smoothing) is not None:
        labels = np.full(lead + (b, classes), 1.0 / classes, np.float32)
    else:
        labels = np.zeros(lead + (b,), np.int32)
    return ds.NumpySlicesDataset({"image": images[None].repeat(STEPS, 0), "label": labels[None].repeat(STEPS, 0)},
                                 shuffle=False)


def compile_in_this_process(cfg, chip: str) -> dict:
    """Build what a training run builds for `chip` and train `STEPS` steps (MS_SIMULATION_LEVEL must be set);
    the result: compiled or the error, the seconds, the plan, the level compiled, notes."""
    import mindspore as ms  # the child only
    from ..models import model_from_plan
    from ..plan import resolve_plan
    from ..runtime import setup_runtime
    from ..loader.opener import Student, open_model
    from ..train.metrics import mindspore_model
    from ..train.step import build_training
    from ..weights.hub import cache_dir_from_env

    ms.runtime.dispatch_threads_num(HOST_DISPATCH_THREADS)  # before the runtime starts: see HOST_DISPATCH_THREADS
    runtime = replace(setup_runtime(cfg), chip=CHIPS[chip])  # the simulated device reports no chip of its own
    plan = resolve_plan(cfg, runtime)
    found = {"compiled": False, "seconds": 0.0, "plan": plan.describe(), "notes": list(plan.notes),
             "jit_level": plan.jit_level or DEFAULT_JIT_LEVEL[chip]}
    if found["jit_level"] == "O2":
        why = "" if plan.jit_level else ", MindSpore's default on this chip"
        found["notes"].append(f"jit_level O2 (CANN's graph engine{why}) is unchecked: a dry run cannot judge it; "
                              f"compiled at {CHECKED_INSTEAD_OF_O2} instead")
        found["jit_level"] = CHECKED_INSTEAD_OF_O2
        ms.set_context(jit_config={"jit_level": CHECKED_INSTEAD_OF_O2})
    start = time.perf_counter()
    try:
        model = model_from_plan(plan)
        teacher = None  # a mindcv teacher keeps its initialisation: nothing is computed
        if cfg.distill.type != "none":
            teacher = open_model(cfg.distill.teacher, cache_dir_from_env(os.environ), teacher_of=Student(
                plan, None, cfg.distill.teacher_weights, mindcv_weights=False)).network
        trainer = mindspore_model(build_training(cfg, plan, model, 1, STEPS, teacher)[0], model, plan.world_size)
        data = standin_batches(cfg, plan)
        if plan.sink_mode:
            trainer.train(1, data, dataset_sink_mode=True, sink_size=STEPS)
        else:
            trainer.train(1, data, dataset_sink_mode=False)
        found["compiled"] = True
    except (RuntimeError, TypeError, ValueError) as err:  # MindSpore's compile errors: the result says them
        found["error"] = "\n".join(str(err).strip().splitlines()[:24])
    found["seconds"] = time.perf_counter() - start
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vit_ms.tools.dryrun",
                                     description="the dry run's child process; run python -m vit_ms.doctor --dry-run")
    parser.add_argument("--chip", choices=sorted(CHIPS), required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The child: `python -m vit_ms.tools.dryrun --chip 910b --config X.yaml --set ...`, started by `dry_run`
    with MindSpore's dry run on and its rank in RANK_ID of RANK_SIZE; prints one result line."""
    from ..config_loader import load_config  # after argument parsing

    parser = build_parser()
    args = parser.parse_args(argv)
    if os.environ.get("MS_SIMULATION_LEVEL") != "1":
        parser.error("run through vit_ms.tools.dryrun.dry_run (or python -m vit_ms.doctor --dry-run), which sets "
                     "MS_SIMULATION_LEVEL=1")
    found = compile_in_this_process(load_config(args.config, args.overrides), args.chip)
    print(RESULT_MARK + json.dumps(found), flush=True)
    return 0 if found["compiled"] else 1


if __name__ == "__main__":
    sys.exit(main())
