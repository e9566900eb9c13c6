"""Where a run executes: MindSpore context, device target and the data-parallel group.

`setup_runtime` is the one place that reads the environment (launcher variables, DEVICE_ID) and MindSpore's
context; `vit_ms.plan.resolve_plan` turns its `Runtime` and the config into the run plan everything else reads.
"""
import os
from dataclasses import dataclass
from typing import Mapping, Optional

import mindspore as ms
from mindspore.communication import get_group_size, get_rank, init

from .errors import ConfigError

# Variables set by the launchers we support: msrun (dynamic cluster) and Ascend rank-table scripts.
MSRUN_VARS = ("MS_WORKER_NUM", "MS_ROLE")
RANK_TABLE_VARS = ("RANK_TABLE_FILE",)


@dataclass(frozen=True)
class Runtime:
    device_target: str  # "CPU", "GPU" or "Ascend"
    rank: int = 0
    world_size: int = 1


def launched_distributed(environ: Mapping[str, str]) -> bool:
    """True when msrun started this process, or a rank-table script started it as one of several workers.

    Under msrun this holds even for --worker_num=1: msrun also runs this script as its scheduler process,
    which only becomes the scheduler (and exits) inside `init()`; without it, it would train as well.
    """
    if any(var in environ for var in MSRUN_VARS):
        return True
    if any(var in environ for var in RANK_TABLE_VARS):
        return int(environ.get("RANK_SIZE", "1")) > 1
    return False


def resolve_device_target(choice: str) -> str:
    """'auto' is the target this MindSpore build runs on (CPU for the PyPI wheel)."""
    return ms.get_context("device_target") if choice == "auto" else choice


def setup_runtime(cfg, environ: Optional[Mapping[str, str]] = None) -> Runtime:
    """Set MindSpore's context for `cfg` and join the data-parallel group when launched for it."""
    environ = os.environ if environ is None else environ
    device_target = resolve_device_target(cfg.train.device_target)
    mode = ms.GRAPH_MODE if cfg.train.mode == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode)
    if device_target == "CPU":
        if ms.get_context("device_target") != "CPU":  # a GPU/Ascend build asked to run on its CPU
            ms.set_device("CPU")
    else:  # rank-table launches give each process its device in DEVICE_ID
        ms.set_device(device_target, int(environ.get("DEVICE_ID", cfg.train.device_id)))
    ms.set_seed(cfg.train.seed)
    if cfg.train.deterministic:
        ms.set_deterministic(True)

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
    return Runtime(device_target, rank, world_size)
