"""Checkpoints that survive crashes: atomic writes, integrity checks, resume state, retention.

A training checkpoint holds every parameter of the train network (model weights, optimizer moments and
step, loss-scale state) plus `vit_ms_*` entries: epoch, step within the epoch, global step, best top-1.
Files are written as `.<name>.partial.ckpt` with a CRC, flushed, then renamed over the old file, so a crash
while saving never leaves a truncated `last.ckpt`.
"""
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import mindspore as ms

from .convert import fit
from .convert.sources import is_optimizer_state
from .errors import CheckpointError

log = logging.getLogger("vit_ms")



@dataclass
class TrainState:
    epoch: int = 0  # epochs completed when step_in_epoch is 0, else the epoch in progress
    step_in_epoch: int = 0
    global_step: int = 0
    best_top1: float = -1.0


def is_model_key(name: str) -> bool:
    """False for optimizer, loss-scale and resume-state entries of a training checkpoint."""
    return not is_optimizer_state(name)


def save_checkpoint(network: ms.nn.Cell, path: os.PathLike, state: TrainState, extra: Optional[dict] = None) -> None:
    """Write `network`'s parameters and `state` to `path` atomically (temp file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial.ckpt")
    append = {"vit_ms_epoch": state.epoch, "vit_ms_step_in_epoch": state.step_in_epoch,
              "vit_ms_global_step": state.global_step, "vit_ms_best_top1": float(state.best_top1)}
    append.update(extra or {})
    try:
        ms.save_checkpoint(network, str(tmp), append_dict=append, crc_check=True)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint '{path}': {err}. The previous checkpoint is unchanged; "
                              f"free disk space or choose another output_dir, then resume with --resume auto") from err


def read_checkpoint(path: os.PathLike) -> Dict[str, ms.Parameter]:
    """Load a checkpoint file into a dict, raising CheckpointError naming the file if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes): it was not written completely")
    try:
        return ms.load_checkpoint(str(path), crc_check=True)
    except (ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"checkpoint '{path}' is corrupt or truncated and cannot be read ({err}); "
                              f"use an earlier checkpoint of the run (or --resume auto)") from err


def train_state(params: Dict[str, ms.Parameter]) -> TrainState:
    """The resume state stored in a training checkpoint (zeros for a weights-only file)."""
    def value(key, default):
        return params[key].asnumpy().item() if key in params else default

    return TrainState(int(value("vit_ms_epoch", 0)), int(value("vit_ms_step_in_epoch", 0)),
                      int(value("vit_ms_global_step", 0)), float(value("vit_ms_best_top1", -1.0)))


def check_fit(model: ms.nn.Cell, params: Dict[str, ms.Parameter], source: str = "checkpoint") -> None:
    """Raise CheckpointError naming `source`, the missing/unexpected/mis-shaped keys and the option that fixes them."""
    try:
        fit.check_fit({p.name: tuple(p.shape) for p in model.get_parameters()}, params)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from None


def load_model_weights(model: ms.nn.Cell, path: os.PathLike) -> TrainState:
    """Load a checkpoint's model weights into `model` (optimizer state is ignored) after checking the fit."""
    params = read_checkpoint(path)
    check_fit(model, params, source=f"checkpoint '{path}'")
    ms.load_param_into_net(model, {k: v for k, v in params.items() if is_model_key(k)}, strict_load=True)
    return train_state(params)


def epoch_checkpoints(run_dir: Path) -> List[Path]:
    """Epoch checkpoints of a run, oldest first."""
    return sorted(run_dir.glob("epoch_*.ckpt"))


def prune_epoch_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` epoch checkpoints; last.ckpt and best.ckpt are never touched."""
    old = epoch_checkpoints(run_dir)
    for path in old[: max(len(old) - keep_last, 0)]:
        path.unlink(missing_ok=True)


def find_resume_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest checkpoint in `run_dir` that reads completely (`--resume auto`); None for a fresh run."""
    candidates = [run_dir / "last.ckpt", *reversed(epoch_checkpoints(run_dir))]
    candidates = sorted((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            read_checkpoint(path)
            return path
        except CheckpointError as err:
            log.warning("skipping unreadable checkpoint: %s", err)
    return None
