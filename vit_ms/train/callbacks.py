"""Callbacks for `Model.train`, one concern each: progress lines, loss sanity, checkpoints and epoch metrics."""
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
from mindspore.train import Callback

from ..errors import NonFiniteLossError
from .checkpoint import CheckpointMeta, TrainState, prune_epoch_checkpoints, save_checkpoint

log = logging.getLogger("vit_ms")


def _outputs(cb_params):
    """(loss, overflow, loss_scale) as Python numbers from TrainStep's outputs."""
    loss, overflow, scale = cb_params.net_outputs
    return float(loss.asnumpy()), bool(overflow.asnumpy()), float(scale.asnumpy())


def crossed(count: int, steps: int, every: int) -> bool:
    """True when going from count - steps to count passed a multiple of `every`."""
    return every > 0 and count // every > (count - steps) // every


class SinkStepCounter:
    """Optimizer steps per step-end callback: 1, or a whole sunk chunk in dataset sink mode (MindSpore then calls
    back once per chunk; the count follows `cur_step_num`)."""

    def __init__(self):
        self.last_cur_step = None

    def start(self, run_context) -> None:
        self.last_cur_step = getattr(run_context.original_args(), "cur_step_num", None)

    def steps(self, cb_params) -> int:
        cur = getattr(cb_params, "cur_step_num", None)
        if cur is None or self.last_cur_step is None:
            return 1
        steps, self.last_cur_step = max(cur - self.last_cur_step, 1), cur
        return steps


class TrainProgress(Callback):
    """Tracks the global step and epoch state, checks the loss, prints progress lines during an epoch.

    A non-finite loss stops the run (NonFiniteLossError) unless a dynamic loss scale already skipped that step,
    in which case the step is counted as skipped. With dataset sink mode MindSpore calls back once per sunk
    chunk of steps; the step count follows `cur_step_num`, so it stays right either way.
    """

    def __init__(self, state: TrainState, steps_per_epoch: int, global_batch: int, lrs: List[float],
                 log_interval: int, dynamic_loss_scale: bool, total_epochs: int = 0):
        super().__init__()
        self.total_epochs = total_epochs  # > 0: progress lines also say how long until the end of the run
        self.state = state
        self.steps_per_epoch = steps_per_epoch
        self.global_batch = global_batch
        self.lrs = lrs
        self.log_interval = max(log_interval, 1)
        self.dynamic_loss_scale = dynamic_loss_scale
        self.skipped_steps = 0
        self.counter = SinkStepCounter()
        self.last_steps = 1  # steps covered by the latest callback
        self.reset_epoch()

    def reset_epoch(self):
        self.losses: List[float] = []
        self.epoch_steps = 0
        self.epoch_start = time.time()
        self.window_start = time.time()
        self.window_steps = 0

    def lr(self) -> float:
        return self.lrs[min(self.state.global_step, len(self.lrs) - 1)]

    def on_train_begin(self, run_context):
        self.counter.start(run_context)

    def on_train_epoch_begin(self, run_context):
        self.reset_epoch()

    def on_train_step_end(self, run_context):
        cb_params = run_context.original_args()
        loss, overflow, scale = _outputs(cb_params)
        steps = self.last_steps = self.counter.steps(cb_params)
        st = self.state
        if overflow and self.dynamic_loss_scale:
            self.skipped_steps += 1
            log.warning("step %d: gradient overflow at loss scale %g, step skipped (%d so far)",
                        st.global_step + 1, scale, self.skipped_steps)
        elif not math.isfinite(loss) or overflow:
            raise NonFiniteLossError(
                f"the loss became {loss} at global step {st.global_step + 1} (epoch {st.epoch + 1}, step "
                f"{st.step_in_epoch + 1}); training stopped and the last good checkpoint was kept. Lower optim.lr, "
                f"set optim.clip_grad_norm, or use amp.loss_scale=dynamic, then resume with --resume auto")
        else:
            self.losses.append(loss)
        st.global_step += steps
        st.step_in_epoch += steps
        self.window_steps += steps
        self.epoch_steps += steps
        if crossed(st.step_in_epoch, steps, self.log_interval) or st.step_in_epoch == self.steps_per_epoch:
            now = time.time()
            ips = self.window_steps * self.global_batch / max(now - self.window_start, 1e-9)
            eta = (self.steps_per_epoch - st.step_in_epoch) * self.global_batch / max(ips, 1e-9)
            log.info("epoch %d step %d/%d  loss %.4f  lr %.3e  %.1f img/s  eta %ds%s", st.epoch + 1, st.step_in_epoch,
                     self.steps_per_epoch, loss, self.lrs[min(st.global_step - 1, len(self.lrs) - 1)], ips, eta,
                     self.run_eta(ips))
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


class CheckpointAndMetrics(Callback):
    """At epoch end: evaluate, append to metrics.jsonl and write last/best/epoch checkpoints (main rank only).

    Every `interval_steps` steps it also refreshes last.ckpt so a killed run loses little work.
    With `pending` set (a `PendingSaves`, see `DivergenceGuard`), saves that no evaluation checked wait for the
    next sane loss before they replace the real file. Once `stopped` is set (a graceful stop or a divergence)
    it writes nothing more.
    """

    def __init__(self, network, run_dir: Optional[Path], progress: TrainProgress, evaluate: Callable[[], dict],
                 ccfg, eval_interval: int, total_epochs: int, meta: Optional[CheckpointMeta] = None):
        super().__init__()
        self.meta = meta or CheckpointMeta()  # config, plan and class names: every checkpoint can rebuild its model
        self.network = network
        self.run_dir = run_dir  # None on ranks other than 0
        self.progress = progress
        self.evaluate = evaluate
        self.ccfg = ccfg
        self.eval_interval = max(eval_interval, 1)
        self.total_epochs = total_epochs
        self.last_record: Optional[dict] = None  # the latest epoch's metrics record (for later callbacks)
        self.pending = None  # PendingSaves, installed by DivergenceGuard
        self.stopped = False

    def save(self, name: str, verified: bool = True) -> None:
        """Write `name` now, or (not `verified`: weights no loss or eval has tested yet) stage it in `pending`."""
        if self.run_dir is None:
            return
        path = self.run_dir / name
        if verified or self.pending is None:
            if self.pending is not None:
                self.pending.drop(path)
            save_checkpoint(self.network, path, self.progress.state, self.meta)
        else:
            self.pending.stage(self.network, path, self.progress.state, self.meta)

    def commit_pending(self) -> None:
        """The staged saves passed the check: rename them into place (and prune epoch checkpoints)."""
        if self.pending is not None and self.pending.commit() and self.run_dir is not None \
                and self.ccfg.keep_last > 0:
            prune_epoch_checkpoints(self.run_dir, self.ccfg.keep_last)

    def on_train_step_end(self, run_context):
        st = self.progress.state
        every = self.ccfg.interval_steps
        if every > 0 and crossed(st.global_step, self.progress.last_steps, every) \
                and st.step_in_epoch < self.progress.steps_per_epoch and not self.stopped:
            self.save("last.ckpt", verified=False)

    def on_train_epoch_end(self, run_context):
        if self.stopped:  # Model.train ends the epoch after a stop in its middle: nothing to evaluate or save
            return
        st = self.progress.state
        st.epoch += 1
        st.step_in_epoch = 0
        record = {"epoch": st.epoch, "step": st.global_step, "lr": self.progress.lr(), **self.progress.epoch_summary()}
        improved = evaluated = False
        if st.epoch % self.eval_interval == 0 or st.epoch == self.total_epochs:
            metrics = self.evaluate()
            record.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"],
                          val_images=metrics["num_images"])  # all ranks' shards together
            scores = {"raw": metrics["top1"]}
            if "ema" in metrics:  # train.ema: the averaged weights scored too; best.ckpt records the better
                ema = metrics["ema"]
                record.update(val_top1_ema=ema["top1"], val_top5_ema=ema["top5"], val_loss_ema=ema["loss"])
                scores["ema"] = ema["top1"]
            which = max(scores, key=scores.get)  # raw on a tie
            improved, evaluated = scores[which] > st.best_top1, True
            if improved:
                st.best_top1, st.best_weights = scores[which], which
        log.info("epoch %d done: %s", st.epoch, json.dumps(record))
        self.last_record = record
        if self.run_dir is None:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if improved:
            self.save("best.ckpt")
        if st.epoch % max(self.ccfg.interval_epochs, 1) == 0 and self.ccfg.keep_last > 0:
            self.save(f"epoch_{st.epoch:04d}.ckpt", verified=evaluated)
            prune_epoch_checkpoints(self.run_dir, self.ccfg.keep_last)
        self.save("last.ckpt", verified=evaluated)
