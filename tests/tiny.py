"""The tiny ViT every test uses, defined once: patches of 8 at 32 px, width 32, 2 heads.

    model = tiny_model(num_classes=3)                   # vit_ti16 shrunk; **kw overrides any setting
    args = tiny_overrides(depth=1, num_classes=3)       # the same as --set model.key=value strings
"""
from vit_ms.models import create_model

TINY_ARCH = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2)
TINY_IMAGE_SIZE = 32


def tiny_model(num_classes: int = 3, image_size: int = TINY_IMAGE_SIZE, **kw):
    return create_model("vit_ti16", num_classes=num_classes, image_size=image_size, **{**TINY_ARCH, **kw})


def tiny_overrides(**kw) -> list:
    """`model.key=value` overrides for the tiny ViT (`kw` changes or adds model.* keys)."""
    values = {"name": "vit_ti16", **TINY_ARCH, "image_size": TINY_IMAGE_SIZE, **kw}
    return [f"model.{key}={value}" for key, value in values.items()]
