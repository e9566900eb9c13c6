"""Our ViT's weights in timm's layout: a folder laid out like a Hugging Face model repository that timm loads.

    files = timm_folder(state, arch, data_cfg, class_names)   # {"model.safetensors": state, "config.json": dict}

`model.safetensors` holds timm's parameter names (ours are timm's: patch_embed.proj, cls_token, dist_token,
pos_embed, blocks.i..., norm / fc_norm, head, head_dist) as float32. `config.json` is what timm's hub loader
reads (`timm.models._hub`): the architecture (a timm model name), num_classes, num_features, global_pool,
`model_args` that rebuild exactly this ViT (size, depth, heads, patch, image size, pooling, GELU) and
`pretrained_cfg` (input size, interpolation, crop_pct, mean/std on the 0-1 scale, first_conv, classifier) plus
the class names as `label_names`. Pure functions: no MindSpore, no file access.
"""
from typing import Dict, List, Optional

import numpy as np

from ..errors import UserError
from ..variants import Architecture

# our model.name -> timm's name stem; a distilled ViT is timm's DeiT distilled model (tiny, small, base).
_TIMM_NAMES = {"vit_ti16": "tiny_patch16", "vit_s16": "small_patch16", "vit_b16": "base_patch16",
               "vit_b32": "base_patch32", "vit_l16": "large_patch16", "vit_l32": "large_patch32",
               "vit_h14": "huge_patch14"}
_DEIT_DISTILLED = {"vit_ti16": "deit_tiny", "vit_s16": "deit_small", "vit_b16": "deit_base"}


def check_exportable(arch: Architecture) -> None:
    """Raise UserError for a ViT that timm's VisionTransformer cannot compute exactly."""
    if arch.representation_size:
        raise UserError(f"model.representation_size={arch.representation_size}: timm's VisionTransformer has no "
                        f"pre-logits layer (timm removed it), so these weights cannot be written in its layout; "
                        f"fine-tune without it (model.representation_size=null drops it with the head)")
    if arch.norm_eps != 1e-6:
        raise UserError(f"model.norm_eps={arch.norm_eps}: timm's ViT uses LayerNorm eps 1e-6 and config.json cannot "
                        f"set another, so timm's outputs would differ from ours; fine-tune with "
                        f"model.norm_eps=1e-6 to export")


def timm_architecture(arch: Architecture) -> str:
    """The timm model name config.json names: timm's name for our model.name (`model_args` give any size
    overrides: timm's factories take them as keyword arguments)."""
    if arch.distilled:
        return f"{_DEIT_DISTILLED.get(arch.name, 'deit_base')}_distilled_patch16_224"
    stem = _TIMM_NAMES.get(arch.name, "base_patch16")
    size = arch.image_size if stem != "huge_patch14" and arch.image_size in (224, 384) else 224
    return f"vit_{stem}_{size}"


def model_args(arch: Architecture) -> dict:
    """Keyword arguments for timm.create_model that rebuild `arch` exactly, whatever the architecture name."""
    args = dict(img_size=arch.image_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim, depth=arch.depth,
                num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio, qkv_bias=arch.qkv_bias,
                global_pool=arch.global_pool, fc_norm=arch.fc_norm, class_token=True)
    if arch.gelu == "tanh":
        args["act_layer"] = "gelu_tanh"  # timm's get_act_layer name for nn.GELU(approximate='tanh')
    return args


def to_timm_state(state: Dict[str, np.ndarray], arch: Architecture,
                  trained_heads: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """Our weights (our names are timm's) as contiguous float32 arrays; raises on a name timm does not have.

    timm's distilled ViT predicts with (head(class token) + head_dist(distillation token)) / 2. When `head_dist`
    is not among the `trained_heads` (None: both were trained), `head` is written doubled and `head_dist` as
    zeros, so that mean is exactly the class head's logits, as our model predicts with such a checkpoint
    (vit_ms.loader.opener.use_trained_heads). A copy of `head` would not do: it would read the other token.
    """
    check_exportable(arch)
    known = ("patch_embed.", "blocks.", "norm.", "fc_norm.", "head.", "head_dist.")
    odd = sorted(k for k in state if not k.startswith(known) and k not in ("cls_token", "dist_token", "pos_embed"))
    if odd:
        raise UserError(f"weights {', '.join(odd[:5])} are not parameters of timm's ViT; give a checkpoint of a "
                        f"vit_ms ViT")
    tensors = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in state.items()}
    if untaught_dist_head(arch, trained_heads) and "head.weight" in tensors:
        for part in ("weight", "bias"):
            tensors[f"head.{part}"] = 2 * tensors[f"head.{part}"]  # (K, D), (K): exact in float32
            tensors[f"head_dist.{part}"] = np.zeros_like(tensors[f"head_dist.{part}"])
    return tensors


def untaught_dist_head(arch: Architecture, trained_heads: Optional[List[str]]) -> bool:
    """Whether `arch` has a `head_dist` that no teacher trained (`trained_heads` None: both were trained)."""
    return arch.distilled and trained_heads is not None and "head_dist" not in trained_heads


def hf_config(arch: Architecture, mean, std, interpolation: str, crop_pct: float,
              class_names: Optional[List[str]] = None) -> dict:
    """timm's config.json for `arch`; mean/std on our 0-255 scale (config.json takes 0-1)."""
    classifier = ["head", "head_dist"] if arch.distilled else "head"
    pretrained_cfg = {
        "tag": "vit_ms", "custom_load": False, "input_size": [3, arch.image_size, arch.image_size],
        "fixed_input_size": True, "interpolation": interpolation, "crop_pct": crop_pct, "crop_mode": "center",
        "mean": [round(m / 255.0, 6) for m in mean], "std": [round(s / 255.0, 6) for s in std],
        "num_classes": arch.num_classes, "pool_size": None, "first_conv": "patch_embed.proj",
        "classifier": classifier,
    }
    config = {"architecture": timm_architecture(arch), "num_classes": arch.num_classes,
              "num_features": arch.embed_dim, "global_pool": arch.global_pool, "model_args": model_args(arch),
              "pretrained_cfg": pretrained_cfg}
    if class_names and len(class_names) == arch.num_classes:
        config["label_names"] = list(class_names)
    return config
