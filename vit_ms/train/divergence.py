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

The training loop (`vit_ms.train.loop`) checks every step's loss before anything of that step is saved. The
loss of step k is the first test of the weights step k - 1 wrote, so saves that no evaluation checked wait
(`vit_ms.train.pending`) until the next loss passed; an epoch's evaluation checks the validation loss the same
way before that epoch's checkpoints are written. A step that overflowed without a dynamic loss scale (its
update was skipped) also stops the run. Data-parallel ranks see different losses, so they agree (the loop's
one all-gather a step) and stop together.
"""
import logging
import math
from collections import deque
from pathlib import Path
from typing import Optional

import numpy as np

from .checkpoint import find_resume_checkpoint

log = logging.getLogger("vit_ms")

WINDOW = 100  # recent sane training losses the median is taken over
MEDIAN_FLOOR = 0.01


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


def divergence_message(where: str, reason: str, factor: float, run_dir: Optional[Path]) -> str:
    """The one paragraph a diverged run ends with: where, why, the checkpoint safe to resume from, what to do."""
    path = find_resume_checkpoint(run_dir) if run_dir is not None else None
    if run_dir is None:
        safe, then = "rank 0's message names the checkpoint that is safe to resume from", "resume"
    elif path is not None:
        safe, then = f"the newest checkpoint, safe to resume from, is '{path}'", "resume with --resume auto"
    else:
        safe, then = f"no checkpoint had been saved in '{run_dir}' before it", "start again"
    return (f"training diverged {where}: {reason}. Nothing from that point on was saved; {safe}. Lower "
            f"optim.lr (or raise optim.warmup_epochs), set optim.clip_grad_norm, or use "
            f"amp.loss_scale=dynamic, then {then} (train.divergence_factor={factor:g} sets how "
            f"far above the running median a loss may go; 0: only a non-finite loss stops the run)")
