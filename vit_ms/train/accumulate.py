"""Gradient accumulation: one optimizer step over `accum_steps` micro-batches, inside one train-step call.

The data pipeline stacks k micro-batches of b images (each mixed up on its own) into one step's input,
images (k, b, C, H, W) and labels (k, b) or (k, b, classes); `AccumulatingTrainStep` runs forward and backward
on each in turn (the next micro-batch waits for the previous gradients, so only one micro-batch's activations
are alive at a time), sums the gradients scaled by 1/k, and hands the sum to `TrainStep`'s usual tail: unscale,
one data-parallel all-reduce, overflow check on the sum (a non-finite micro-batch skips the whole step),
clipping, the optimizer, the EMA. Because one call is one optimizer step, the lr schedule, logging, checkpoints
and resume all count optimizer steps, and a checkpoint never falls inside an accumulation cycle.
"""
from mindspore import ops

from .step import TrainStep


class AccumulatingTrainStep(TrainStep):
    """TrainStep whose inputs carry `accum_steps` micro-batches on their first axis."""

    def __init__(self, *args, accum_steps: int, **kwargs):
        super().__init__(*args, **kwargs)
        if accum_steps < 2:
            raise ValueError(f"accum_steps={accum_steps}: use TrainStep for a single micro-batch")
        self.accum_steps = accum_steps

    def forward_backward(self, inputs, sens):
        """Mean loss over the micro-batches and the gradients of (mean loss x sens)."""
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
