"""The losses of training: label-smoothed cross-entropy on class indices, soft-target cross-entropy on
mixup/cutmix labels, and DeiT's distillation loss (Touvron et al., 2021, section 5 and facebookresearch/deit
`DistillationLoss`).

    net_with_loss = loss_network(model, cfg, teacher)     # (images, labels) -> scalar loss, the teacher inside

Logits are cast to float32 before the loss so O2 (fp16 network) keeps a float32 loss.

The student's class head learns the labels (`ClassificationLoss`: label smoothing, or mixup/cutmix soft targets);
its distillation head (model.distilled; the class head itself for a plain ViT, as in classic knowledge
distillation) learns the frozen teacher's predictions on the same augmented images:

    hard:  CE(dist_logits, argmax(teacher_logits))
    soft:  KL(softmax(teacher / tau) || softmax(dist / tau)) x tau^2, summed and divided by B x K as DeiT does
    loss = (1 - alpha) x base + alpha x distillation                      (type none: base on the class head)

The teacher (`FrozenTeacher`) runs forward only inside the train step: its parameters are frozen, named under
`TEACHER_PREFIX` so checkpoints leave them out, and it stays in inference mode when the step is set to train.
"""
import mindspore as ms
from mindspore import nn, ops

from ..weights.checkpoint import TEACHER_PREFIX

DISTILL_TYPES = ("none", "hard", "soft")


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


class FrozenTeacher(nn.Cell):
    """A teacher network held in inference mode, without gradients: images (B, C, H, W) -> float32 logits (B, K)."""

    def __init__(self, network: nn.Cell):
        super().__init__(auto_prefix=False)
        for param in network.get_parameters():
            param.requires_grad = False
            if not param.name.startswith(TEACHER_PREFIX):  # apart from the student's names, and left out of saves
                param.name = TEACHER_PREFIX + param.name
        self.network = network
        network.set_train(False)

    def add_flags_recursive(self, **flags):
        """`set_train(True)` on the train step reaches here: the teacher stays in inference mode (dropout off,
        BatchNorm on its running statistics)."""
        if "training" in flags:
            flags = dict(flags, training=False)
        return super().add_flags_recursive(**flags)

    def construct(self, images):
        return ops.stop_gradient(self.network(images).astype(ms.float32))


def distillation_term(kind: str, dist_logits, teacher_logits, tau: float):
    """The distillation loss of (B, K) student logits against (B, K) teacher logits (both float32)."""
    if kind == "hard":
        return ops.cross_entropy(dist_logits, teacher_logits.argmax(axis=-1).astype(ms.int32))
    log_p = ops.log_softmax(dist_logits / tau, axis=-1)  # student
    log_q = ops.log_softmax(teacher_logits / tau, axis=-1)  # teacher
    return (ops.exp(log_q) * (log_q - log_p)).sum() * (tau * tau) / dist_logits.size  # DeiT: / numel, not / B


class DistillationWithLoss(nn.Cell):
    """student + frozen teacher + DeiT's loss: (images, labels) -> scalar loss.

    A distilled student in training mode returns (class logits, distillation logits); a plain one its logits,
    which then take both terms. `teacher` None (distill.type none): the class-head loss alone.
    """

    def __init__(self, network: nn.Cell, base_loss: nn.Cell, teacher=None, kind: str = "none", alpha: float = 0.5,
                 tau: float = 1.0):
        super().__init__(auto_prefix=False)
        if kind not in DISTILL_TYPES or (kind == "none") != (teacher is None):
            raise ValueError(f"distillation type {kind!r} with teacher {type(teacher).__name__}: a teacher goes with "
                             f"type hard or soft, none without one")
        self.network = network
        self.two_heads = bool(getattr(network, "distilled", False))
        self.base_loss = base_loss
        self.teacher = teacher
        self.kind = kind
        self.alpha = alpha
        self.tau = tau

    def construct(self, images, labels):
        if self.two_heads:
            logits, dist_logits = self.network(images)  # (B, K) each
        else:
            logits = self.network(images)
            dist_logits = logits
        base = self.base_loss(logits, labels)
        if self.teacher is None:
            return base
        teacher_logits = self.teacher(images)
        term = distillation_term(self.kind, dist_logits.astype(ms.float32), teacher_logits, self.tau)
        return base * (1.0 - self.alpha) + term * self.alpha


def loss_network(model: nn.Cell, cfg, teacher=None) -> nn.Cell:
    """The network with its loss for the train step: `WithLoss` for a plain ViT without a teacher, DeiT's
    distillation loss otherwise (a distilled ViT without a teacher trains its class head alone, as DeiT does)."""
    base = ClassificationLoss(cfg.loss.label_smoothing)
    if teacher is None and not getattr(model, "distilled", False):  # any Cell, not only our ViT
        return WithLoss(model, base)
    return DistillationWithLoss(model, base, FrozenTeacher(teacher) if teacher is not None else None,
                                cfg.distill.type if teacher is not None else "none", cfg.distill.alpha,
                                cfg.distill.tau)
