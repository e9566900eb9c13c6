"""Optimizer, lr schedule and parameter groups: Adam/AdamW (mindcv's) or SGD with momentum; per-step cosine
schedule with warmup; weight-decay exemptions and layer-wise lr decay (BEiT / MAE fine-tuning).

    groups = parameter_groups(model, params, weight_decay=0.05, layer_decay=0.65)
    log.info(group_table(groups))
    optimizer = build_optimizer(model, params, cfg.optim, lr_schedule(cfg.optim, lr, epochs, steps_per_epoch))

The base lr is given for a global batch of `optim.lr_batch_size` images and scaled linearly to the real
global batch (Goyal et al. 2017; DeiT uses lr = 5e-4 * batch / 512). The lr table has one entry per optimizer
step; the optimizer reads the entry at its own step count, which a skipped (overflowed) step does not advance.

Parameter groups: layer ids follow BEiT/MAE (`param_groups_lrd` in MAE's util/lr_decay.py): the patch embedding,
class (and distillation) token and position embedding are layer 0, block i is layer i + 1, everything after the
blocks (final norm, fc_norm, pre-logits, head) is layer L + 1. A parameter of layer l trains at
lr x layer_decay^(L + 1 - l). Norms, biases, the position embedding and the class token get no weight decay
(`model.no_weight_decay()`), in every layer. With layer_decay 1.0 every lr scale is 1 and there are just two
groups: with and without weight decay.

`AdamW` is mindcv's AdamW (same update, state and names) run as one fused `AdamWeightDecay` kernel per parameter
instead of about fifteen elementwise ops.
"""
import logging
from dataclasses import dataclass, field
from typing import List

from mindcv.optim.adamw import AdamW as MindcvAdamW
from mindcv.scheduler import create_scheduler
from mindspore import jit, nn, ops

from ..errors import ConfigError

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


# Parameter groups

EMBEDDING_NAMES = ("patch_embed.", "cls_token", "dist_token", "pos_embed")


def layer_id(name: str, depth: int) -> int:
    """BEiT/MAE layer of a parameter: 0 for the embeddings, i + 1 for blocks.i, depth + 1 for the rest."""
    if name.startswith(EMBEDDING_NAMES):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


@dataclass
class ParamGroup:
    layer: int  # -1: all layers (layer decay off)
    lr_scale: float
    weight_decay: float
    params: List = field(default_factory=list)

    @property
    def num_elements(self) -> int:
        return sum(int(p.size) for p in self.params)


def parameter_groups(model, params, weight_decay: float, layer_decay: float = 1.0) -> List[ParamGroup]:
    """Split `params` by (layer when layer_decay != 1, decayed or not); empty groups are left out."""
    no_decay = model.no_weight_decay()
    depth = len(model.blocks) if layer_decay != 1.0 else 0  # `model` may only name the exempt parameters
    groups = {}
    for p in params:
        layer = layer_id(p.name, depth) if layer_decay != 1.0 else -1
        decay = 0.0 if p.name in no_decay else weight_decay
        scale = layer_decay ** (depth + 1 - layer) if layer_decay != 1.0 else 1.0
        groups.setdefault((layer, decay > 0), ParamGroup(layer, scale, decay)).params.append(p)
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], not k[1]))]


def group_table(groups: List[ParamGroup]) -> str:
    """The groups as a text table: layer, lr scale, weight decay, parameter tensors and elements."""
    lines = ["layer  lr scale  weight decay  tensors  parameters"]
    for g in groups:
        layer = "all" if g.layer < 0 else str(g.layer)
        lines.append(f"{layer:>5}  {g.lr_scale:8.5f}  {g.weight_decay:12g}  {len(g.params):7d}  {g.num_elements:10d}")
    return "\n".join(lines)


# The optimizer

_fused_adamw = ops.MultitypeFuncGraph("fused_adamw")


@_fused_adamw.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                       "Tensor", "Tensor", "Bool", "Bool")
def _fused_adamw_update(kernel, beta1, beta2, eps, decay_scale, lr, weight_decay, param, m, v, grad, decay_flag,
                        optim_filter):
    if optim_filter:  # the kernel updates param, m and v in place
        if decay_flag:
            kernel(param, m, v, lr, beta1, beta2, eps, weight_decay * decay_scale, grad.astype(param.dtype))
        else:
            kernel(param, m, v, lr, beta1, beta2, eps, 0.0, grad.astype(param.dtype))
    return True


class AdamW(MindcvAdamW):
    """mindcv's AdamW (bias-corrected moments, decoupled weight decay, as in PyTorch/DeiT), fused.

    `ops.AdamWeightDecay` computes w -= lr (m / (sqrt(v) + eps) + decay w) without bias correction, so the
    correction goes into its scalars: with c1 = 1 - beta1^t and c2 = sqrt(1 - beta2^t), lr' = lr c2 / c1,
    eps' = eps c2, decay' = decay c1 / c2 give lr' m / (sqrt(v) + eps') = lr m_hat / (sqrt(v_hat) + eps) and
    lr' decay' = lr decay: mindcv's update (within 1 ulp in float32). Same state (adam_m.*, adam_v.*,
    beta1_power, beta2_power, global_step), so checkpoints move between the two. Gradients arrive unscaled
    and clipped (TrainStep does both), so mindcv's loss-scale and clipping branches are not taken here.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kernel = ops.AdamWeightDecay()

    @jit
    def construct(self, gradients):
        lr = self.get_lr()
        beta1_power = self.beta1_power * self.beta1
        self.beta1_power = beta1_power
        beta2_power = self.beta2_power * self.beta2
        self.beta2_power = beta2_power
        c1 = 1.0 - beta1_power  # shape (1,), like beta1
        c2 = ops.sqrt(1.0 - beta2_power)
        # the kernel's scalars shaped as nn.AdamWeightDecay passes them: lr and decay (), eps (1,)
        eps, decay_scale, lr_scale = self.eps * c2, (c1 / c2).reshape(()), (c2 / c1).reshape(())
        if self.is_group_lr:
            result = self.hyper_map(
                ops.partial(_fused_adamw, self.kernel, self.beta1, self.beta2, eps, decay_scale),
                tuple(group_lr * lr_scale for group_lr in lr), self.weight_decay, self.parameters, self.moments1,
                self.moments2, gradients, self.decay_flags, self.optim_filter)
        elif self.is_group:
            result = self.hyper_map(
                ops.partial(_fused_adamw, self.kernel, self.beta1, self.beta2, eps, decay_scale, lr * lr_scale),
                self.weight_decay, self.parameters, self.moments1, self.moments2, gradients, self.decay_flags,
                self.optim_filter)
        else:
            result = self.hyper_map(
                ops.partial(_fused_adamw, self.kernel, self.beta1, self.beta2, eps, decay_scale, lr * lr_scale,
                            self.weight_decay),
                self.parameters, self.moments1, self.moments2, gradients, self.decay_flags, self.optim_filter)
        if self.use_parallel:
            self.broadcast_params(result)
        return result


def trainable_parameters(model, freeze_backbone: bool) -> list:
    """What the optimizer trains: every trainable weight, or with train.freeze_backbone the head(s) alone."""
    if not freeze_backbone:
        return model.trainable_params()
    if model.head is None:
        raise ConfigError("train.freeze_backbone=true needs a classification head (model.num_classes > 0)")
    heads = [model.head] + ([model.head_dist] if model.distilled else [])  # a distilled model's two heads
    return [p for head in heads for p in head.trainable_params()]


def build_optimizer(model, params, ocfg, lrs: List[float]) -> nn.Optimizer:
    """Adam/AdamW/SGD over `params` in parameter groups (`parameter_groups`): weight-decay exemptions and, with
    optim.layer_decay < 1, one lr table per layer (the schedule `lrs` times the layer's scale)."""
    groups = parameter_groups(model, params, ocfg.weight_decay, ocfg.layer_decay)
    log.info("optimizer %s, parameter groups:\n%s", ocfg.name, group_table(groups))
    spec = [{"params": g.params, "weight_decay": g.weight_decay,
             **({"lr": [x * g.lr_scale for x in lrs]} if ocfg.layer_decay != 1.0 else {})} for g in groups]
    spec.append({"order_params": params})
    if ocfg.name == "sgd":
        # PyTorch's SGD: v = momentum v + g (g including the L2 decay term), w -= lr v (nesterov: lr (g + momentum v))
        return nn.SGD(spec, learning_rate=lrs, momentum=ocfg.momentum, nesterov=ocfg.nesterov,
                      weight_decay=ocfg.weight_decay)
    # mindcv's create_optimizer cannot take parameter groups, so AdamW (mindcv's bias-corrected, decoupled
    # decay, as in PyTorch/DeiT; fused above) is built directly; nn.Adam adds decay to the gradient (L2).
    optimizer_cls = AdamW if ocfg.name == "adamw" else nn.Adam
    return optimizer_cls(spec, learning_rate=lrs, beta1=ocfg.betas[0], beta2=ocfg.betas[1], eps=ocfg.eps,
                         weight_decay=ocfg.weight_decay)
