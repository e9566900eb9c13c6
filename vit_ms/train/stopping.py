"""Graceful stop: SIGTERM or SIGINT finish the current step, save last.ckpt, and the run exits 143 or 130.

    with StopSignals() as signals:                 # around the training (vit_ms.train.signals)
        ... the training loop reads signals.received after every step (vit_ms.train.loop)
    raise stopped_error(signum, stop_message(...)) # TrainingStopped: message and exit status

Schedulers (Slurm, Kubernetes) send SIGTERM some time before they kill; Ctrl-C sends SIGINT. The first signal
only sets a flag. The step in progress finishes; at its end the ranks agree (data-parallel: one all-gather of
each rank's flag, so every rank stops after the same step), rank 0 writes last.ckpt atomically in the middle
of the epoch, and training ends; `--resume auto` continues from exactly there. A stop that arrives during an
epoch's last step (or its evaluation) lets the epoch end as usual (eval, epoch checkpoint, last.ckpt) and stops
after it. With dataset sink mode the ranks look at the flag once per sunk chunk. A second signal ends the
process at once, without saving (a save in progress never leaves a broken file: saves are atomic).

Exit status 128 + the signal number: 143 after SIGTERM, 130 after SIGINT, the codes a shell reports for a
process those signals killed.

The signals are caught in `vit_ms.train.signals`, which entry scripts import before MindSpore.
"""
import signal
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import TrainingStopped
from .checkpoint import TrainState
from .signals import exit_status


def first_signal(rows: np.ndarray) -> Optional[int]:
    """The signal of the lowest rank that received one, from the gathered (world_size, 1) rows; None if none."""
    received = [int(v) for v in np.asarray(rows).reshape(-1) if int(v) != 0]
    return received[0] if received else None


def stop_message(signum: int, state: TrainState, steps_per_epoch: int, run_dir: Optional[Path]) -> str:
    """What a stopped run says: the signal, where it stopped, what it saved and how to continue."""
    where = (f"epoch {state.epoch + 1} step {state.step_in_epoch}/{steps_per_epoch}" if state.step_in_epoch
             else f"the end of epoch {state.epoch}")
    saved = f"saved '{run_dir / 'last.ckpt'}'" if run_dir is not None else "rank 0 saved last.ckpt"
    return (f"training stopped by {signal.Signals(signum).name} after global step {state.global_step} ({where}) "
            f"and {saved}; continue exactly from there by running the same command with --resume auto "
            f"(exit status {exit_status(signum)})")


def stopped_error(signum: int, message: str) -> TrainingStopped:
    return TrainingStopped(message, exit_status(signum))
