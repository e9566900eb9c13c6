"""Divergence caught before it is saved: a non-finite or exploding loss stops the run, and nothing after the
last sane step becomes last.ckpt, best.ckpt or an epoch checkpoint.

    detector = DivergenceDetector(factor=1e4)
    detector.check(loss)      # None while sane, else a sentence: non-finite, or > factor x the running median
    detector.record(loss)     # a sane training loss joins the window the median is taken over

A loss is "exploding" when it exceeds `train.divergence_factor` times the median of the last `WINDOW` sane
training losses (a median below `MEDIAN_FLOOR` counts as `MEDIAN_FLOOR`, so a model that fits its batches
almost perfectly does not make every ordinary loss look like an explosion); factor 0 turns that test off, a
non-finite loss always stops the run. One loss of history is enough: a factor of 1e4 is far beyond any step to
step change of a sane cross-entropy, and a run with lr 1e6 is diverged after its first update.

`DivergenceGuard` runs first at every step end, before anything of that step is saved. The loss of step k is
the first test of the weights step k - 1 wrote, so saves that no evaluation checked wait (`PendingSaves`)
until the next loss passed; an epoch's evaluation checks the validation loss the same way before that epoch's
checkpoints are written. Data-parallel ranks see different losses, so they agree (one all-gather) and stop
together.
"""
import logging
import math
from collections import deque
from typing import Callable, Optional, Sequence

import numpy as np
from mindspore.train import Callback

from ..errors import DivergenceError
from .callbacks import SinkStepCounter
from .checkpoint import find_resume_checkpoint
from .distributed import all_gather_rows
from .pending import PendingSaves

log = logging.getLogger("vit_ms")

WINDOW = 100  # recent sane training losses the median is taken over
MEDIAN_FLOOR = 0.01

Gather = Callable[[Sequence[int], int], np.ndarray]


class DivergenceDetector:
    def __init__(self, factor: float, window: int = WINDOW):
        self.factor = factor
        self.recent = deque(maxlen=window)

    def median(self) -> Optional[float]:
        return float(np.median(np.asarray(self.recent, np.float64))) if self.recent else None

    def limit(self) -> Optional[float]:
        """The largest sane loss now; None while the ratio test is off (factor 0, or no history yet)."""
        median = self.median()
        if self.factor <= 0 or median is None:
            return None
        return self.factor * max(median, MEDIAN_FLOOR)

    def check(self, loss: float, what: str = "the loss") -> Optional[str]:
        """None when `loss` is sane, else why it is not."""
        if not math.isfinite(loss):
            return f"{what} became {loss}"
        limit = self.limit()
        if limit is not None and loss > limit:
            return (f"{what} jumped to {loss:.6g}, over train.divergence_factor={self.factor:g} x the median "
                    f"{self.median():.6g} of the last {len(self.recent)} training losses")
        return None

    def record(self, loss: float) -> None:
        self.recent.append(float(loss))


class DivergenceGuard(Callback):
    """Checks each step's loss (put it first among the callbacks) and wraps the epoch evaluation.

    It installs `PendingSaves` into `checkpoints` (the run's `CheckpointAndMetrics`) and commits them after
    each sane step; on divergence it discards them, stops all saving and raises `DivergenceError` naming the
    step, the loss and the checkpoint that is safe to resume from.
    """

    def __init__(self, detector: DivergenceDetector, checkpoints, dynamic_loss_scale: bool, world_size: int = 1,
                 gather: Optional[Gather] = None):
        super().__init__()
        self.detector = detector
        self.checkpoints = checkpoints
        checkpoints.pending = PendingSaves()
        self.dynamic_loss_scale = dynamic_loss_scale
        self.world_size = world_size
        self.gather = gather
        self.counter = SinkStepCounter()

    def on_train_begin(self, run_context):
        self.counter.start(run_context)

    def agreed(self, reason: Optional[str]) -> Optional[str]:
        """With several ranks: every rank learns whether any rank saw divergence (all must call this together)."""
        if self.world_size <= 1:
            return reason
        gather = self.gather
        if gather is None:
            gather = all_gather_rows
        rows = np.asarray(gather([int(reason is not None)], self.world_size)).reshape(-1)
        if reason is None and rows.any():
            return f"rank {int(np.argmax(rows))} saw its loss diverge"
        return reason

    def on_train_step_end(self, run_context):
        cb_params = run_context.original_args()
        loss_t, overflow_t, _ = cb_params.net_outputs
        loss, overflow = float(loss_t.asnumpy()), bool(overflow_t.asnumpy())
        st = self.checkpoints.progress.state
        steps = self.counter.steps(cb_params)
        if overflow and self.dynamic_loss_scale:
            return  # a skipped step (TrainProgress counts it): the weights did not change, nothing was tested
        reason = self.detector.check(loss)
        if reason is None and overflow:
            reason = f"the gradients overflowed (loss {loss}) without a dynamic loss scale"
        reason = self.agreed(reason)
        if reason is not None:
            self.fail(f"at global step {st.global_step + steps} (epoch {st.epoch + 1}, step "
                      f"{st.step_in_epoch + steps})", reason)
        self.detector.record(loss)
        self.checkpoints.commit_pending()

    def checked(self, evaluate: Callable[[], dict]) -> Callable[[], dict]:
        """`evaluate` whose validation loss must pass too before the epoch's checkpoints are written."""
        def run() -> dict:
            metrics = evaluate()
            reason = self.agreed(self.detector.check(metrics["loss"], "the validation loss"))
            if reason is not None:
                st = self.checkpoints.progress.state
                self.fail(f"in the evaluation after epoch {st.epoch} (global step {st.global_step})", reason)
            return metrics
        return run

    def fail(self, where: str, reason: str) -> None:
        ckpts = self.checkpoints
        if ckpts.pending is not None:
            ckpts.pending.discard()
        ckpts.stopped = True
        path = find_resume_checkpoint(ckpts.run_dir) if ckpts.run_dir is not None else None
        if ckpts.run_dir is None:
            safe, then = "rank 0's message names the checkpoint that is safe to resume from", "resume"
        elif path is not None:
            safe, then = f"the newest checkpoint, safe to resume from, is '{path}'", "resume with --resume auto"
        else:
            safe, then = f"no checkpoint had been saved in '{ckpts.run_dir}' before it", "start again"
        message = (f"training diverged {where}: {reason}. Nothing from that point on was saved; {safe}. Lower "
                   f"optim.lr (or raise optim.warmup_epochs), set optim.clip_grad_norm, or use "
                   f"amp.loss_scale=dynamic, then {then} (train.divergence_factor={self.detector.factor:g} sets how "
                   f"far above the running median a loss may go; 0: only a non-finite loss stops the run)")
        log.error(message)
        raise DivergenceError(message)
