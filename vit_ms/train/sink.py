"""How MindSpore's `Model.train` is called, in legs of one call each, so that every epoch has its full length
and the training loop sees the run at least every `train.log_interval` steps, with or without sink mode.

    for leg in plan_legs(state, total_epochs=300, steps_per_epoch=1251, sink=True, log_interval=100):
        dataset = train_dataset(leg.first_epoch, leg.skip_steps)
        model.train(train_dataset=dataset, callbacks=[loop], **leg.train_kwargs())

Without dataset sink mode one leg is the whole run: MindSpore calls back after every step and its epochs are
the data's (the first shorter after a mid-epoch resume: the dataset leaves out the steps already trained).

With sink mode MindSpore runs `sink_size` steps on the device between call-backs and counts each sunk chunk as
an "epoch"; left to itself it takes the dataset's length as the chunk. So:
- the chunk is the largest divisor of the epoch's steps not above `train.log_interval`: the loop's progress
  lines, interval saves, skipped-step count, divergence and stop checks see every chunk (at most log_interval
  steps apart), and every epoch ends with a chunk, where the loop evaluates and saves. A prime number of steps
  per epoch gives chunks of one step: choose train.log_interval (or the batch) so the epoch divides well;
- a run resumed in the middle of an epoch trains the rest of that epoch unsunk (a leg of its own), then the
  full epochs sunk from a dataset that starts at the next epoch; sinking the shortened epoch would make its
  length the chunk of the whole run and every later epoch short.

MindSpore on CPU never sinks (it trains step by step whatever it is told), so the run plan turns sink mode off there.
"""
from dataclasses import dataclass
from typing import List, Optional

from .checkpoint import TrainState


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
