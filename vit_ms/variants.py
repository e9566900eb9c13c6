"""The ViT variants as a plain table (no MindSpore import, so configs can be checked before it loads)."""
from .errors import ConfigError, suggest

# name: patch size, width, depth, heads (MLP ratio 4 throughout), as in the ViT paper and DeiT (Ti, S).
VARIANTS = {
    "vit_ti16": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "vit_s16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "vit_b16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_b32": dict(patch_size=32, embed_dim=768, depth=12, num_heads=12),
    "vit_l16": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    "vit_l32": dict(patch_size=32, embed_dim=1024, depth=24, num_heads=16),
    "vit_h14": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
}


def variant_args(name: str) -> dict:
    """The architecture of a named variant; raises with the valid names for an unknown one."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown model '{name}'{suggest(name, VARIANTS)}; valid names: {', '.join(VARIANTS)}")
    return dict(VARIANTS[name])
