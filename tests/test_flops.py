"""vit_ms.tools.flops: the analytic FLOP count against an independent count from the built model, and the
published figures."""
import numpy as np
import pytest

from vit_ms.config_loader import load_config
from vit_ms.models import create_model
from vit_ms.tools.flops import TRAIN_FACTOR, model_flops, vit_flops
from vit_ms.variants import resolve_architecture


def matrix_products(model, tokens: int) -> list:
    """(M, K, N) of every matrix product of one image's forward pass, read off the built model's weight shapes:
    each Linear on every token (the head on one), the patch projection on every patch, and q @ k^T plus attn @ v
    in every block."""
    products = []
    for name, p in model.parameters_and_names():
        if not name.endswith("weight") or p.ndim < 2:
            continue
        out_features, in_features = p.shape[0], int(np.prod(p.shape[1:]))
        rows = tokens - 1 if name.startswith("patch_embed") else 1 if name.startswith(("head", "pre_logits")) \
            else tokens
        products.append((rows, in_features, out_features))
    dim = model.arch.embed_dim
    return products + [(tokens, dim, tokens), (tokens, tokens, dim)] * len(model.blocks)


def independent_flops(model, tokens: int) -> int:
    """2 x multiply-adds of the forward pass."""
    return sum(2 * m * k * n for m, k, n in matrix_products(model, tokens))


def independent_train_flops(model, tokens: int) -> int:
    """A training step's products: for each forward A (M, K) @ B (K, N), the gradient of A is dY (M, N) @ B^T
    (N, K) and that of B is A^T (K, M) @ dY (M, N)."""
    return sum(2 * m * k * n + 2 * m * n * k + 2 * k * m * n for m, k, n in matrix_products(model, tokens))


@pytest.mark.parametrize("kwargs", [dict(), dict(representation_size=24, mlp_ratio=2.0, num_classes=7)])
def test_flop_count_matches_an_independent_count(kwargs):
    args = dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5) | kwargs
    model = create_model("vit_ti16", **args)
    counted = vit_flops(args["image_size"], args["patch_size"], args["embed_dim"], args["depth"],
                        args.get("mlp_ratio", 4.0), args["num_classes"],
                        representation_size=args.get("representation_size"))
    tokens = (32 // 8) ** 2 + 1
    assert counted["total"] == independent_flops(model, tokens)
    assert TRAIN_FACTOR * counted["total"] == independent_train_flops(model, tokens)


def test_flops_of_published_sizes():
    # ViT-B/16: 17.56 GMACs, ViT-S/16: 4.6, ViT-Ti/16: 1.26 (the usual fvcore / DeiT figures)
    def gmacs(name):
        return model_flops(resolve_architecture(load_config(name).model))["total"] / 2e9

    assert gmacs("vit_b16") == pytest.approx(17.56, abs=0.01)
    assert gmacs("vit_s16") == pytest.approx(4.60, abs=0.01)
    assert gmacs("vit_ti16") == pytest.approx(1.25, abs=0.01)
