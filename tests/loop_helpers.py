"""The training loop on a tiny network, called back the way `Model.train` calls it, without MindSpore training.

    loop, ms = make_loop(tmp_path, steps_per_epoch=4)
    ms.steps(1, loss=1.0)                  # one train step ends (Model.train unsunk)
    ms.steps(5, loss=1.0, skipped=2)       # a sunk chunk of 5 steps, 2 of them skipped for overflow

`FakeModelTrain` keeps MindSpore's counters as `Model.train` does (cb_params.cur_step_num grows by the steps a
call-back covers) and the optimizer's step count (a skipped step does not advance it).
"""
from types import SimpleNamespace

import numpy as np
from mindspore import Tensor, nn

from vit_ms.train.checkpoint import TrainState
from vit_ms.train.loop import DivergenceDetector, LoopSettings, Progress, TrainLoop
from vit_ms.train.saving import RunSaver

METRICS = {"top1": 0.5, "top5": 1.0, "loss": 1.0, "num_images": 4}


class FakeModelTrain:
    def __init__(self, loop: TrainLoop):
        self.loop = loop
        self.cb_params = SimpleNamespace(cur_step_num=0, net_outputs=None)
        self.optimizer_step = 0
        self.stop_requested = False

    def original_args(self):
        return self.cb_params

    def request_stop(self):
        self.stop_requested = True

    def begin(self) -> "FakeModelTrain":
        self.cb_params.cur_step_num = 0  # a new Model.train call counts from 0
        self.loop.on_train_begin(self)
        return self

    def steps(self, n: int = 1, loss: float = 1.0, skipped: int = 0, last_skipped: bool = None) -> None:
        self.cb_params.cur_step_num += n
        self.optimizer_step += n - skipped
        overflow = skipped > 0 if last_skipped is None else last_skipped
        self.cb_params.net_outputs = (Tensor(np.float32(loss)), Tensor(np.bool_(overflow)), Tensor(np.float32(1.0)))
        self.loop.on_train_step_end(self)


def make_loop(tmp_path, *, steps_per_epoch=4, total_epochs=3, state=None, log_interval=100, interval_steps=0,
              eval_interval=1, dynamic=True, evaluate=None, received=None, world_size=1, gather=None, rank0=True,
              keep_last=3, factor=1e4, lrs=None):
    state = state or TrainState()
    settings = LoopSettings(steps_per_epoch, total_epochs, log_interval, interval_steps, eval_interval, dynamic,
                            world_size)
    loop = TrainLoop(state, settings,
                     progress=Progress(state, steps_per_epoch, 8, total_epochs),
                     saver=RunSaver(nn.Dense(3, 2), tmp_path if rank0 else None, state, keep_last=keep_last),
                     detector=DivergenceDetector(factor), evaluate=evaluate or (lambda: dict(METRICS)),
                     signals=SimpleNamespace(received=received), lrs=lrs or [1e-3] * 64,
                     optimizer_steps=lambda: fake.optimizer_step, gather=gather)
    fake = FakeModelTrain(loop)
    return loop, fake.begin()
