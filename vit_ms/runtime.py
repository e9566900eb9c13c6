"""Where a run executes: MindSpore context, device target and chip, compile and memory settings, and the
data-parallel group.

`setup_runtime` is the one place that reads the environment (launcher variables and DEVICE_ID, checked by
`vit_ms.environment`) and MindSpore's context; `vit_ms.plan.resolve_plan` turns its `Runtime` and the config
into the run plan everything else reads.
What MindSpore must know before the device starts (memory pool, compile level, compile cache) is applied here,
from the config as `compile_settings` reads it; the plan records the same settings.
"""
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import mindspore as ms
from mindspore._c_expression import MSContext
from mindspore.communication import get_group_size, get_rank, init

from .environment import check_launch_environment, launch_int
from .errors import ConfigError, UserError
from .fs import prove_writable

log = logging.getLogger("vit_ms")

# Variables set by the launchers we support: msrun (dynamic cluster) and Ascend rank-table scripts.
MSRUN_VARS = ("MS_WORKER_NUM", "MS_ROLE")
RANK_TABLE_VARS = ("RANK_TABLE_FILE",)


@dataclass(frozen=True)
class Runtime:
    device_target: str  # "CPU", "GPU" or "Ascend"
    rank: int = 0
    world_size: int = 1
    chip: str = ""  # Ascend: MindSpore's SoC version ("ascend910b"); GPU: "sm_90"; CPU: "" (see vit_ms.chips)
    device_name: str = ""  # "Ascend910B3", "NVIDIA H100 80GB HBM3"; "" where MindSpore cannot tell


@dataclass(frozen=True)
class CompileSettings:
    """Settings MindSpore reads before it builds a graph or starts the device, as the config gives them."""
    jit_level: str  # "" (MindSpore's default), "O0", "O1" or "O2"
    compile_cache_dir: str  # "" (off) or the folder MindSpore keeps compiled graphs in
    memory: Dict[str, str]  # keyword arguments of mindspore.runtime.set_memory that the config sets


def run_dir_of(cfg) -> Path:
    """Where a run writes everything: <output_dir>/<run_name>."""
    return Path(cfg.output_dir) / (cfg.run_name or "run")


def prepare_run_dir(cfg, rank: int = 0) -> Path:
    """Create the run directory and prove it is writable before any training starts (the doctor asks the same)."""
    run_dir = run_dir_of(cfg)
    try:
        prove_writable(run_dir, f".write_test_rank{rank}")  # per rank: all ranks probe the same directory at once
    except OSError as err:
        raise UserError(f"cannot write to the run directory '{run_dir}' ({err.strerror}); choose a writable "
                        f"output_dir, e.g. --set output_dir=/tmp/runs") from err
    return run_dir


def compile_settings(cfg, device_target: str) -> CompileSettings:
    """The config's compile level, compile cache and memory pool; refuses a compile level the target lacks."""
    jit_level = "" if cfg.train.jit_level == "auto" else cfg.train.jit_level
    if jit_level == "O2" and (device_target != "Ascend" or cfg.train.mode != "graph"):
        raise ConfigError(f"train.jit_level=O2 (whole-graph sink through CANN's graph engine) runs on Ascend in graph "
                          f"mode only; this run is {device_target} in {cfg.train.mode} mode: use train.jit_level=O0, "
                          f"O1 or auto")
    cache = str(run_dir_of(cfg) / "compile_cache") if cfg.train.compile_cache else ""
    mem = cfg.memory
    memory = {key: getattr(mem, key) for key in ("init_size", "increase_size", "max_size", "huge_page_reserve_size")
              if getattr(mem, key)}
    if mem.optimize_level != "auto":
        memory["optimize_level"] = mem.optimize_level
    return CompileSettings(jit_level, cache, memory)


_memory_applied: Dict[str, str] = {}  # MindSpore takes set_memory once per process
_once = {"deterministic": False}


def apply_compile_settings(settings: CompileSettings, environ=None) -> None:
    """Hand the settings to MindSpore: before the device starts (memory) and before any graph is built."""
    environ = os.environ if environ is None else environ
    if settings.memory and settings.memory != _memory_applied:
        if _memory_applied:
            raise ConfigError(f"memory.* was already set to {_memory_applied} in this process and MindSpore takes "
                              f"the memory pool's settings once; start a new process for {settings.memory}")
        ms.runtime.set_memory(**settings.memory)
        _memory_applied.update(settings.memory)
    if settings.jit_level:
        ms.set_context(jit_config={"jit_level": settings.jit_level})


def graph_fingerprint(config: dict, plan: dict, steps_per_epoch: int, num_classes: int, teacher=None) -> dict:
    """Everything that shapes a run's graphs: the resolved config and plan (notes left out), the steps per epoch,
    the class count and, when distilling, the teacher's parameter shapes and types (its architecture, whatever
    file or name it came from: a teacher of another size copied onto the same path changes them)."""
    return {"config": config, "plan": {**plan, "notes": []}, "steps_per_epoch": steps_per_epoch,
            "num_classes": num_classes,
            "teacher": None if teacher is None else sorted((p.name, tuple(p.shape), str(p.dtype))
                                                           for p in teacher.get_parameters())}


def use_compile_cache(base_dir: str, fingerprint: dict, environ=None) -> Optional[Path]:
    """Turn on MindSpore's compile cache in a folder of `base_dir` named by a digest of `fingerprint`; returns it,
    or None (with a warning: the run compiles uncached) when that folder cannot be written.

    MindSpore 2.10 checks that the Python sources are unchanged but not the shapes of the parameters: a graph
    cached for 3 learning rates (1 epoch of 3 steps) was loaded for 6 and failed in its Gather. So the cache is
    kept per fingerprint (`graph_fingerprint`): a run relaunched or resumed with the same settings finds its
    graphs, any other gets a folder of its own. Set before the first graph is built.
    """
    environ = os.environ if environ is None else environ
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]
    folder = Path(base_dir) / digest
    try:
        prove_writable(folder)
    except OSError as err:
        log.warning("compile cache: cannot write %s (%s); this run compiles its graphs without the cache", folder,
                    err.strerror or err)
        for name in ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"):  # an earlier run's in this process
            environ.pop(name, None)
        return None
    environ["MS_COMPILER_CACHE_ENABLE"] = "1"  # read at each graph build (set_context's are deprecated in 2.10)
    environ["MS_COMPILER_CACHE_PATH"] = str(folder)
    log.info("compile cache: %s", folder)
    return folder


def read_chip(device_target: str, device_id: int) -> Tuple[str, str]:
    """(chip, device name) as MindSpore reports them: the Ascend SoC version or the GPU's compute capability."""
    if device_target == "Ascend":
        # MindSpore's own query (mindspore.train.Model checks 'ascend910' through it); it asks CANN once per process
        return MSContext.get_instance().get_ascend_soc_version(), _device_name(device_id, device_target)
    if device_target == "GPU":
        major, minor = ms.hal.get_device_capability(device_id, "GPU")
        return f"sm_{major}{minor}", _device_name(device_id, device_target)
    return "", ""


def _device_name(device_id: int, device_target: str) -> str:
    try:
        return str(ms.hal.get_device_name(device_id, device_target))
    except (RuntimeError, ValueError):  # the name is for reports only; the chip above decides
        return ""


def launched_distributed(environ: Mapping[str, str]) -> bool:
    """True when msrun started this process, or a rank-table script started it as one of several workers.

    Under msrun this holds even for --worker_num=1: msrun also runs this script as its scheduler process,
    which only becomes the scheduler (and exits) inside `init()`; without it, it would train as well.
    """
    if any(var in environ for var in MSRUN_VARS):
        return True
    if any(var in environ for var in RANK_TABLE_VARS):
        return launch_int(environ, "RANK_SIZE", 1) > 1
    return False


def resolve_device_target(choice: str) -> str:
    """'auto' is the target this MindSpore build runs on (CPU for the PyPI wheel)."""
    return ms.get_context("device_target") if choice == "auto" else choice


def setup_runtime(cfg, environ: Optional[Mapping[str, str]] = None) -> Runtime:
    """Set MindSpore's context for `cfg` and join the data-parallel group when launched for it."""
    environ = os.environ if environ is None else environ
    check_launch_environment(environ)  # a malformed DEVICE_ID or RANK_SIZE: one paragraph, before MindSpore uses it
    device_target = resolve_device_target(cfg.train.device_target)
    settings = compile_settings(cfg, device_target)
    mode = ms.GRAPH_MODE if cfg.train.mode == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode)
    device_id = launch_int(environ, "DEVICE_ID", cfg.train.device_id)  # rank-table launches set it per process
    if device_target == "CPU":
        if ms.get_context("device_target") != "CPU":  # a GPU/Ascend build asked to run on its CPU
            ms.set_device("CPU")
    else:
        ms.set_device(device_target, device_id)
    apply_compile_settings(settings, environ)
    ms.set_seed(cfg.train.seed)
    if cfg.train.deterministic and not _once["deterministic"]:  # MindSpore takes it once per process
        ms.set_deterministic(True)
        _once["deterministic"] = True

    distributed = launched_distributed(environ) if cfg.distributed == "auto" else bool(cfg.distributed)
    if not distributed and any(var in environ for var in MSRUN_VARS):
        raise ConfigError("distributed=false, but msrun started this process (MS_ROLE is set): every process "
                          "msrun starts must join its cluster. Leave distributed at 'auto', or run train.py "
                          "directly for a single device")
    rank, world_size = 0, 1
    if distributed:
        init()  # msrun's scheduler process serves the cluster in here and exits when the workers are done
        rank, world_size = get_rank(), get_group_size()
        ms.reset_auto_parallel_context()
        if world_size > 1:
            ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                         device_num=world_size)
    return Runtime(device_target, rank, world_size, *read_chip(device_target, device_id))
