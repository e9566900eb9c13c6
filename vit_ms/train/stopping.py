"""Graceful stop: SIGTERM or SIGINT finish the current step, save last.ckpt, and the run exits 143 or 130.

    with StopSignals() as signals:                 # around Model.train (vit_ms.train.signals)
        stop = GracefulStop(signals, checkpoints, world_size)
        model.train(..., callbacks=[..., checkpoints, stop])
    stop.raise_if_stopped()                        # TrainingStopped: message and exit status

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
import logging
import signal
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from mindspore.train import Callback

from ..errors import TrainingStopped
from .distributed import all_gather_rows
from .signals import StopSignals, exit_status

log = logging.getLogger("vit_ms")

Gather = Callable[[Sequence[int], int], np.ndarray]


def first_signal(rows: np.ndarray) -> Optional[int]:
    """The signal of the lowest rank that received one, from the gathered (world_size, 1) rows; None if none."""
    received = [int(v) for v in np.asarray(rows).reshape(-1) if int(v) != 0]
    return received[0] if received else None


class GracefulStop(Callback):
    """Checks the stop flag at step end (mid-epoch) and at epoch end; put it after `CheckpointAndMetrics`.

    `checkpoints` is the run's `CheckpointAndMetrics`: it writes last.ckpt and, once `stopped` is set, writes
    nothing more (Model.train still calls epoch end after a stop in the middle of an epoch).
    """

    def __init__(self, signals: StopSignals, checkpoints, world_size: int = 1, gather: Optional[Gather] = None):
        super().__init__()
        self.signals = signals
        self.checkpoints = checkpoints
        self.world_size = world_size
        self.gather = gather
        self.signum: Optional[int] = None  # the agreed signal once the run stopped
        self.message = ""

    def agreed_signal(self) -> Optional[int]:
        """This rank's signal, or with several ranks the lowest rank's (every rank must call this together)."""
        mine = self.signals.received or 0
        if self.world_size <= 1:
            return mine or None
        gather = self.gather
        if gather is None:
            gather = all_gather_rows
        return first_signal(gather([mine], self.world_size))

    def on_train_step_end(self, run_context):
        progress = self.checkpoints.progress
        if progress.state.step_in_epoch >= progress.steps_per_epoch or self.signum is not None:
            return  # the epoch's last step: its epoch end saves, then on_train_epoch_end stops
        signum = self.agreed_signal()
        if signum is not None:
            self.checkpoints.commit_pending()
            self.checkpoints.save("last.ckpt")
            self.stop(run_context, signum)

    def on_train_epoch_end(self, run_context):
        if self.signum is not None or self.checkpoints.progress.state.epoch >= self.checkpoints.total_epochs:
            return  # stopped mid-epoch (last.ckpt is written), or the run is complete: nothing left to stop
        signum = self.agreed_signal()
        if signum is not None:
            self.checkpoints.commit_pending()  # this epoch's saves (no eval ran to verify them): keep them
            self.stop(run_context, signum)

    def stop(self, run_context, signum: int) -> None:
        self.signum = signum
        self.checkpoints.stopped = True
        progress = self.checkpoints.progress
        st = progress.state
        where = (f"epoch {st.epoch + 1} step {st.step_in_epoch}/{progress.steps_per_epoch}" if st.step_in_epoch
                 else f"the end of epoch {st.epoch}")
        run_dir: Optional[Path] = self.checkpoints.run_dir
        saved = f"saved '{run_dir / 'last.ckpt'}'" if run_dir is not None else "rank 0 saved last.ckpt"
        self.message = (f"training stopped by {signal.Signals(signum).name} after global step {st.global_step} "
                        f"({where}) and {saved}; continue exactly from there by running the same command with "
                        f"--resume auto (exit status {exit_status(signum)})")
        log.warning(self.message)
        run_context.request_stop()

    def raise_if_stopped(self) -> None:
        if self.signum is not None:
            raise TrainingStopped(self.message, exit_status(self.signum))
