"""Losses: label-smoothed cross-entropy on class indices, soft-target cross-entropy on mixup/cutmix labels.

Logits are cast to float32 before the loss so O2 (fp16 network) keeps a float32 loss.
"""
import mindspore as ms
from mindspore import nn, ops


class ClassificationLoss(nn.Cell):
    """labels (B,) int: cross-entropy with label smoothing; labels (B, K) float: soft-target cross-entropy."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def construct(self, logits, labels):
        logits = logits.astype(ms.float32)
        if labels.ndim == 2:  # soft targets, already smoothed by mixup
            return (-labels * ops.log_softmax(logits, axis=-1)).sum(axis=-1).mean()
        return ops.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


class WithLoss(nn.Cell):
    """network + loss: (images, labels) -> scalar loss."""

    def __init__(self, network: nn.Cell, loss: nn.Cell):
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss = loss

    def construct(self, images, labels):
        return self.loss(self.network(images), labels)
