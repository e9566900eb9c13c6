"""The training loop: one object owns the run's state (`TrainState`) and does, in one order written below,
everything that happens between MindSpore's train steps.

    loop = TrainLoop(state, settings, progress=..., saver=..., detector=..., evaluate=..., signals=...,
                     optimizer_steps=..., pictures=[...])
    for leg in plan_legs(...):                                   # vit_ms.train.sink
        model.train(train_dataset=..., callbacks=[loop], **leg.train_kwargs(steps_per_epoch))
        if loop.stopped:
            break
    loop.finish()                                                # TrainingStopped after SIGTERM/SIGINT

MindSpore's `Model.train` runs the train step (`vit_ms.train.step.TrainStep`: forward, backward, overflow
check, update, EMA) and calls the loop back after every step, or after every sunk chunk of steps in dataset
sink mode. Then `after_steps` runs, top to bottom:

    1. count      global step and step in epoch; steps the dynamic loss scale skipped
    2. check      the loss (non-finite, exploding) and, without a dynamic loss scale, skipped steps; the
                  ranks agree on it and on a stop signal in one exchange; divergence: DivergenceError
    3. commit     saves that waited for this loss replace their real files
    4. progress   a line every train.log_interval steps and at the epoch's end
    5. epoch end  after the epoch's last step: `end_epoch`, and the step is done
    6. stop       SIGTERM/SIGINT: last.ckpt, then the run stops
    7. save       last.ckpt every checkpoint.interval_steps steps, waiting for the next loss

and `end_epoch`:

    1. evaluate   every eval.interval_epochs epochs and after the last; its loss checked like a training loss,
                  the ranks agree on it and on a stop signal
    2. record     the epoch's line in the log and metrics.jsonl
    3. save       best.ckpt when the score improved, epoch_NNNN.ckpt, last.ckpt (waiting when nothing evaluated)
    4. pictures   curves.png, TensorBoard
    5. stop       SIGTERM/SIGINT during the epoch: stop after its saves (unless it was the last epoch)

While training nothing else changes the state, and no other callback runs.
"""
import json
import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from mindspore.train import Callback

from ..errors import DivergenceError
from .checkpoint import TrainState
from .distributed import all_gather_rows
from .divergence import DivergenceDetector, divergence_message
from .progress import Progress
from .saving import RunSaver
from .stopping import first_signal, stop_message, stopped_error

log = logging.getLogger("vit_ms")

Gather = Callable[[Sequence[int], int], np.ndarray]


def crossed(count: int, steps: int, every: int) -> bool:
    """True when going from count - steps to count passed a multiple of `every`."""
    return every > 0 and count // every > (count - steps) // every


@dataclass(frozen=True)
class LoopSettings:
    steps_per_epoch: int
    total_epochs: int
    log_interval: int = 100  # train.log_interval
    interval_steps: int = 0  # checkpoint.interval_steps (0: last.ckpt only at epoch ends)
    eval_interval: int = 1  # eval.interval_epochs
    dynamic_loss_scale: bool = False
    world_size: int = 1


class TrainLoop(Callback):
    """The only callback of `Model.train`; see the module docstring for the order of its work."""

    def __init__(self, state: TrainState, settings: LoopSettings, *, progress: Progress, saver: RunSaver,
                 detector: DivergenceDetector, evaluate: Callable[[], dict], signals,
                 optimizer_steps: Callable[[], int], pictures: Sequence = (), gather: Optional[Gather] = None):
        super().__init__()
        self.state = state
        self.settings = settings
        self.progress = progress
        self.saver = saver
        self.detector = detector
        self.evaluate = evaluate  # () -> metrics of all ranks' shares of the val split (with "ema" when kept)
        self.signals = signals  # StopSignals: `received` is the first SIGTERM/SIGINT's number, or None
        self.optimizer_steps = optimizer_steps  # () -> the optimizer's step count (skipped steps do not count)
        self.pictures = list(pictures)  # each has update(record) and close()
        self.gather = gather
        self.stop_signal: Optional[int] = None  # the agreed signal once the run stopped
        self.message = ""
        self._cur_step = self._optimizer_step = 0

    @property
    def stopped(self) -> bool:
        return self.stop_signal is not None

    # MindSpore's call-backs: translate its numbers into ours, nothing else
    def on_train_begin(self, run_context):
        self._cur_step = run_context.original_args().cur_step_num
        self._optimizer_step = self.optimizer_steps()
        self.progress.start_epoch()

    def on_train_step_end(self, run_context):
        cb_params = run_context.original_args()
        steps, self._cur_step = cb_params.cur_step_num - self._cur_step, cb_params.cur_step_num  # 1, or a chunk
        optimizer_step = self.optimizer_steps()
        applied, self._optimizer_step = optimizer_step - self._optimizer_step, optimizer_step
        loss, overflow, scale = cb_params.net_outputs  # of the last step
        self.after_steps(steps, float(loss.asnumpy()), steps - applied, bool(overflow.asnumpy()),
                         float(scale.asnumpy()))
        if self.stopped:
            run_context.request_stop()

    # the loop
    def after_steps(self, steps: int, loss: float, skipped: int = 0, last_skipped: bool = False,
                    scale: float = 1.0) -> None:
        """`steps` more train steps ran, the last with `loss` at loss scale `scale`; `skipped` of them left the
        weights unchanged (overflow), the last one among them when `last_skipped`."""
        st, cfg = self.state, self.settings
        st.global_step += steps  # 1. count
        st.step_in_epoch += steps
        self.progress.add(steps, None if last_skipped else loss, skipped)
        if skipped and cfg.dynamic_loss_scale:
            log.warning("step %d: gradient overflow, %s skipped (loss scale %g at the last step; %d so far)",
                        st.global_step, "step" if steps == 1 else f"{skipped} of the last {steps} steps", scale,
                        self.progress.skipped_steps)
        if st.step_in_epoch > cfg.steps_per_epoch:  # legs are planned so that a chunk never crosses an epoch's end
            raise RuntimeError(f"MindSpore reported {steps} steps after step {st.step_in_epoch - steps} of a "
                               f"{cfg.steps_per_epoch}-step epoch; the training loop expects every epoch to end "
                               f"with a call-back (see vit_ms.train.sink)")
        epoch_done = st.step_in_epoch == cfg.steps_per_epoch
        tested = not (cfg.dynamic_loss_scale and last_skipped)  # a skipped step's loss tests no new weights
        reason, signum = self.agree(self.step_check(loss, steps, skipped) if tested else None,  # 2. check
                                    None if epoch_done else self.signals.received)
        if reason is not None:
            self.diverge(f"at global step {st.global_step} (epoch {st.epoch + 1}, step {st.step_in_epoch})", reason)
        if tested:
            self.detector.record(loss)
            self.saver.commit()  # 3. commit
        if crossed(st.step_in_epoch, steps, cfg.log_interval) or epoch_done:
            self.progress.log_line(loss)  # 4. progress
        if epoch_done:
            self.end_epoch()  # 5. epoch end
            return
        if signum is not None:
            self.saver.commit()  # 6. stop: what waits is kept, and last.ckpt holds this step's weights
            self.saver.save("last.ckpt")
            self.stop(signum)
            return
        if crossed(st.global_step, steps, cfg.interval_steps):
            self.saver.save("last.ckpt", verified=False)  # 7. save

    def end_epoch(self) -> None:
        st, cfg = self.state, self.settings
        st.epoch += 1
        st.step_in_epoch = 0
        record = {"epoch": st.epoch, "step": st.global_step, "lr": self.progress.lr(st.global_step),
                  **self.progress.epoch_summary()}
        evaluated = st.epoch % max(cfg.eval_interval, 1) == 0 or st.epoch == cfg.total_epochs
        metrics = self.evaluate() if evaluated else None  # 1. evaluate
        reason, signum = self.agree(self.detector.check(metrics["loss"], "the validation loss") if metrics else None,
                                    self.signals.received)
        if reason is not None:
            self.diverge(f"in the evaluation after epoch {st.epoch} (global step {st.global_step})", reason)
        improved = self.score(metrics, record) if metrics else False
        log.info("epoch %d done: %s", st.epoch, json.dumps(record))  # 2. record
        self.saver.append_record(record)
        if improved:
            self.saver.save("best.ckpt")  # 3. save
        self.saver.save_epoch(st.epoch, verified=evaluated)
        self.saver.save("last.ckpt", verified=evaluated)
        for picture in self.pictures:
            picture.update(record)  # 4. pictures
        self.progress.start_epoch()
        if signum is not None and st.epoch < cfg.total_epochs:
            self.saver.commit()  # 5. stop: this epoch's saves, which no evaluation checked, are kept
            self.stop(signum)

    # its parts
    def step_check(self, loss: float, steps: int, skipped: int) -> Optional[str]:
        """Why the run diverged at this step (or chunk), or None."""
        reason = self.detector.check(loss)
        if reason is None and skipped and not self.settings.dynamic_loss_scale:
            which = "the step" if steps == 1 else f"{skipped} of the last {steps} steps"
            reason = f"the gradients of {which} overflowed (loss {loss}) without a dynamic loss scale"
        return reason

    def score(self, metrics: dict, record: dict) -> bool:
        """Put the evaluation into `record`; True when it beat the best so far (raw or EMA weights)."""
        st = self.state
        record.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"],
                      val_images=metrics["num_images"])  # all ranks' shards together
        scores = {"raw": metrics["top1"]}
        if "ema" in metrics:  # train.ema: the averaged weights scored too; best.ckpt records the better
            ema = metrics["ema"]
            record.update(val_top1_ema=ema["top1"], val_top5_ema=ema["top5"], val_loss_ema=ema["loss"])
            scores["ema"] = ema["top1"]
        which = max(scores, key=scores.get)  # raw on a tie
        if scores[which] <= st.best_top1:
            return False
        st.best_top1, st.best_weights = scores[which], which
        return True

    def agree(self, reason: Optional[str], signum: Optional[int]) -> Tuple[Optional[str], Optional[int]]:
        """With several ranks: whether any rank diverged, and the lowest rank's signal (all ranks call this at
        the same points, one all-gather each time)."""
        if self.settings.world_size <= 1:
            return reason, signum
        gather = self.gather or all_gather_rows
        rows = np.asarray(gather([int(reason is not None), int(signum or 0)], self.settings.world_size))
        rows = rows.reshape(self.settings.world_size, 2)
        if reason is None and rows[:, 0].any():
            reason = f"rank {int(np.argmax(rows[:, 0]))} saw its loss diverge"
        return reason, first_signal(rows[:, 1])

    def diverge(self, where: str, reason: str) -> None:
        self.saver.discard()
        self.saver.closed = True
        message = divergence_message(where, reason, self.detector.factor, self.saver.run_dir)
        log.error(message)
        raise DivergenceError(message)

    def stop(self, signum: int) -> None:
        self.stop_signal = signum
        self.saver.closed = True
        self.message = stop_message(signum, self.state, self.settings.steps_per_epoch, self.saver.run_dir)
        log.warning(self.message)

    def finish(self) -> None:
        """After the last leg: wait for the pictures; TrainingStopped when a signal stopped the run."""
        for picture in self.pictures:
            picture.close()
        if self.stop_signal is not None:
            raise stopped_error(self.stop_signal, self.message)
