"""Optimizer and learning-rate schedule: Adam/AdamW (mindcv's) with a per-step cosine schedule and warmup.

The base lr is given for a global batch of `optim.lr_batch_size` images and scaled linearly to the real
global batch (Goyal et al. 2017; DeiT uses lr = 5e-4 * batch / 512). Norms, biases, the position embedding
and the class token get no weight decay.
"""
import logging
from typing import List

from mindcv.optim.adamw import AdamW
from mindcv.scheduler import create_scheduler
from mindspore import nn

log = logging.getLogger("vit_ms")


def scaled_lr(ocfg, global_batch: int) -> float:
    """lr = base_lr * global_batch / lr_batch_size (no scaling when lr_batch_size is 0)."""
    if ocfg.lr_batch_size <= 0:
        return ocfg.lr
    return ocfg.lr * global_batch / ocfg.lr_batch_size


def lr_schedule(ocfg, lr: float, epochs: int, steps_per_epoch: int) -> List[float]:
    """One lr per optimizer step: linear warmup from `warmup_lr`, then cosine decay to `min_lr`."""
    warmup = min(ocfg.warmup_epochs, epochs - 1) if epochs > 1 else 0
    lrs = create_scheduler(steps_per_epoch, scheduler="cosine_decay", lr=lr, min_lr=min(ocfg.min_lr, lr),
                           warmup_epochs=warmup, warmup_factor=min(ocfg.warmup_lr / lr, 1.0),
                           decay_epochs=epochs - warmup, num_epochs=epochs)
    return [float(x) for x in lrs]


def build_optimizer(model, params, ocfg, lrs: List[float], loss_scale: float = 1.0) -> nn.Optimizer:
    """Adam/AdamW over `params`, excluding `model.no_weight_decay()` names from weight decay."""
    no_decay = model.no_weight_decay()
    decay = [p for p in params if p.name not in no_decay]
    rest = [p for p in params if p.name in no_decay]
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay}, {"params": rest, "weight_decay": 0.0},
              {"order_params": params}]
    # mindcv's create_optimizer cannot take parameter groups, so its AdamW (bias-corrected, decoupled
    # decay, as in PyTorch/DeiT) is built directly; nn.Adam adds decay to the gradient (L2), as Adam does.
    optimizer_cls = AdamW if ocfg.name == "adamw" else nn.Adam
    return optimizer_cls(groups, learning_rate=lrs, beta1=ocfg.betas[0], beta2=ocfg.betas[1], eps=ocfg.eps,
                         weight_decay=ocfg.weight_decay, loss_scale=loss_scale)
