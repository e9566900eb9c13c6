"""Building the train step from the plan, and the evaluation metrics used with `mindspore.train.Model`.

`build_train_step` puts the plan's amp level, loss and loss scaling around the model and returns a `TrainStep`
(`vit_ms.train.step`), or an `AccumulatingTrainStep` (`vit_ms.train.accumulate`) when a step takes several
micro-batches. `ClassificationMetrics` accumulates top-1/top-5/loss as sums, all-reduced across ranks, so every
rank reports the full validation set; with `per_class` also the confusion matrix, all-reduced the same way.
"""
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.train import Metric

from ..models import apply_amp
from .accumulate import AccumulatingTrainStep
from .losses import loss_network
from .ema import WeightEma
from .step import TrainStep


def loss_scale_sense(plan):
    """The loss scale for TrainStep: 1.0 without loss scaling (amp O0), else a fixed value or a dynamic cell."""
    if plan.loss_scale == "none":
        return Tensor(1.0, ms.float32)
    if plan.loss_scale == "fixed":
        return Tensor(plan.loss_scale_value, ms.float32)
    return nn.DynamicLossScaleUpdateCell(loss_scale_value=plan.loss_scale_value, scale_factor=2,
                                         scale_window=plan.scale_window)


def build_train_step(model: nn.Cell, optimizer: nn.Optimizer, cfg, plan,
                     teacher: Optional[nn.Cell] = None) -> TrainStep:
    """Mixed precision on the backbone (logits cast to float32 in the loss), loss (with distill.*, DeiT's
    distillation against the frozen `teacher`: vit_ms.train.losses), the train step and, with train.ema, the
    float32 average of the trained weights (taken before amp casts anything)."""
    ema = WeightEma(optimizer.parameters, cfg.train.ema_decay, cfg.train.ema_warmup) if cfg.train.ema else None
    net_with_loss = loss_network(apply_amp(model, plan), cfg, teacher)
    args = (net_with_loss, optimizer, loss_scale_sense(plan), cfg.optim.clip_grad_norm)
    kwargs = dict(float_status=plan.float_status_overflow, check_loss_only=plan.amp_level == "O0", ema=ema)
    if plan.accum_steps > 1:  # micro-batches stacked on the first axis of each input (vit_ms.train.accumulate)
        return AccumulatingTrainStep(*args, accum_steps=plan.accum_steps, **kwargs)
    return TrainStep(*args, **kwargs)


class EvalNetwork(nn.Cell):
    """(images, labels) -> (float32 logits, labels) for `ClassificationMetrics`."""

    def __init__(self, network: nn.Cell):
        super().__init__(auto_prefix=False)
        self.network = network

    def construct(self, images, labels):
        return self.network(images).astype(ms.float32), labels


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class ClassificationMetrics(Metric):
    """top-1, top-5 (top-k for fewer classes) and cross-entropy over a dataset, summed across ranks.

    `num_classes` C given: `eval()` also returns "confusion", an int64 (C, C) array: row = true class, column =
    top-1 prediction (rows sum to each class's image count).
    """

    def __init__(self, world_size: int = 1, num_classes: Optional[int] = None):
        super().__init__()
        self.world_size = world_size
        self.num_classes = num_classes
        self.clear()

    def clear(self):
        self.sums = np.zeros(4, np.float64)  # correct@1, correct@5, loss sum, count
        self.confusion = np.zeros((self.num_classes or 0,) * 2, np.float64)  # (C, C): true x predicted

    def update(self, *inputs):
        logits, labels = (x.asnumpy() if isinstance(x, Tensor) else np.asarray(x) for x in inputs)
        labels = labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(np.int64)
        k = min(5, logits.shape[1])
        topk = np.argsort(-logits, axis=1)[:, :k]
        log_prob = _log_softmax(logits.astype(np.float64))
        self.sums += [(topk[:, 0] == labels).sum(), (topk == labels[:, None]).any(axis=1).sum(),
                      -log_prob[np.arange(len(labels)), labels].sum(), len(labels)]
        if self.num_classes:
            np.add.at(self.confusion, (labels, topk[:, 0]), 1)

    def eval(self) -> dict:
        sums = self.sums
        if self.num_classes:  # one all-reduce for both, the same (4 + C*C,) shape on every rank
            sums = np.concatenate([sums, self.confusion.ravel()])
        if self.world_size > 1:  # float32 holds counts exactly up to 2**24
            sums = ops.AllReduce()(Tensor(sums.astype(np.float32))).asnumpy().astype(np.float64)
        count = max(sums[3], 1.0)
        result = {"top1": float(sums[0] / count), "top5": float(sums[1] / count), "loss": float(sums[2] / count),
                  "num_images": int(round(sums[3]))}
        if self.num_classes:
            result["confusion"] = np.rint(sums[4:]).astype(np.int64).reshape(self.confusion.shape)  # (C, C)
        return result


def mindspore_model(train_step: Optional[nn.Cell], network: nn.Cell, world_size: int = 1,
                    num_classes: Optional[int] = None) -> ms.train.Model:
    """`mindspore.train.Model` over our train step, with the eval network and metrics attached (the confusion
    matrix too when `num_classes` is given)."""
    return ms.train.Model(train_step if train_step is not None else network, eval_network=EvalNetwork(network),
                          metrics={"cls": ClassificationMetrics(world_size, num_classes)})
