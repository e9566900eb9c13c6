"""The ViT variants as a plain table, and the one place a variant and its model.* overrides become an architecture.

    arch = resolve_architecture(cfg.model)      # variant merged with model.* overrides, checked once
    arch.patch_size, arch.embed_dim, arch.grid  # 16, 768, 14 for vit_b16 at 224 px

No MindSpore import, so configs are checked before it loads.
"""
from dataclasses import dataclass, fields
from typing import Optional

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
DEFAULT_MLP_RATIO = 4.0
IN_CHANNELS = 3  # RGB: the data pipeline decodes every image to RGB (grayscale converted), exports take RGB


@dataclass(frozen=True)
class Architecture:
    """Everything that fixes a ViT's function and parameter shapes (not how its layers are computed)."""
    name: str = "vit_b16"
    num_classes: int = 1000  # 0: no head (features)
    image_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = DEFAULT_MLP_RATIO
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    global_pool: str = "token"  # "token" or "avg"
    fc_norm: bool = False  # LayerNorm after the average pool in place of the final norm (timm, MAE)
    representation_size: Optional[int] = None
    gelu: str = "erf"  # "erf" or "tanh"
    norm_eps: float = 1e-6
    distilled: bool = False  # DeiT: a distillation token after the class token, and its own head (head_dist)

    @property
    def in_channels(self) -> int:
        return IN_CHANNELS

    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token, and the distillation token of a distilled model."""
        return 2 if self.distilled else 1

    @property
    def tokens(self) -> int:
        """Sequence length: the patches and the prefix tokens."""
        return self.num_patches + self.num_prefix_tokens

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


def variant_args(name: str) -> dict:
    """The architecture of a named variant; raises with the valid names for an unknown one."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown model '{name}'{suggest(name, VARIANTS)}; valid names: {', '.join(VARIANTS)}")
    return dict(VARIANTS[name], mlp_ratio=DEFAULT_MLP_RATIO)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def architecture(name: str, **overrides) -> Architecture:
    """`name`'s variant with `overrides` (None values keep the variant's), checked; raises ConfigError."""
    known = {f.name for f in fields(Architecture)}
    unknown = sorted(set(overrides) - known)
    _check(not unknown, f"unknown architecture setting(s) {unknown}; valid: {', '.join(sorted(known))}")
    args = variant_args(name)
    args.update({k: v for k, v in overrides.items() if v is not None})
    arch = Architecture(name=name, **args)
    _validate(arch)
    return arch


def resolve_architecture(mcfg, num_classes: Optional[int] = None) -> Architecture:
    """The architecture a `ModelConfig` describes: its variant merged with every model.* key that is set."""
    keys = [f.name for f in fields(Architecture) if f.name != "name"]
    overrides = {k: getattr(mcfg, k) for k in keys}
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return architecture(mcfg.name, **overrides)


def _validate(a: Architecture) -> None:
    _check(a.num_classes >= 0, f"model.num_classes={a.num_classes} must be >= 0 (0: no head)")
    _check(a.image_size > 0, f"model.image_size={a.image_size} must be positive")
    _check(a.patch_size > 0, f"model.patch_size={a.patch_size} must be positive")
    _check(a.image_size % a.patch_size == 0,
           f"model.image_size={a.image_size} is not divisible by model.patch_size={a.patch_size}; use a multiple "
           f"such as {max(1, a.image_size // a.patch_size) * a.patch_size}")
    _check(a.depth > 0, f"model.depth={a.depth} must be at least 1 (transformer blocks)")
    _check(a.num_heads > 0, f"model.num_heads={a.num_heads} must be positive")
    _check(a.embed_dim > 0 and a.embed_dim % a.num_heads == 0,
           f"model.embed_dim={a.embed_dim} is not divisible by model.num_heads={a.num_heads}; use a width that "
           f"is a multiple of the heads, e.g. {max(1, a.embed_dim // a.num_heads) * a.num_heads}")
    _check(a.mlp_ratio > 0, f"model.mlp_ratio={a.mlp_ratio} must be positive")
    for key in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
        value = getattr(a, key)
        _check(0.0 <= value < 1.0, f"model.{key}={value} must be in [0, 1)")
    _check(a.global_pool in ("token", "avg"), f"model.global_pool={a.global_pool!r} must be 'token' or 'avg'")
    _check(not a.fc_norm or a.global_pool == "avg",
           "model.fc_norm=true normalises the average of the patch tokens; set model.global_pool=avg too")
    _check(a.gelu in ("erf", "tanh"), f"model.gelu={a.gelu!r} must be 'erf' or 'tanh'")
    _check(a.norm_eps > 0, f"model.norm_eps={a.norm_eps} must be positive")
    _check(not a.distilled or (a.global_pool == "token" and a.representation_size is None),
           "model.distilled=true (DeiT's distillation token) reads its logits from the class and distillation "
           "tokens: set model.global_pool=token and model.representation_size=null")
    _check(a.representation_size is None or a.representation_size > 0,
           f"model.representation_size={a.representation_size} must be positive or null (no pre-logits layer)")
