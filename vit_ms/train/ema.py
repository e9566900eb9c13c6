"""Exponential moving average of the weights (Polyak averaging; DeiT's and timm's ModelEma).

    ema = WeightEma(params, decay=0.99996, warmup=False)  # float32 copies named ema.<name>, ema.num_updates
    ema(params)                                          # after an applied optimizer step (TrainStep calls it)
    with ema.applied(params): evaluate()                 # the EMA weights in place of the raw ones, then back

Each update: d = decay (with `warmup`: min(decay, 1 - (1 + n)^(-2/3)) after n updates, timm's ModelEmaV3
warm-up, so the first update copies the weights), ema = d ema + (1 - d) w. The copies stay float32 whatever the
amp level. They live in the train step, so every training checkpoint holds them (ema.*), resume restores them,
and data-parallel ranks keep identical copies because their weights are identical. Steps skipped for overflow
never reach the update. Inference loads them with `--weights ema` (vit_ms.weights.checkpoint.chosen_weights).
"""
import contextlib
import logging
from typing import Dict

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from ..weights.checkpoint import EMA_COUNT_KEY, EMA_PREFIX, has_ema

log = logging.getLogger("vit_ms")

WARMUP_POWER = 2.0 / 3.0  # timm ModelEmaV3's default warmup_power (warmup_gamma 1)

_ema_update = ops.MultitypeFuncGraph("ema_update")


@_ema_update.register("Tensor", "Tensor", "Tensor")
def _update_one(decay, shadow, weight):
    return ops.assign(shadow, decay * shadow + (1.0 - decay) * weight.astype(ms.float32))


def decay_at(decay: float, warmup: bool, num_updates: int) -> float:
    """The decay of update number `num_updates` + 1 (Python twin of the graph computation, for tests/logs)."""
    return min(decay, 1.0 - (1.0 + num_updates) ** -WARMUP_POWER) if warmup else decay


class WeightEma(nn.Cell):
    """float32 shadow copies of `params`, updated in place by `construct(params)`."""

    def __init__(self, params, decay: float, warmup: bool = False):
        super().__init__(auto_prefix=False)
        self.decay = Tensor(decay, ms.float32)
        self.warmup = warmup
        self.shadow = ParameterTuple([Parameter(Tensor(p.asnumpy().astype(np.float32)), name=EMA_PREFIX + p.name,
                                                requires_grad=False) for p in params])
        self.num_updates = Parameter(Tensor(0.0, ms.float32), name=EMA_COUNT_KEY, requires_grad=False)
        self.hyper_map = ops.HyperMap()

    def construct(self, params):
        n = self.num_updates * 1.0
        decay = self.decay
        if self.warmup:
            decay = ops.minimum(decay, 1.0 - ops.pow(1.0 + n, -WARMUP_POWER))
        done = self.hyper_map(ops.partial(_update_one, decay), self.shadow, params)
        return ops.depend(ops.assign(self.num_updates, n + 1.0), done)

    def reset(self, params) -> None:
        """Copy `params` into the shadow and restart the count (a resume from a checkpoint without EMA)."""
        for shadow, p in zip(self.shadow, params):
            shadow.set_data(Tensor(p.asnumpy().astype(np.float32)))
        self.num_updates.set_data(Tensor(0.0, ms.float32))

    @contextlib.contextmanager
    def applied(self, params):
        """Within the block `params` hold the EMA values (in their own dtype); afterwards the raw values again."""
        raw = [p.asnumpy().copy() for p in params]
        try:
            for shadow, p, r in zip(self.shadow, params, raw):
                p.set_data(Tensor(shadow.asnumpy().astype(r.dtype)))
            yield
        finally:
            for p, r in zip(params, raw):
                p.set_data(Tensor(r))


def resume_ema(ema: WeightEma, params, checkpoint: Dict[str, object], path) -> None:
    """After a resume: a checkpoint without EMA starts the average from the restored weights."""
    if not has_ema(checkpoint):
        ema.reset(params)
        log.info("train.ema: checkpoint '%s' holds no EMA weights; the average starts from its weights", path)
