"""The training loop: one object owns the run's state (`TrainState`) and does, in one order written below,
everything that happens between MindSpore's train steps; with it, how `Model.train` is called (legs and sunk
chunks), the progress lines and the divergence check.

    loop = TrainLoop(state, settings, progress=..., saver=..., detector=..., evaluate=..., signals=...,
                     optimizer_steps=..., pictures=[...])
    for leg in plan_legs(state, total_epochs=300, steps_per_epoch=1251, sink=True, log_interval=100):
        dataset = train_dataset(leg.first_epoch, leg.skip_steps)
        model.train(train_dataset=dataset, callbacks=[loop], **leg.train_kwargs(steps_per_epoch))
        if loop.stopped:
            break
    loop.finish()                                                # TrainingStopped after SIGTERM/SIGINT

MindSpore's `Model.train` runs the train step (`vit_ms.train.step.TrainStep`: forward, backward, overflow
check, update, EMA) and calls the loop back after every step, or after every sunk chunk of steps in dataset
sink mode. Then `after_steps` runs, top to bottom:

    1. count      global step, step in epoch, steps whose update the dynamic loss scale skipped
    2. check      the loss (non-finite, exploding) and, without a dynamic loss scale, skipped steps; the
                  ranks agree on it and on a stop signal in one exchange; divergence: DivergenceError
    3. commit     saves that waited for this loss replace their real files; a record that waited with them
                  joins metrics.jsonl, and the pictures are drawn
    4. progress   a line every train.log_interval steps and at the epoch's end
    5. epoch end  after the epoch's last step: `end_epoch`, and the step is done
    6. stop       SIGTERM/SIGINT: last.ckpt, then the run stops
    7. save       last.ckpt every checkpoint.interval_steps steps, waiting for the next loss

and `end_epoch`:

    1. evaluate   every eval.interval_epochs epochs and after the last; its loss checked like a training loss,
                  the ranks agree on it and on a stop signal
    2. save       best.ckpt when the score improved, epoch_NNNN.ckpt, last.ckpt (waiting when nothing evaluated)
    3. record     the epoch's line in the log and metrics.jsonl, once its checkpoints are written (a save that
                  fails leaves no row; one that waits, waits with it)
    4. pictures   curves.png, TensorBoard, of the rows written
    5. stop       SIGTERM/SIGINT during the epoch: stop after its saves (unless it was the last epoch)

While training nothing else changes the state, and no other callback runs.

Counting. `TrainState` holds every counter of the run: `global_step` counts train steps (one per global batch,
skipped ones included) over the whole run, resumes too, and is the `step` of metrics.jsonl and TensorBoard: it
only goes forward, also when a resume changes the batch size. The lr schedule is indexed by the optimizer's own
step count, which a skipped step does not advance and a resume restores from the checkpoint; the lr the log
lines and records show is the one the optimizer's last update applied (`applied_lr`).

Legs. Without dataset sink mode one leg (one `Model.train` call) is the whole run: MindSpore calls back after
every step and its epochs are the data's (the first shorter after a mid-epoch resume: the dataset leaves out
the steps already trained). With sink mode MindSpore runs `sink_size` steps on the device between call-backs
and counts each sunk chunk as an "epoch"; left to itself it takes the dataset's length as the chunk. So:
- the chunk is the largest divisor of the epoch's steps not above `train.log_interval`: progress lines,
  interval saves, skipped-step count, divergence and stop checks see every chunk (at most log_interval steps
  apart), and every epoch ends with a chunk, where the loop evaluates and saves. A prime number of steps per
  epoch gives chunks of one step: choose train.log_interval (or the batch) so the epoch divides well;
- a run resumed in the middle of an epoch trains the rest of that epoch unsunk (a leg of its own), then the
  full epochs sunk from a dataset that starts at the next epoch; sinking the shortened epoch would make its
  length the chunk of the whole run and every later epoch short.
MindSpore on CPU never sinks (it trains step by step whatever it is told), so the run plan turns sink mode off
there.

Progress (`Progress`) reads the state and never changes it: the progress line (epoch 3 step 100/1251  loss
2.3100  lr ...  img/s  eta ...  run eta ...) and the epoch's summary (train_loss, epoch_seconds,
images_per_sec, skipped_steps). With sink mode a whole sunk chunk is one call, its last loss standing for it.

Divergence (`DivergenceDetector`): a non-finite loss, or one over `train.divergence_factor` times the median of
the last `WINDOW` sane training losses (a median below `MEDIAN_FLOOR` counts as `MEDIAN_FLOOR`, so a model that
fits its batches almost perfectly does not make every ordinary loss look like an explosion), stops the run;
factor 0 turns the ratio test off. One loss of history is enough: a factor of 1e4 is far beyond any step to
step change of a sane cross-entropy, and a run with lr 1e6 is diverged after its first update. The loss of
step k is the first test of the weights step k - 1 wrote, so saves that no evaluation checked wait
(`vit_ms.train.saving.PendingSaves`) until the next loss passed, and nothing after the last sane step becomes
last.ckpt, best.ckpt or an epoch checkpoint; an epoch's evaluation checks the validation loss the same way
before that epoch's checkpoints are written. A step that overflowed without a dynamic loss scale (its update
was skipped) also stops the run. Data-parallel ranks see different losses, so they agree (the loop's one
all-gather a step) and stop together.
"""
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from mindspore.train import Callback

from ..errors import DivergenceError
from .checkpoint import TrainState, find_resume_checkpoint
from .distributed import all_gather_rows
from .saving import RunSaver
from .stopping import first_signal, stop_message, stopped_error

log = logging.getLogger("vit_ms")


# --- How Model.train is called: legs and sunk chunks

@dataclass(frozen=True)
class Leg:
    first_epoch: int  # the data epoch the leg's dataset starts with (0-based)
    skip_steps: int  # steps of first_epoch already trained: the dataset leaves them out
    epochs: int  # data epochs the leg trains (the first one possibly shortened by skip_steps)
    sink_size: int  # steps per sunk chunk; 0: not sunk, MindSpore calls back after every step

    @property
    def sunk(self) -> bool:
        return self.sink_size > 0

    def chunks(self, steps_per_epoch: int) -> int:
        """MindSpore "epochs" of a sunk leg: its steps in chunks of sink_size."""
        return self.epochs * steps_per_epoch // self.sink_size

    def train_kwargs(self, steps_per_epoch: int) -> dict:
        """`Model.train` arguments besides the dataset and callbacks."""
        if self.sunk:
            return dict(epoch=self.chunks(steps_per_epoch), dataset_sink_mode=True, sink_size=self.sink_size)
        return dict(epoch=self.first_epoch + self.epochs, dataset_sink_mode=False, initial_epoch=self.first_epoch)


def chunk_steps(steps_per_epoch: int, log_interval: int) -> int:
    """The largest divisor of `steps_per_epoch` not above `log_interval` (at least 1)."""
    limit = max(min(log_interval, steps_per_epoch), 1)
    return max(d for d in range(1, limit + 1) if steps_per_epoch % d == 0)


def plan_legs(state: TrainState, total_epochs: int, steps_per_epoch: int, sink: bool,
              log_interval: int) -> List[Leg]:
    """The calls that train from `state` to the end of epoch `total_epochs`; empty when nothing is left."""
    epoch, skip = state.epoch, state.step_in_epoch
    if epoch >= total_epochs:
        return []
    if not sink:
        return [Leg(epoch, skip, total_epochs - epoch, 0)]
    legs = []
    if skip:  # the rest of the interrupted epoch, step by step
        legs.append(Leg(epoch, skip, 1, 0))
        epoch, skip = epoch + 1, 0
    if epoch < total_epochs:
        legs.append(Leg(epoch, 0, total_epochs - epoch, chunk_steps(steps_per_epoch, log_interval)))
    return legs


def describe_legs(legs: List[Leg], steps_per_epoch: int) -> str:
    """One line for the log: how each leg trains."""
    parts = []
    for leg in legs:
        span = f"epoch {leg.first_epoch + 1}" if leg.epochs == 1 else \
            f"epochs {leg.first_epoch + 1}-{leg.first_epoch + leg.epochs}"
        if leg.skip_steps:
            span += f" from step {leg.skip_steps + 1}"
        how = (f"sunk, {leg.sink_size} steps a sink ({steps_per_epoch // leg.sink_size} an epoch)" if leg.sunk
               else "step by step")
        parts.append(f"{span} {how}")
    return "; ".join(parts)


def chunk_advice(steps_per_epoch: int, log_interval: int) -> Optional[str]:
    """A warning when the epoch's steps make sinks a quarter of train.log_interval or less, with a better value."""
    k = chunk_steps(steps_per_epoch, log_interval)
    if 4 * k > min(log_interval, steps_per_epoch):
        return None
    better = min(d for d in range(log_interval, steps_per_epoch + 1) if steps_per_epoch % d == 0)
    steps = f"{k} step{'s' if k > 1 else ''}"
    return (f"dataset sink mode: {steps_per_epoch} steps an epoch have no divisor between {k + 1} and "
            f"train.log_interval={log_interval}, so each sink runs only {steps} (a host round trip each); "
            f"train.log_interval={better} would sink {better} steps at a time")


# --- Progress: losses and speed of the epoch, progress lines, the epoch's summary

class Progress:
    def __init__(self, state: TrainState, steps_per_epoch: int, global_batch: int, total_epochs: int = 0):
        self.state = state
        self.steps_per_epoch = steps_per_epoch
        self.global_batch = global_batch
        self.total_epochs = total_epochs  # > 0: progress lines also say how long until the end of the run
        self.start_epoch()

    def start_epoch(self) -> None:
        self.losses: List[float] = []
        self.epoch_steps = 0
        self.epoch_start = self.window_start = time.time()
        self.window_steps = 0

    def add(self, steps: int, loss: Optional[float]) -> None:
        """`steps` more steps, the last with `loss` (None: that step was skipped, its loss measures nothing the
        run keeps)."""
        if loss is not None:
            self.losses.append(loss)
        self.window_steps += steps
        self.epoch_steps += steps

    def log_line(self, loss: float, lr: float) -> None:
        """The progress line at the current step, with the lr the last update applied: speed since the previous
        line, epoch and run eta."""
        st = self.state
        now = time.time()
        ips = self.window_steps * self.global_batch / max(now - self.window_start, 1e-9)
        eta = (self.steps_per_epoch - st.step_in_epoch) * self.global_batch / max(ips, 1e-9)
        log.info("epoch %d step %d/%d  loss %.4f  lr %.3e  %.1f img/s  eta %ds%s", st.epoch + 1, st.step_in_epoch,
                 self.steps_per_epoch, loss, lr, ips, eta, self.run_eta(ips))
        self.window_start, self.window_steps = now, 0

    def run_eta(self, images_per_sec: float) -> str:
        """'  run eta H:MM:SS': the steps left in the whole run at the current rate (evaluation not counted)."""
        if self.total_epochs <= 0:
            return ""
        st = self.state
        left = (self.total_epochs - st.epoch) * self.steps_per_epoch - st.step_in_epoch  # train steps
        seconds = int(round(max(left, 0) * self.global_batch / max(images_per_sec, 1e-9)))
        return f"  run eta {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def epoch_summary(self) -> dict:
        seconds = time.time() - self.epoch_start
        return {"train_loss": float(np.mean(self.losses)) if self.losses else float("nan"),
                "epoch_seconds": round(seconds, 3),
                "images_per_sec": round(self.epoch_steps * self.global_batch / max(seconds, 1e-9), 2),
                "skipped_steps": self.state.skipped_steps}


# --- Divergence: a non-finite or exploding loss stops the run before it is saved

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


# --- The loop

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
                 detector: DivergenceDetector, evaluate: Callable[[], dict], signals, lrs: Sequence[float],
                 optimizer_steps: Callable[[], int], pictures: Sequence = (), gather: Optional[Gather] = None):
        super().__init__()
        self.state = state  # every counter of the run; nothing else counts
        self.settings = settings
        self.progress = progress
        self.saver = saver
        self.detector = detector
        self.evaluate = evaluate  # () -> metrics of all ranks' shares of the val split (with "ema" when kept)
        self.signals = signals  # StopSignals: `received` is the first SIGTERM/SIGINT's number, or None
        self.lrs = lrs  # the lr table, one entry per optimizer step
        self.optimizer_steps = optimizer_steps  # () -> the optimizer's step count (skipped steps do not count)
        self.pictures = list(pictures)  # each has update(record) and close()
        self.gather = gather
        self.stop_signal: Optional[int] = None  # the agreed signal once the run stopped
        self.message = ""
        self._seen = (0, 0)  # MindSpore's cur_step_num and the optimizer's step count at the last call-back

    @property
    def stopped(self) -> bool:
        return self.stop_signal is not None

    def applied_lr(self) -> float:
        """The lr the optimizer's last update applied: the table's entry at its step count - 1 (a skipped step
        leaves the count, and so this lr, where it was; the first entry before any update)."""
        return self.lrs[min(max(self.optimizer_steps() - 1, 0), len(self.lrs) - 1)]

    # MindSpore's call-backs: translate its numbers into ours, nothing else
    def on_train_begin(self, run_context):
        self._seen = (run_context.original_args().cur_step_num, self.optimizer_steps())
        self.progress.start_epoch()

    def on_train_step_end(self, run_context):
        cb_params = run_context.original_args()
        seen = (cb_params.cur_step_num, self.optimizer_steps())
        steps, applied = seen[0] - self._seen[0], seen[1] - self._seen[1]  # steps: 1, or a sunk chunk
        self._seen = seen
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
        st.skipped_steps += skipped
        self.progress.add(steps, None if last_skipped else loss)
        if skipped and cfg.dynamic_loss_scale:
            log.warning("step %d: gradient overflow, %s skipped (loss scale %g at the last step; %d so far)",
                        st.global_step, "step" if steps == 1 else f"{skipped} of the last {steps} steps", scale,
                        st.skipped_steps)
        if st.step_in_epoch > cfg.steps_per_epoch:  # legs are planned so that a chunk never crosses an epoch's end
            raise RuntimeError(f"MindSpore reported {steps} steps after step {st.step_in_epoch - steps} of a "
                               f"{cfg.steps_per_epoch}-step epoch; the training loop expects every epoch to end "
                               f"with a call-back (see plan_legs)")
        epoch_done = st.step_in_epoch == cfg.steps_per_epoch
        tested = not (cfg.dynamic_loss_scale and last_skipped)  # a skipped step's loss tests no new weights
        reason, signum = self.agree(self.step_check(loss, steps, skipped) if tested else None,  # 2. check
                                    None if epoch_done else self.signals.received)
        if reason is not None:
            self.diverge(f"at global step {st.global_step} (epoch {st.epoch + 1}, step {st.step_in_epoch})", reason)
        if tested:
            self.detector.record(loss)
            self.draw(self.saver.commit())  # 3. commit (an epoch's waiting record too, then its pictures)
        if crossed(st.step_in_epoch, steps, cfg.log_interval) or epoch_done:
            self.progress.log_line(loss, self.applied_lr())  # 4. progress
        if epoch_done:
            self.end_epoch()  # 5. epoch end
            return
        if signum is not None:
            self.draw(self.saver.commit())  # 6. stop: what waits is kept, and last.ckpt holds this step's weights
            self.saver.save("last.ckpt")
            self.stop(signum)
            return
        if crossed(st.global_step, steps, cfg.interval_steps):
            self.saver.save("last.ckpt", verified=False)  # 7. save

    def end_epoch(self) -> None:
        st, cfg = self.state, self.settings
        st.epoch += 1
        st.step_in_epoch = 0
        record = {"epoch": st.epoch, "step": st.global_step, "lr": self.applied_lr(),
                  **self.progress.epoch_summary()}
        evaluated = st.epoch % max(cfg.eval_interval, 1) == 0 or st.epoch == cfg.total_epochs
        metrics = self.evaluate() if evaluated else None  # 1. evaluate
        reason, signum = self.agree(self.detector.check(metrics["loss"], "the validation loss") if metrics else None,
                                    self.signals.received)
        if reason is not None:
            self.diverge(f"in the evaluation after epoch {st.epoch} (global step {st.global_step})", reason)
        improved = self.score(metrics, record) if metrics else False
        if improved:
            self.saver.save("best.ckpt")  # 2. save
        self.saver.save_epoch(st.epoch, verified=evaluated)
        self.saver.save("last.ckpt", verified=evaluated)
        log.info("epoch %d done: %s", st.epoch, json.dumps(record))  # 3. record
        self.draw(self.saver.append_record(record, verified=evaluated))  # 4. pictures
        self.progress.start_epoch()
        if signum is not None and st.epoch < cfg.total_epochs:
            self.draw(self.saver.commit())  # 5. stop: this epoch's saves, which no evaluation checked, are kept
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

    def draw(self, records: List[dict]) -> None:
        """The pictures of records that have just been written to metrics.jsonl."""
        for record in records:
            for picture in self.pictures:
                picture.update(record)

    def diverge(self, where: str, reason: str) -> None:
        self.saver.discard()
        self.state.closed = True
        message = divergence_message(where, reason, self.detector.factor, self.saver.run_dir)
        log.error(message)
        raise DivergenceError(message)

    def stop(self, signum: int) -> None:
        self.stop_signal = signum
        self.state.closed = True
        self.message = stop_message(signum, self.state, self.settings.steps_per_epoch, self.saver.run_dir)
        log.warning(self.message)

    def finish(self) -> None:
        """After the last leg: wait for the pictures; TrainingStopped when a signal stopped the run."""
        for picture in self.pictures:
            picture.close()
        if self.stop_signal is not None:
            raise stopped_error(self.stop_signal, self.message)

