"""One optimizer step of training, and its builder from the run plan.

`TrainStep` is MindSpore's loss-scaled train step plus gradient accumulation, gradient clipping after the
data-parallel all-reduce, and the EMA of the weights. It returns (loss, overflow, loss_scale); an overflowed step
leaves the weights, the optimizer's state and the EMA unchanged. Under amp O0 there is nothing to unscale and
float32 gradients of a finite loss do not overflow, so the step checks the loss alone (`check_loss_only`): a
non-finite loss still skips the update and reports overflow.

Gradient accumulation (`accum_steps` k > 1): the data pipeline stacks k micro-batches of b images (each mixed up
on its own) into one step's input, images (k, b, C, H, W) and labels (k, b) or (k, b, classes). The step runs
forward and backward on each in turn (the next micro-batch waits for the previous gradients, so only one
micro-batch's activations are alive at a time), sums the gradients scaled by 1/k, and the sum goes through the
usual tail: unscale, one data-parallel all-reduce, overflow check on the sum (a non-finite micro-batch skips the
whole step), clipping, the optimizer, the EMA. Because one call is one optimizer step, the lr schedule, logging,
checkpoints and resume all count optimizer steps, and a checkpoint never falls inside an accumulation cycle.

`build_train_step` puts the plan's amp level, loss and loss scaling around the model and returns the step.
"""
from typing import List, Optional, Tuple

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..models import apply_amp
from .losses import loss_network
from .ema import WeightEma
from .optim import build_optimizer, lr_schedule, scaled_lr, trainable_parameters

_unscale = ops.MultitypeFuncGraph("unscale")


@_unscale.register("Tensor", "Tensor")
def _unscale_grad(scale, grad):
    return grad * ops.reciprocal(scale).astype(grad.dtype)


class TrainStep(nn.TrainOneStepWithLossScaleCell):
    """One optimizer step: forward, scaled backward (over `accum_steps` micro-batches), all-reduce, overflow
    check, clip, update.

    The step is one class on purpose: MindSpore's graph compiler resolves `super()` inside a method by the
    instance's class, so a subclass of this step whose inherited method called `super()` would call itself
    (an Ascend run with accumulation stopped at compile with "Exceed function call depth limit").
    """

    def __init__(self, network: nn.Cell, optimizer: nn.Optimizer, scale_sense, clip_grad_norm: float = 0.0,
                 float_status: bool = False, check_loss_only: bool = False, ema: Optional[nn.Cell] = None,
                 accum_steps: int = 1):
        super().__init__(network, optimizer, scale_sense)
        if accum_steps < 1:
            raise ValueError(f"accum_steps={accum_steps} must be >= 1")
        self.accum_steps = accum_steps
        self.ema = ema  # vit_ms.train.ema.WeightEma: updated after each applied step, never after a skipped one
        self.clip_grad_norm = clip_grad_norm
        # Ascend reports overflow in float-status registers (MindSpore's base class reads them); CPU and GPU
        # check the gradients for inf/nan instead, all-reduced across ranks.
        self.infnan_check = not float_status
        # Unit scale, float32 (amp O0 off Ascend): no unscaling, and one isfinite on the loss instead of all gradients.
        self.check_loss_only = check_loss_only and self.infnan_check

    def get_overflow_status(self, status, compute_output):
        if not self.infnan_check:
            return super().get_overflow_status(status, compute_output)
        overflow = ops.logical_not(ms.amp.all_finite(compute_output)).astype(ms.float32)
        if self.is_distributed:  # every rank must skip the same steps
            overflow = self.allreduce(overflow)
        return overflow > 0

    def forward_backward(self, inputs, sens):
        """The loss and the gradients of (loss x sens); with accumulation the mean loss over the micro-batches
        and the gradients of (mean loss x sens)."""
        if self.accum_steps == 1:
            loss = self.network(*inputs)
            return loss, self.grad(self.network, self.weights)(*inputs, ops.ones_like(loss) * sens.astype(loss.dtype))
        images, labels = inputs  # (k, b, C, H, W), (k, b) or (k, b, classes)
        k = self.accum_steps
        loss = self.network(images[0], labels[0])
        micro_sens = ops.ones_like(loss) * (sens / k).astype(loss.dtype)
        grads = self.grad(self.network, self.weights)(images[0], labels[0], micro_sens)
        for i in range(1, k):
            x = ops.depend(images[i], grads)  # micro-batch i starts after the gradients of i - 1
            loss = loss + self.network(x, labels[i])
            grads = self.hyper_map(ops.add, grads, self.grad(self.network, self.weights)(x, labels[i], micro_sens))
        return loss / k, grads

    def construct(self, *inputs):
        scale = self.scale_sense * 1.0  # the scale this step used (the parameter may be updated below)
        if self.check_loss_only:
            loss, grads = self.forward_backward(inputs, ops.ones_like(scale))
            grads = self.grad_reducer(grads)  # mean over data-parallel ranks
            overflow = ops.logical_not(ops.isfinite(loss)).astype(ms.float32)
            if self.is_distributed:  # every rank must skip the same steps
                overflow = self.allreduce(overflow)
            overflow = overflow > 0
        else:
            loss, grads = self.forward_backward(inputs, scale)
            grads = self.hyper_map(ops.partial(_unscale, scale), grads)
            grads = self.grad_reducer(grads)  # mean over data-parallel ranks
            overflow = self.get_overflow_status(Tensor([0] * 8, ms.int32), grads)
            overflow = self.process_loss_scale(overflow)  # adjusts a dynamic scale
        if self.clip_grad_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_grad_norm)
        # A tensor condition: at jit_level O0/O1 MindSpore builds it as ConditionSwitch kernels, run by its
        # kernel-by-kernel sub-graph execution (see vit_ms.tools.dryrun for the host threads that needs).
        if not overflow:
            loss = ops.depend(loss, self.optimizer(grads))
            if self.ema is not None:
                loss = ops.depend(loss, self.ema(self.weights))  # reads the weights the optimizer just wrote
        return loss, overflow, scale


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
    distillation against the frozen `teacher`: vit_ms.train.distill), the train step with the plan's
    accumulation and, with train.ema, the float32 average of the trained weights (taken before amp casts
    anything)."""
    ema = WeightEma(optimizer.parameters, cfg.train.ema_decay, cfg.train.ema_warmup) if cfg.train.ema else None
    net_with_loss = loss_network(apply_amp(model, plan), cfg, teacher)
    return TrainStep(net_with_loss, optimizer, loss_scale_sense(plan), cfg.optim.clip_grad_norm,
                     float_status=plan.float_status_overflow, check_loss_only=plan.check_loss_only, ema=ema,
                     accum_steps=plan.accum_steps)


def build_training(cfg, plan, model: nn.Cell, epochs: int, steps_per_epoch: int, teacher: Optional[nn.Cell] = None,
                   decay_rule=None) -> Tuple[TrainStep, List[float]]:
    """The optimizer over what train.freeze_backbone leaves trainable, with the config's lr table for `epochs` of
    `steps_per_epoch` steps, and the train step over it: (train step, lrs). train.py, the benchmark and the dry run
    build their steps here. `decay_rule`: the object whose no_weight_decay() names the exempt parameters
    (default: the model; the benchmark passes mindcv's ViT its own)."""
    lrs = lr_schedule(cfg.optim, scaled_lr(cfg.optim, plan.global_batch_size), epochs, steps_per_epoch)
    optimizer = build_optimizer(decay_rule or model, trainable_parameters(model, cfg.train.freeze_backbone),
                                cfg.optim, lrs)
    return build_train_step(model, optimizer, cfg, plan, teacher), lrs
