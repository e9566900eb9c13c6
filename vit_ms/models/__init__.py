"""The ViT model: architecture table, layers, formulations and the factory.

    model = create_model("vit_b16", num_classes=1000, image_size=224, drop_path_rate=0.1)
    model = model_from_plan(plan)      # a run's architecture, in the formulation its plan chose
    network = apply_amp(model, plan)   # what to compute with under the plan's amp level and dtype

Modules, small to large (the variants table and `Architecture` are in `vit_ms/variants.py`): `layers`
(Linear, LayerNorm, GELU, ...), `handwritten` (the same layers with written-out gradients), `attention` (the attention cores),
`formulations` (which implementation each layer gets), `vit` (the model).
"""
import mindspore as ms
from mindspore import nn

from .formulations import Formulation
from ..variants import VARIANTS, Architecture, architecture, resolve_architecture, variant_args
from .vit import VisionTransformer


def create_model(name: str, num_classes: int = 1000, image_size: int = 224, *,
                 formulation: Formulation = Formulation(), **overrides) -> VisionTransformer:
    """Build a named ViT variant; `overrides` replace any architecture setting (patch_size, depth, ...)."""
    return VisionTransformer(architecture(name, num_classes=num_classes, image_size=image_size, **overrides),
                             formulation)


def model_from_plan(plan) -> VisionTransformer:
    """The model a run plan describes (`vit_ms.plan.RunPlan`): its architecture and formulation, with each block
    recomputed in the backward pass when the plan says so."""
    model = VisionTransformer(plan.arch, plan.formulation)
    if plan.recompute_blocks:
        for block in model.blocks:
            block.recompute()
    return model


def apply_amp(model: nn.Cell, plan) -> nn.Cell:
    """The network to compute with under the plan's amp level and dtype (`model` itself under O0).

    O2/O3 mark `model`'s cells in place (LayerNorm and softmax keep their float32 mark, `layers.Float32UnderAmp`);
    `model` is returned, its logits in the amp dtype (the loss and the eval network cast them to float32).
    O1 rewrites the network: MindSpore returns a new top-level cell with casts around the matmuls, sharing
    `model`'s parameters, and that is the one returned. The rewrite keeps its generated source in
    ./rewritten_network (MindSpore's choice of folder).
    """
    if plan.amp_level == "O0":
        return model
    dtype = ms.bfloat16 if plan.amp_dtype == "bfloat16" else ms.float16
    network = ms.amp.auto_mixed_precision(model, plan.amp_level, dtype=dtype)
    return network if plan.amp_level == "O1" else model


__all__ = ["VARIANTS", "Architecture", "Formulation", "VisionTransformer", "apply_amp", "architecture", "create_model",
           "model_from_plan", "resolve_architecture", "variant_args"]
