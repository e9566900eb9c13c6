"""vit_ms.train.metrics: top-1, top-5 and the loss of `ClassificationMetrics` against numpy."""
import numpy as np
import pytest
from mindspore import Tensor

from vit_ms.train.metrics import ClassificationMetrics


def log_softmax(x):
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def test_metrics_against_numpy():
    logits = np.random.randn(10, 7).astype(np.float32)
    labels = np.random.randint(0, 7, 10)
    metric = ClassificationMetrics()
    metric.update(Tensor(logits[:4]), Tensor(labels[:4].astype(np.int32)))
    metric.update(Tensor(logits[4:]), Tensor(labels[4:].astype(np.int32)))
    out = metric.eval()
    order = np.argsort(-logits, 1)
    assert out["top1"] == pytest.approx((order[:, 0] == labels).mean())
    assert out["top5"] == pytest.approx(np.mean([l in o[:5] for l, o in zip(labels, order)]))
    assert out["loss"] == pytest.approx(-log_softmax(logits.astype(np.float64))[np.arange(10), labels].mean(), rel=1e-6)
    assert out["num_images"] == 10
    few = ClassificationMetrics()  # fewer than 5 classes: top-5 is top-all
    few.update(Tensor(logits[:, :3]), Tensor(np.zeros(10, np.int32)))
    assert few.eval()["top5"] == 1.0
