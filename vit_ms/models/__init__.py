"""ViT variants and the public factory.

    model = create_model("vit_b16", num_classes=1000, image_size=224, drop_path_rate=0.1)
"""
from typing import Optional

from ..errors import ConfigError
from ..variants import VARIANTS, variant_args
from .vit import VisionTransformer

def create_model(name: str, num_classes: int = 1000, image_size: int = 224, **overrides) -> VisionTransformer:
    """Build a named ViT variant; `overrides` replace any constructor argument (patch_size, depth, ...)."""
    args = variant_args(name)
    args.update({k: v for k, v in overrides.items() if v is not None})
    if image_size % args["patch_size"]:
        raise ConfigError(f"image_size={image_size} is not divisible by patch_size={args['patch_size']} "
                          f"of '{name}'; use a multiple of {args['patch_size']}")
    return VisionTransformer(image_size=image_size, num_classes=num_classes, **args)


def resolve_auto(choice: str, device_target: str, on_for: tuple) -> bool:
    """'auto' is on for the device targets in `on_for`; 'on'/'off' are explicit."""
    return device_target in on_for if choice == "auto" else choice == "on"


def model_from_config(mcfg, device_target: Optional[str] = "CPU", num_classes: Optional[int] = None) -> VisionTransformer:
    """Build the model a `ModelConfig` describes for `device_target` (resolves the 'auto' switches)."""
    fused = resolve_auto(mcfg.fused_attention, device_target, on_for=("Ascend",))
    if fused and device_target != "Ascend":
        raise ConfigError(f"model.fused_attention=on needs MindSpore's flash attention, which runs on Ascend only; "
                          f"this run targets {device_target}: use model.fused_attention=auto")
    patch_impl = mcfg.patch_embed if mcfg.patch_embed != "auto" else ("conv" if device_target == "Ascend" else "matmul")
    return create_model(
        mcfg.name,
        num_classes=mcfg.num_classes if num_classes is None else num_classes,
        image_size=mcfg.image_size,
        patch_size=mcfg.patch_size,
        embed_dim=mcfg.embed_dim,
        depth=mcfg.depth,
        num_heads=mcfg.num_heads,
        mlp_ratio=mcfg.mlp_ratio,
        in_channels=mcfg.in_channels,
        qkv_bias=mcfg.qkv_bias,
        drop_rate=mcfg.drop_rate,
        attn_drop_rate=mcfg.attn_drop_rate,
        drop_path_rate=mcfg.drop_path_rate,
        global_pool=mcfg.global_pool,
        representation_size=mcfg.representation_size,
        gelu=mcfg.gelu,
        norm_eps=mcfg.norm_eps,
        fused_attention=fused,
        patch_embed=patch_impl,
        custom_backward=device_target == "CPU",  # hand-written LayerNorm/GELU/softmax gradients: faster on CPU only
    )


__all__ = ["VARIANTS", "VisionTransformer", "create_model", "model_from_config", "variant_args"]
