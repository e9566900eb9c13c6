"""Model FLOPs of a ViT, counted from its architecture: 2 FLOPs per multiply-add, matrix products only.

    per_image = vit_flops(image_size=224, patch_size=16, embed_dim=192, depth=12)  # ViT-Ti/16
    per_image["total"]        # 2.51e9 forward FLOPs per image
    TRAIN_FACTOR * per_image["total"]   # a training step: the forward product and two in the backward

Counted: the patch embedding (a stride-P convolution = one (C*P*P -> D) product per patch), per block the qkv
projection, the attention scores (q @ k^T) and the weighted sum (attn @ v), the output projection and the two MLP
layers, and the head (on one token per image, after an optional pre-logits layer). Left out: LayerNorm, GELU,
softmax, bias and residual adds, about 1-2% of the total at ViT-Ti/S sizes.
"""
from typing import Dict, Optional


TRAIN_FACTOR = 3  # backward = grad wrt inputs + grad wrt weights, each as costly as the forward product


def vit_flops(image_size: int, patch_size: int, embed_dim: int, depth: int, mlp_ratio: float = 4.0,
              num_classes: int = 1000, in_channels: int = 3, representation_size: Optional[int] = None) -> Dict[str, int]:
    """Forward FLOPs per image, by part, and their `total`. The head count does not change the count."""
    patches = (image_size // patch_size) ** 2
    tokens = patches + 1  # with the class token
    d, hidden = embed_dim, int(embed_dim * mlp_ratio)
    features = representation_size or d
    parts = {
        "patch_embed": 2 * patches * (in_channels * patch_size * patch_size) * d,
        "qkv": depth * 2 * tokens * d * 3 * d,
        "attention": depth * 2 * (2 * tokens * tokens * d),  # scores and weighted sum, summed over heads
        "proj": depth * 2 * tokens * d * d,
        "mlp": depth * 2 * (2 * tokens * d * hidden),
        "head": 2 * d * (representation_size or 0) + 2 * features * num_classes,  # pre-logits, classifier
    }
    parts["total"] = sum(parts.values())
    return parts


def model_flops(arch) -> Dict[str, int]:
    """`vit_flops` for a `vit_ms.variants.Architecture`."""
    return vit_flops(arch.image_size, arch.patch_size, arch.embed_dim, arch.depth, arch.mlp_ratio, arch.num_classes,
                     arch.in_channels, arch.representation_size)
