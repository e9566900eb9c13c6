"""Checkpoints that survive crashes: atomic writes and the resume state.

A training checkpoint holds every parameter of the train network (model weights, optimizer moments and step,
loss-scale state), the resume state (`vit_ms_epoch`, `vit_ms_step_in_epoch`, `vit_ms_global_step`,
`vit_ms_best_top1`, `vit_ms_best_weights`: "raw" or "ema", `vit_ms_skipped_steps`) and the run's metadata
(`CheckpointMeta`: config, plan, class names, trained heads). Reading checkpoints, their metadata and the
raw/EMA choice is vit_ms.weights.checkpoint; this module writes them and finds where a run resumes.
Files are written as `.<name>.partial.ckpt` with a CRC, flushed, then renamed over the old file, so a crash
while saving never leaves a truncated `last.ckpt`; a start removes partial and temp files a crash left behind.
"""
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import mindspore as ms

from ..errors import CheckpointError
from ..fs import TEMP_GLOB
from ..weights.checkpoint import (BEST_WEIGHTS_KEY, TEACHER_PREFIX, CheckpointMeta, best_weights, check_fit,
                                  model_weights, read_checkpoint, recorded)

log = logging.getLogger("vit_ms")

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


def save_checkpoint(network: ms.nn.Cell, path: os.PathLike, state: TrainState,
                    meta: Optional[CheckpointMeta] = None) -> None:
    """Write `network`'s parameters, `state` and `meta` to `path` atomically (temp file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}{PARTIAL_SUFFIX}")
    append = {"vit_ms_epoch": state.epoch, "vit_ms_step_in_epoch": state.step_in_epoch,
              "vit_ms_global_step": state.global_step, "vit_ms_best_top1": float(state.best_top1),
              BEST_WEIGHTS_KEY: state.best_weights, "vit_ms_skipped_steps": state.skipped_steps,
              **(meta.entries() if meta is not None else {})}
    try:
        ms.save_checkpoint(network, str(tmp), append_dict=append, crc_check=True,
                           choice_func=lambda name: not name.startswith(TEACHER_PREFIX))  # a distill teacher's
        # weights are its own file's, not the run's
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as err:
        for partial in (tmp, tmp.with_suffix(".tmp")):  # ours, and MindSpore's own temp (.<stem>.partial.tmp)
            partial.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint '{path}': {err}. The previous checkpoint is unchanged; "
                              f"free disk space or choose another output_dir, then resume with --resume auto") from err


def remove_partial_files(run_dir: Path) -> List[Path]:
    """Delete what an interrupted save left in `run_dir`: our `.<name>.partial.ckpt`, MindSpore's own
    `.<name>.partial.tmp` and `atomic_writer`'s `.<name>.tmp` (vit_ms.fs.TEMP_GLOB); returns what was removed."""
    removed = sorted(p for pattern in (f".*{PARTIAL_SUFFIX}", TEMP_GLOB) for p in run_dir.glob(pattern) if p.is_file())
    for path in removed:
        path.unlink(missing_ok=True)
        log.warning("removed '%s', left by a save that was interrupted", path)
    return removed


def train_state(params: Dict[str, object]) -> TrainState:
    """The resume state stored in a training checkpoint (zeros for a weights-only file)."""
    return TrainState(epoch=int(recorded(params, "vit_ms_epoch", 0)),
                      step_in_epoch=int(recorded(params, "vit_ms_step_in_epoch", 0)),
                      global_step=int(recorded(params, "vit_ms_global_step", 0)),
                      best_top1=float(recorded(params, "vit_ms_best_top1", -1.0)), best_weights=best_weights(params),
                      skipped_steps=int(recorded(params, "vit_ms_skipped_steps", 0)))


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
