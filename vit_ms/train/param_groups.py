"""Parameter groups for the optimizer: weight-decay exemptions and layer-wise lr decay (BEiT / MAE fine-tuning).

    groups = parameter_groups(model, params, weight_decay=0.05, layer_decay=0.65)
    log.info(group_table(groups))

Layer ids follow BEiT/MAE (`param_groups_lrd` in MAE's util/lr_decay.py): the patch embedding, class (and distillation)
token and position embedding are layer 0, block i is layer i + 1, everything after the blocks (final norm, fc_norm,
pre-logits, head) is layer L + 1. A parameter of layer l trains at lr x layer_decay^(L + 1 - l). Norms, biases,
the position embedding and the class token get no weight decay (`model.no_weight_decay()`), in every layer.
With layer_decay 1.0 every lr scale is 1 and there are just two groups: with and without weight decay.
"""
from dataclasses import dataclass, field
from typing import List

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
