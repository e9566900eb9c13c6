"""The checks behind `python -m vit_ms.doctor`: what this machine is, then a tiny ViT trained on it end to end.

    facts = machine_checks(cfg, os.environ)          # MindSpore, device and chip, CANN/CUDA, launcher, host
    runs = run_checks(cfg, work_dir, log_file)       # plan, train, save, exact resume, eval, export

Each check is a `Check`: ok, warn (works, but worth a look), fail (with the fix) or skipped (an earlier check
failed). The tiny run takes the plan's real choices for the config given (device, amp level and dtype, attention,
sink mode, compile and memory settings) and only shrinks the model and the data: train.py trains it, in its own
process as a user runs it, and the project's checkpoint reader, evaluator and exporter check the results.
"""
import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Mapping, Optional

import mindspore as ms
import numpy as np

from ..chips import chip_label
from ..config import Config
from ..config_loader import load_config, save_config
from ..data.demo import write_synthetic_folder
from ..errors import UserError
from ..inference.evaluate import run_evaluation
from ..inference.to_mindir_onnx import export
from ..plan import RunPlan, resolve_plan
from ..environment import check_launch_environment
from ..runtime import MSRUN_VARS, RANK_TABLE_VARS, launched_distributed, prepare_run_dir, run_dir_of, setup_runtime
from ..train.checkpoint import epoch_checkpoints
from ..weights.checkpoint import network_params, read_checkpoint
from ..variants import resolve_architecture

TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"  # the command users train with, run as they run it
LAUNCH_VARS = (*MSRUN_VARS, "MS_SCHED_HOST", "MS_SCHED_PORT", *RANK_TABLE_VARS, "RANK_SIZE", "RANK_ID", "DEVICE_ID",
               "HCCL_CONNECT_TIMEOUT", "HCCL_EXEC_TIMEOUT")
MIN_CORES_PER_DEVICE = 4  # a decoding worker or two, the batch assembly and the Python process itself


class CheckFailed(Exception):
    """A result the tiny run should have had and did not."""


def expect(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


@contextlib.contextmanager
def output_to(log):
    """Python's and MindSpore's own (C++) stdout and stderr into the open file `log`, for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        log.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn", "fail" or "skipped"
    detail: str
    fix: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ---- the machine ----------------------------------------------------------------------------------------------


def mindspore_build() -> str:
    """'2.10.0 (CPU build, commit 2d550373)' from MindSpore's version and the commit file its wheel carries."""
    commit = ""
    try:
        text = (Path(ms.__file__).parent / ".commit_id").read_text(encoding="utf-8")
        commit = text.split("[sha1]:", 1)[1].split(",", 1)[0] if "[sha1]:" in text else ""
    except OSError:
        pass
    return f"{ms.__version__} ({ms.get_context('device_target')} build" + (f", commit {commit})" if commit else ")")


DEFAULT_CANN = "/usr/local/Ascend/ascend-toolkit/latest"  # where CANN's installer puts the toolkit
DEFAULT_CUDA = "/usr/local/cuda"


def cann_version(environ: Mapping[str, str]) -> str:
    """CANN's version from the toolkit's install record, '' when no toolkit is found."""
    bases = [environ.get("ASCEND_HOME_PATH"), environ.get("ASCEND_TOOLKIT_HOME"), DEFAULT_CANN]
    for base in filter(None, bases):
        for info in sorted(Path(base).glob("*/ascend_toolkit_install.info")) + [Path(base) / "version.cfg"]:
            try:
                for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
                    if line.startswith("version="):
                        return line.split("=", 1)[1].strip()
            except OSError:
                continue
    return ""


def cuda_version(environ: Mapping[str, str]) -> str:
    """The CUDA toolkit's version from its version.json (11.1+) or version.txt, '' when none is found."""
    for base in filter(None, (environ.get("CUDA_HOME"), environ.get("CUDA_PATH"), DEFAULT_CUDA)):
        try:
            return json.loads((Path(base) / "version.json").read_text(encoding="utf-8"))["cuda"]["version"]
        except (OSError, ValueError, KeyError):
            pass
        try:
            return (Path(base) / "version.txt").read_text(encoding="utf-8").split()[-1]
        except (OSError, IndexError):
            pass
    return ""


def devices_on_host(device_target: str) -> int:
    if device_target == "CPU":
        return 1
    try:
        return max(int(ms.hal.device_count(device_target)), 1)
    except (RuntimeError, ValueError):  # counted for the cores-per-device figure only
        return 1


def checkpoint_gb(cfg: Config) -> float:
    """About how large one training checkpoint of `cfg`'s model is: float32 weights and AdamW's two moments."""
    a = resolve_architecture(cfg.model)
    per_block = (4 + 2 * a.mlp_ratio) * a.embed_dim ** 2
    params = a.depth * per_block + a.patch_size ** 2 * a.in_channels * a.embed_dim + a.embed_dim * a.num_classes
    return params * 4 * 3 / 2 ** 30


def free_gb(path: Path) -> float:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 2 ** 30


def available_memory_gb() -> Optional[float]:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 2 ** 20
    except (OSError, StopIteration, ValueError):
        return None


def run_dir_check(cfg: Config) -> Check:
    """train.py's own check of the run directory (created and written at once), undone when it made the folder."""
    run_dir = run_dir_of(cfg)
    made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        prepare_run_dir(cfg)
    except UserError as err:
        return Check("run directory", "fail", str(err))
    for folder in made:  # deepest first: only the empty folders the probe made
        with contextlib.suppress(OSError):
            folder.rmdir()
    return Check("run directory", "ok", f"{run_dir} is writable")


def machine_checks(cfg: Config, environ: Mapping[str, str]) -> List[Check]:
    """Facts about this machine, each with a verdict where one is due."""
    target = ms.get_context("device_target") if cfg.train.device_target == "auto" else cfg.train.device_target
    checks = [Check("mindspore", "ok", mindspore_build())]
    toolkit = {"Ascend": ("CANN", cann_version(environ)), "GPU": ("CUDA", cuda_version(environ))}.get(target)
    if toolkit:
        name, version = toolkit
        checks.append(Check(name.lower(), "ok" if version else "warn", f"{name} {version}" if version else
                            f"{name} version not readable",
                            "" if version else f"source the {name} environment (set_env.sh / CUDA_HOME) so its "
                                               f"version can be read and matched to MindSpore {ms.__version__}"))
    present = {k: environ[k] for k in LAUNCH_VARS if k in environ}
    try:
        check_launch_environment(environ)  # what train.py's runtime refuses, in its words
        launched = launched_distributed(environ)
        checks.append(Check("launcher", "warn" if launched else "ok",
                            (f"launched for distributed training: {present}" if launched else
                             "single process" + (f" ({present})" if present else "")),
                            "run the doctor directly on each node (it checks one device), not under msrun or a "
                            "rank table script" if launched else ""))
    except UserError as err:
        checks.append(Check("launcher", "fail", str(err)))
    cores, devices = len(os.sched_getaffinity(0)), devices_on_host(target)
    per = cores / devices
    checks.append(Check("host cores", "ok" if per >= MIN_CORES_PER_DEVICE else "warn",
                        f"{cores} cores for {devices} device(s): {per:.1f} per device",
                        "" if per >= MIN_CORES_PER_DEVICE else f"fewer than {MIN_CORES_PER_DEVICE} cores per device "
                        f"can starve the input pipeline; lower data.num_parallel_workers or train on fewer devices"))
    checks.append(run_dir_check(cfg))
    out = Path(cfg.output_dir)
    need = checkpoint_gb(cfg) * (cfg.checkpoint.keep_last + 2)  # epochs kept, last.ckpt and best.ckpt
    free = free_gb(out)
    checks.append(Check("disk", "ok" if free >= need else "warn",
                        f"{free:.1f} GB free at {out}; this config's checkpoints need about {need:.2g} GB",
                        "" if free >= need else "free space there, set output_dir elsewhere, or lower "
                                                "checkpoint.keep_last"))
    memory = available_memory_gb()
    checks.append(Check("memory", "ok", f"{memory:.1f} GB available" if memory is not None else "not readable"))
    return checks


# ---- the tiny run ---------------------------------------------------------------------------------------------


TINY = ["model.name=vit_ti16", "model.num_classes=3", "model.image_size=32", "model.patch_size=8",
        "model.embed_dim=64", "model.depth=2", "model.num_heads=2", "model.mlp_ratio=2.0",  # head dim 32: fused fits
        "model.drop_rate=0", "model.attn_drop_rate=0", "model.drop_path_rate=0", "model.pretrained=",
        "model.representation_size=null", "model.global_pool=token", "model.fc_norm=false",
        # fixed images, no random augmentation: a resumed run sees exactly what an uninterrupted one does
        "data.generate=", "data.format=folder", "data.num_parallel_workers=1", "data.scale=[1.0, 1.0]",
        "data.ratio=[1.0, 1.0]", "data.hflip=0", "data.auto_augment=", "data.color_jitter=0", "data.re_prob=0",
        "data.mixup=0", "data.cutmix=0", "data.aug_repeats=1", "data.crop_pct=1.0", "data.index_cache_dir='off'",
        "train.epochs=2", "train.batch_size=4", "train.global_batch_size=0", "train.accum_steps=1",
        "train.steps_per_epoch=0", "train.log_interval=1", "train.deterministic=true", "train.ema=false",
        "train.tensorboard=false", "train.freeze_backbone=false", "train.compile_cache=false",
        "optim.lr=1e-3", "optim.min_lr=1e-5", "optim.warmup_epochs=0", "optim.lr_batch_size=0",
        "optim.layer_decay=1.0", "checkpoint.keep_last=2", "checkpoint.interval_epochs=1",
        "checkpoint.interval_steps=0", "eval.batch_size=0", "eval.interval_epochs=1", "distributed=false"]


def plan_choices(plan: RunPlan) -> List[str]:
    """The plan's decisions the tiny run must share, as overrides."""
    f = plan.formulation
    # the other layers' implementations follow the device and amp level, which the tiny run shares
    choices = [f"train.device_target={plan.device_target}", f"train.mode={plan.mode}", f"amp.level={plan.amp_level}",
               f"model.attention={f.attention}", f"train.sink_mode={'on' if plan.sink_mode else 'off'}",
               f"train.recompute={'blocks' if plan.recompute_blocks else 'none'}"]
    if plan.amp_level != "O0":
        choices += [f"amp.dtype={plan.amp_dtype}", f"amp.loss_scale={plan.loss_scale}", f"amp.norms={f.norms}"]
    return choices


def describe_plan(plan: RunPlan) -> str:
    return (f"{chip_label(plan.device_target, plan.chip)}: amp {plan.amp_level}"
            + (f" {plan.amp_dtype}" if plan.amp_level != "O0" else "")
            + f", loss scale {plan.loss_scale}, attention {plan.formulation.attention}, "
              f"sink {'on' if plan.sink_mode else 'off'}, {plan.mode} mode, jit level {plan.jit_level or 'default'}")


def _weights(path: Path) -> dict:
    return {k: v.asnumpy() for k, v in network_params(read_checkpoint(path)).items()
            if not k.startswith(("vit_ms_", "learning_rate", "global_step"))}


def run_checks(cfg_path: Optional[str], overrides: List[str], work_dir: Path, log_file: Path) -> List[Check]:
    """Device and plan for the config, then the tiny run: train, save, exact resume, eval, export."""
    checks: List[Check] = []
    state: dict = {}
    log = open(log_file, "a", encoding="utf-8")  # closed at the end: every step's logging handlers point at it

    def step(name: str, fix: str, body: Callable[[], str]) -> None:
        if checks and checks[-1].status in ("fail", "skipped"):
            checks.append(Check(name, "skipped", f"needs {checks[-1].name}"))
            return
        start = time.time()
        try:
            with output_to(log):
                detail = body()
            checks.append(Check(name, "ok", detail, seconds=round(time.time() - start, 1)))
        except (UserError, CheckFailed, RuntimeError, ValueError, TypeError, OSError) as err:
            message = " ".join(str(err).split()) or type(err).__name__
            if isinstance(err, UserError):  # its message already says what to do
                checks.append(Check(name, "fail", message, "", round(time.time() - start, 1)))
            else:
                checks.append(Check(name, "fail", message[:400], fix, round(time.time() - start, 1)))

    def device() -> str:
        state["cfg"] = load_config(cfg_path, overrides)
        runtime = setup_runtime(state["cfg"])
        return f"{chip_label(runtime.device_target, runtime.chip)}" + (f" ({runtime.device_name})"
                                                                       if runtime.device_name else "")

    def plan() -> str:
        state["plan"] = resolve_plan(state["cfg"], setup_runtime(state["cfg"]))
        data = write_synthetic_folder(work_dir / "data", num_classes=3, train_per_class=8, val_per_class=4,
                                      image_size=32, seed=0)
        tiny = [*overrides, *TINY, *plan_choices(state["plan"]), f"data.root={data}", f"output_dir={work_dir / 'runs'}"]
        state["config"] = work_dir / "tiny.yaml"
        save_config(load_config(cfg_path, tiny), state["config"])
        return describe_plan(state["plan"])

    def train_py(*args: str) -> None:
        """python train.py --config <the tiny config> ARGS, its output into the log; fails with its last words."""
        proc = subprocess.run([sys.executable, str(TRAIN_PY), "--config", str(state["config"]), *args],
                              capture_output=True, text=True)
        log.write(proc.stdout + proc.stderr)
        last = [line for line in proc.stderr.splitlines() if line.strip()][-3:]
        expect(proc.returncode == 0, f"train.py {' '.join(args)} exited with {proc.returncode}: {' '.join(last)}")

    def train() -> str:
        train_py("--set", "run_name=full")
        records = [json.loads(line) for line in (work_dir / "runs" / "full" / "metrics.jsonl").read_text().splitlines()]
        losses = [r["train_loss"] for r in records]
        expect(all(math.isfinite(x) for x in losses), f"train losses {losses} are not all finite")
        state["record"] = records[-1]
        return f"{records[-1]['step']} steps, train losses {', '.join(f'{x:.3f}' for x in losses)}, " \
               f"{records[-1].get('skipped_steps', 0)} skipped"

    def save() -> str:
        run_dir = work_dir / "runs" / "full"
        weights = _weights(run_dir / "last.ckpt")
        kinds = {str(v.dtype) for v in weights.values()}
        expect(kinds == {"float32"}, f"checkpoint parameters are {kinds}, not float32")
        epochs = epoch_checkpoints(run_dir)
        expect(len(epochs) == 2, f"{len(epochs)} epoch checkpoints written for 2 epochs")
        state["weights"], state["epoch_1"] = weights, epochs[0]
        return f"last.ckpt and {', '.join(p.name for p in epochs)}: {len(weights)} float32 tensors"

    def resume() -> str:
        train_py("--set", "run_name=resumed", "--resume", str(state["epoch_1"]))
        resumed = _weights(work_dir / "runs" / "resumed" / "last.ckpt")
        worst = max(float(np.abs(resumed[k] - v).max()) for k, v in state["weights"].items())
        tol = 1e-5 if state["plan"].amp_level == "O0" else 1e-3
        expect(worst <= tol, f"resumed weights differ from the uninterrupted run's by {worst:.3g} (> {tol:g})")
        return f"from {state['epoch_1'].name}: max |weight difference| {worst:.2g} (tolerance {tol:g})"

    def evaluate() -> str:
        report = run_evaluation(str(work_dir / "runs" / "full" / "last.ckpt"), out=str(work_dir / "eval"))
        want = state["record"]["val_loss"]
        expect(math.isclose(report.metrics["loss"], want, rel_tol=1e-3),
               f"eval loss {report.metrics['loss']:.5f} != the training run's {want:.5f}")
        return f"top-1 {report.metrics['top1']:.3f}, loss {report.metrics['loss']:.4f} (as in training)"

    def export_mindir() -> str:
        path, sidecar = export(str(work_dir / "runs" / "full" / "last.ckpt"), "mindir", 1,
                               str(work_dir / "tiny_vit"))
        return f"{path.name}, max |logit difference| {sidecar['parity_max_abs_diff']:.2g}"

    see_log = f"see {log_file} (add --debug for tracebacks)"
    try:
        step("device", f"MindSpore could not start the device; check the driver and that this MindSpore build is "
                       f"for the device ({mindspore_build()}); {see_log}", device)
        step("plan", f"the config cannot run here; {see_log}", plan)
        step("train", f"training the tiny ViT failed; if the log names FlashAttentionScore set "
                      f"model.attention=standard, if a loss is not finite try amp.level=O0 to tell the amp setting "
                      f"from the device; {see_log}", train)
        step("save", f"the checkpoint is missing or not float32; {see_log}", save)
        step("resume", f"resuming does not reproduce the run; report this with the log; {see_log}", resume)
        step("eval", f"eval.py's path disagrees with the evaluation during training; {see_log}", evaluate)
        step("export", f"export to MindIR failed; {see_log}", export_mindir)
    finally:
        logging.getLogger("vit_ms").handlers.clear()  # they write to `log`
        log.close()
    return checks
