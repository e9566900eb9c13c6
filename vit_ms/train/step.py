"""One optimizer step of training: `TrainStep`, MindSpore's loss-scaled train step plus gradient clipping after the
data-parallel all-reduce.

It returns (loss, overflow, loss_scale); an overflowed step leaves the weights unchanged. Under amp O0 there is
nothing to unscale and float32 gradients of a finite loss do not overflow, so the step checks the loss alone
(`check_loss_only`): a non-finite loss still skips the update and reports overflow. `vit_ms.train.accumulate`
extends it to several micro-batches per step; `vit_ms.train.engine.build_train_step` builds either from the plan.
"""
from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops


_unscale = ops.MultitypeFuncGraph("unscale")


@_unscale.register("Tensor", "Tensor")
def _unscale_grad(scale, grad):
    return grad * ops.reciprocal(scale).astype(grad.dtype)


class TrainStep(nn.TrainOneStepWithLossScaleCell):
    """One optimizer step: forward, scaled backward, all-reduce, overflow check, clip, update."""

    def __init__(self, network: nn.Cell, optimizer: nn.Optimizer, scale_sense, clip_grad_norm: float = 0.0,
                 float_status: bool = False, check_loss_only: bool = False, ema: Optional[nn.Cell] = None):
        super().__init__(network, optimizer, scale_sense)
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
        """The loss and the gradients of (loss x sens); `AccumulatingTrainStep` sums them over micro-batches."""
        loss = self.network(*inputs)
        grads = self.grad(self.network, self.weights)(*inputs, ops.ones_like(loss) * sens.astype(loss.dtype))
        return loss, grads

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
        if not overflow:
            loss = ops.depend(loss, self.optimizer(grads))
            if self.ema is not None:
                loss = ops.depend(loss, self.ema(self.weights))  # reads the weights the optimizer just wrote
        return loss, overflow, scale
