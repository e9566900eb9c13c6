"""The evaluation side of `mindspore.train.Model`: the eval network and the metrics.

`ClassificationMetrics` accumulates top-1/top-5/loss as sums, all-reduced across ranks, so every rank reports the
full validation set; with `per_class` also the confusion matrix, all-reduced the same way. `mindspore_model` puts
the train step (or none, for evaluation alone), the eval network and the metrics into one `Model`.
"""
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.train import Metric


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
