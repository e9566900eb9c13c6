"""Checkpoints that survive crashes and describe themselves: atomic writes, integrity checks, resume state.

A training checkpoint holds every parameter of the train network (model weights, optimizer moments and step,
loss-scale state), the resume state (`vit_ms_epoch`, `vit_ms_step_in_epoch`, `vit_ms_global_step`,
`vit_ms_best_top1`, `vit_ms_best_weights`: "raw" or "ema", `vit_ms_skipped_steps`) and what it takes to
rebuild its model without any other file: the resolved config, the run plan and the class names, as JSON
strings (`vit_ms_config`, `vit_ms_plan`, `vit_ms_classes`; `read_meta`).
Files are written as `.<name>.partial.ckpt` with a CRC, flushed, then renamed over the old file, so a crash
while saving never leaves a truncated `last.ckpt`; a start removes partial files a crash left behind.
"""
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import mindspore as ms

from ..errors import CheckpointError
from ..weights.fit import check_fit as check_state_fit
from ..weights.sources import is_optimizer_state
from .losses import TEACHER_PREFIX

log = logging.getLogger("vit_ms")

META_KEYS = {"config": "vit_ms_config", "plan": "vit_ms_plan", "class_names": "vit_ms_classes"}
PARTIAL_SUFFIX = ".partial.ckpt"


@dataclass
class TrainState:
    """Every counter of a run, owned by the training loop (`vit_ms.train.loop`); all but `closed` are saved."""
    epoch: int = 0  # epochs completed when step_in_epoch is 0, else the epoch in progress
    step_in_epoch: int = 0
    global_step: int = 0  # train steps run, one per global batch, skipped ones included; never goes back
    best_top1: float = -1.0
    best_weights: str = "raw"  # which weights scored best_top1: "raw" or "ema" (train.ema)
    skipped_steps: int = 0  # of global_step, the steps whose update an overflow skipped
    closed: bool = False  # a graceful stop or a divergence: nothing more is saved or recorded

    @property
    def position(self) -> tuple:
        """(epoch, step in epoch) of training done: what --resume auto compares."""
        return self.epoch, self.step_in_epoch


@dataclass
class CheckpointMeta:
    """What a checkpoint says about its run; each is None in files written before it was recorded."""
    config: Optional[dict] = None  # the resolved config (vit_ms.config.config_to_dict)
    plan: Optional[dict] = None  # RunPlan.to_dict()
    class_names: Optional[List[str]] = None

    def entries(self) -> Dict[str, str]:
        """The `append_dict` entries of these values (JSON strings)."""
        return {key: json.dumps(getattr(self, field)) for field, key in META_KEYS.items()
                if getattr(self, field) is not None}


def is_model_key(name: str) -> bool:
    """False for optimizer, loss-scale, resume-state and metadata entries of a training checkpoint."""
    return not is_optimizer_state(name)


def save_checkpoint(network: ms.nn.Cell, path: os.PathLike, state: TrainState,
                    meta: Optional[CheckpointMeta] = None) -> None:
    """Write `network`'s parameters, `state` and `meta` to `path` atomically (temp file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}{PARTIAL_SUFFIX}")
    append = {"vit_ms_epoch": state.epoch, "vit_ms_step_in_epoch": state.step_in_epoch,
              "vit_ms_global_step": state.global_step, "vit_ms_best_top1": float(state.best_top1),
              "vit_ms_best_weights": state.best_weights, "vit_ms_skipped_steps": state.skipped_steps,
              **(meta.entries() if meta is not None else {})}
    try:
        ms.save_checkpoint(network, str(tmp), append_dict=append, crc_check=True,
                           choice_func=lambda name: not name.startswith(TEACHER_PREFIX))  # a distill teacher's
        # weights are its own file's, not the run's
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint '{path}': {err}. The previous checkpoint is unchanged; "
                              f"free disk space or choose another output_dir, then resume with --resume auto") from err


def remove_partial_files(run_dir: Path) -> List[Path]:
    """Delete `.*.partial.ckpt` files an interrupted save left in `run_dir`; returns what was removed."""
    removed = sorted(run_dir.glob(f".*{PARTIAL_SUFFIX}"))
    for path in removed:
        path.unlink(missing_ok=True)
        log.warning("removed '%s', left by a save that was interrupted", path)
    return removed


def read_checkpoint(path: os.PathLike) -> Dict[str, object]:
    """Load a checkpoint file into a dict, raising CheckpointError naming the file if it is missing or corrupt."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a directory; give a .ckpt file inside it, e.g. "
                              f"'{path / 'last.ckpt'}' (or --resume auto with the run's output_dir)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if path.suffix.lower() in (".mindir", ".onnx"):
        raise CheckpointError(f"'{path}' is an exported {path.suffix[1:].upper()} file, not a training checkpoint: "
                              f"it holds no optimizer state and cannot be resumed or fine-tuned from. Give the .ckpt "
                              f"it was exported from (infer.py --model runs it)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes): it was not written completely")
    try:
        return ms.load_checkpoint(str(path), crc_check=True)
    except (ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"checkpoint '{path}' is corrupt or truncated and cannot be read ({err}); "
                              f"use an earlier checkpoint of the run (or --resume auto)") from err


def train_state(params: Dict[str, object]) -> TrainState:
    """The resume state stored in a training checkpoint (zeros for a weights-only file)."""
    def value(key, default):
        return params[key].asnumpy().item() if key in params else default

    best_weights = params.get("vit_ms_best_weights")
    return TrainState(int(value("vit_ms_epoch", 0)), int(value("vit_ms_step_in_epoch", 0)),
                      int(value("vit_ms_global_step", 0)), float(value("vit_ms_best_top1", -1.0)),
                      best_weights if isinstance(best_weights, str) else "raw",
                      int(value("vit_ms_skipped_steps", 0)))


def read_meta(params: Dict[str, object]) -> CheckpointMeta:
    """The config, plan and class names a checkpoint records (None for what it lacks)."""
    values = {}
    for field, key in META_KEYS.items():
        raw = params.get(key)
        values[field] = json.loads(raw) if isinstance(raw, str) else None
    return CheckpointMeta(**values)


def model_weights(params: Dict[str, object]) -> Dict[str, object]:
    """The model parameters of a checkpoint dict (no optimizer, resume or metadata entries)."""
    return {k: v for k, v in params.items() if is_model_key(k) and not isinstance(v, str)}


def network_params(params: Dict[str, object]) -> Dict[str, object]:
    """Every parameter entry of a checkpoint dict (model and optimizer), without the metadata strings."""
    return {k: v for k, v in params.items() if not isinstance(v, str)}


def check_fit(model: ms.nn.Cell, params: Dict[str, object], source: str = "checkpoint") -> None:
    """Raise CheckpointError naming `source`, the missing/unexpected/mis-shaped keys and the option that fixes them."""
    try:
        check_state_fit({p.name: tuple(p.shape) for p in model.get_parameters()}, network_params(params))
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from None


def load_model_weights(model: ms.nn.Cell, path: os.PathLike) -> TrainState:
    """Load a checkpoint's model weights into `model` (optimizer state is ignored) after checking the fit."""
    params = read_checkpoint(path)
    check_fit(model, params, source=f"checkpoint '{path}'")
    ms.load_param_into_net(model, model_weights(params), strict_load=True)
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
    """The checkpoint of `run_dir` that records the most training (`--resume auto`); None for a fresh run.

    Judged by the (epoch, step) each file records, never by file times (a copied or restored run directory
    has fresh ones); ties go to last.ckpt. Unreadable files are skipped with a warning.
    """
    found = []
    for rank, path in enumerate([run_dir / "last.ckpt", *reversed(epoch_checkpoints(run_dir))]):
        if not path.is_file():
            continue
        try:
            state = train_state(read_checkpoint(path))
        except CheckpointError as err:
            log.warning("skipping unreadable checkpoint: %s", err)
            continue
        found.append((state.position, -rank, path))
    if not found:
        return None
    position, _, path = max(found)
    log.info("resume auto: %s records epoch %d step %d, the most training among %d readable checkpoint(s)",
             path, position[0], position[1], len(found))
    return path
