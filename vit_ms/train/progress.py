"""Progress of a training run: losses and speed of the epoch, progress lines, the epoch's summary.

    progress = Progress(state, steps_per_epoch=1251, global_batch=1024, lrs=lrs, total_epochs=300)
    progress.add(steps=1, loss=2.31)          # after state.global_step / step_in_epoch were advanced
    progress.log_line(loss=2.31)              # epoch 3 step 100/1251  loss 2.3100  lr ...  img/s  eta ...
    progress.epoch_summary()                  # {"train_loss", "epoch_seconds", "images_per_sec", ...}

It reads the run's `TrainState` (the training loop advances it) and never changes it. With dataset sink mode
`add` covers a whole sunk chunk of steps, whose last loss stands for the chunk.
"""
import logging
import time
from typing import List, Optional

import numpy as np

from .checkpoint import TrainState

log = logging.getLogger("vit_ms")


class Progress:
    def __init__(self, state: TrainState, steps_per_epoch: int, global_batch: int, lrs: List[float],
                 total_epochs: int = 0):
        self.state = state
        self.steps_per_epoch = steps_per_epoch
        self.global_batch = global_batch
        self.lrs = lrs
        self.total_epochs = total_epochs  # > 0: progress lines also say how long until the end of the run
        self.skipped_steps = 0  # steps the dynamic loss scale skipped in this run (all epochs)
        self.start_epoch()

    def start_epoch(self) -> None:
        self.losses: List[float] = []
        self.epoch_steps = 0
        self.epoch_start = self.window_start = time.time()
        self.window_steps = 0

    def lr(self, step: int) -> float:
        """The lr table's value at optimizer step `step` (the last value past its end)."""
        return self.lrs[min(max(step, 0), len(self.lrs) - 1)]

    def add(self, steps: int, loss: Optional[float], skipped: int = 0) -> None:
        """`steps` more steps, the last with `loss` (None: that step was skipped, its loss measures nothing the
        run keeps); `skipped` of them left the weights unchanged (overflow)."""
        self.skipped_steps += skipped
        if loss is not None:
            self.losses.append(loss)
        self.window_steps += steps
        self.epoch_steps += steps

    def log_line(self, loss: float) -> None:
        """The progress line at the current step: speed since the previous line, epoch and run eta."""
        st = self.state
        now = time.time()
        ips = self.window_steps * self.global_batch / max(now - self.window_start, 1e-9)
        eta = (self.steps_per_epoch - st.step_in_epoch) * self.global_batch / max(ips, 1e-9)
        log.info("epoch %d step %d/%d  loss %.4f  lr %.3e  %.1f img/s  eta %ds%s", st.epoch + 1, st.step_in_epoch,
                 self.steps_per_epoch, loss, self.lr(st.global_step - 1), ips, eta, self.run_eta(ips))
        self.window_start, self.window_steps = now, 0

    def run_eta(self, images_per_sec: float) -> str:
        """'  run eta H:MM:SS': the steps left in the whole run at the current rate (evaluation not counted)."""
        if self.total_epochs <= 0:
            return ""
        st = self.state
        left = (self.total_epochs - st.epoch) * self.steps_per_epoch - st.step_in_epoch  # optimizer steps
        seconds = int(round(max(left, 0) * self.global_batch / max(images_per_sec, 1e-9)))
        return f"  run eta {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def epoch_summary(self) -> dict:
        seconds = time.time() - self.epoch_start
        return {"train_loss": float(np.mean(self.losses)) if self.losses else float("nan"),
                "epoch_seconds": round(seconds, 3),
                "images_per_sec": round(self.epoch_steps * self.global_batch / max(seconds, 1e-9), 2),
                "skipped_steps": self.skipped_steps}
