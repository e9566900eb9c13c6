"""vit_ms.tools.flops: the analytic FLOP count against an independent count from the built model, and the
published figures."""
import numpy as np
import pytest

from vit_ms.config_loader import load_config
from vit_ms.models import create_model
from vit_ms.tools.flops import TRAIN_FACTOR, model_flops, vit_flops
from vit_ms.variants import resolve_architecture


def independent_flops(model, tokens: int) -> int:
    """2 x multiply-adds, read off the built model's weight shapes: each Linear on every token (the head on one),
    the patch projection on every patch, and q @ k^T plus attn @ v in every block."""
    total = 0
    for name, p in model.parameters_and_names():
        if not name.endswith("weight") or p.ndim < 2:
            continue
        if name.startswith("patch_embed"):
            total += 2 * (tokens - 1) * int(np.prod(p.shape))
        elif name.startswith("head") or name.startswith("pre_logits"):
            total += 2 * int(np.prod(p.shape))
        else:
            total += 2 * tokens * int(np.prod(p.shape))
    dim = model.arch.embed_dim
    return total + len(model.blocks) * 2 * 2 * tokens * tokens * dim


@pytest.mark.parametrize("kwargs", [dict(), dict(representation_size=24, mlp_ratio=2.0, num_classes=7)])
def test_flop_count_matches_an_independent_count(kwargs):
    args = dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5) | kwargs
    model = create_model("vit_ti16", **args)
    counted = vit_flops(args["image_size"], args["patch_size"], args["embed_dim"], args["depth"],
                        args.get("mlp_ratio", 4.0), args["num_classes"],
                        representation_size=args.get("representation_size"))
    assert counted["total"] == independent_flops(model, tokens=(32 // 8) ** 2 + 1)


def test_flops_of_published_sizes():
    # ViT-B/16: 17.56 GMACs, ViT-S/16: 4.6, ViT-Ti/16: 1.26 (the usual fvcore / DeiT figures)
    def gmacs(name):
        return model_flops(resolve_architecture(load_config(name).model))["total"] / 2e9

    assert gmacs("vit_b16") == pytest.approx(17.56, abs=0.01)
    assert gmacs("vit_s16") == pytest.approx(4.60, abs=0.01)
    assert gmacs("vit_ti16") == pytest.approx(1.25, abs=0.01)
    assert TRAIN_FACTOR == 3
