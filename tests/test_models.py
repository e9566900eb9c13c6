"""The ViT: parameter counts of every variant, shapes, options, and the numerics of its pieces."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore.nn.utils import no_init_parameters

from vit_ms.errors import ConfigError
from vit_ms.models import VARIANTS, create_model
from vit_ms.models.layers import GELU, DropPath, LayerNorm, Linear

ms.set_context(mode=ms.PYNATIVE_MODE)


def param_count(model) -> int:
    return sum(int(np.prod(p.shape)) for p in model.get_parameters())


def expected_count(patch, dim, depth, classes=1000, image=224, mlp_ratio=4, channels=3) -> int:
    """Independent count from the architecture: embedding, blocks, final norm, head."""
    tokens = (image // patch) ** 2 + 1
    hidden = int(dim * mlp_ratio)
    embed = channels * patch * patch * dim + dim + dim + tokens * dim
    block = 2 * 2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * hidden + hidden) + (hidden * dim + dim)
    return embed + depth * block + 2 * dim + dim * classes + classes


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_parameter_counts(name):
    v = VARIANTS[name]
    image = 224
    with no_init_parameters():  # shapes only: skips sampling ViT-H's 632M initial values
        model = create_model(name, num_classes=1000, image_size=image)
    assert param_count(model) == expected_count(v["patch_size"], v["embed_dim"], v["depth"], image=image)


def test_vit_b16_has_86_6m_parameters():
    with no_init_parameters():
        assert round(param_count(create_model("vit_b16")) / 1e6, 1) == 86.6


def test_parameter_names_follow_timm():
    names = [p.name for p in create_model("vit_ti16", num_classes=5, image_size=32, depth=1).get_parameters()]
    assert names[:4] == ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for part in ["norm1.weight", "attn.qkv.weight", "attn.proj.bias", "norm2.bias", "mlp.fc1.weight", "mlp.fc2.bias"]:
        assert f"blocks.0.{part}" in names
    assert names[-4:] == ["norm.weight", "norm.bias", "head.weight", "head.bias"]


@pytest.mark.parametrize("image_size, patch", [(32, 16), (48, 16), (64, 32), (28, 14)])
def test_forward_shapes_at_any_divisible_size(image_size, patch):
    model = create_model("vit_ti16", num_classes=7, image_size=image_size, patch_size=patch, depth=1)
    model.set_train(False)
    assert model.pos_embed.shape == (1, (image_size // patch) ** 2 + 1, 192)
    out = model(ms.Tensor(np.random.randn(2, 3, image_size, image_size).astype(np.float32)))
    assert out.shape == (2, 7)


def test_options_pool_prelogits_and_headless():
    x = ms.Tensor(np.random.randn(2, 3, 32, 32).astype(np.float32))
    avg = create_model("vit_ti16", num_classes=4, image_size=32, depth=1, global_pool="avg")
    avg.set_train(False)
    assert avg(x).shape == (2, 4)
    pre = create_model("vit_ti16", num_classes=4, image_size=32, depth=1, representation_size=16)
    assert pre.pre_logits.fc.weight.shape == (16, 192) and pre.head.weight.shape == (4, 16)
    headless = create_model("vit_ti16", num_classes=0, image_size=32, depth=1)
    headless.set_train(False)
    assert headless(x).shape == (2, 192)


def test_unknown_variant_and_bad_size_raise():
    with pytest.raises(ConfigError, match="valid names: vit_ti16"):
        create_model("vit_x16")
    with pytest.raises(ConfigError, match="not divisible by model.patch_size=16"):
        create_model("vit_ti16", image_size=30)


def test_plain_attention_matches_numpy_softmax_attention():
    model = create_model("vit_ti16", num_classes=3, image_size=32, depth=1, num_heads=3)
    attn = model.blocks[0].attn
    attn.set_train(False)
    x = np.random.randn(2, 5, 192).astype(np.float32)
    w, b = attn.qkv.weight.asnumpy(), attn.qkv.bias.asnumpy()
    qkv = (x @ w.T + b).reshape(2, 5, 3, 3, 64).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(64)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(2, 5, 192)
    ref = o @ attn.proj.weight.asnumpy().T + attn.proj.bias.asnumpy()
    assert np.abs(attn(ms.Tensor(x)).asnumpy() - ref).max() < 1e-4


def test_layers_against_numpy():
    from math import erf
    x = np.linspace(-4, 4, 41).astype(np.float32)
    exact = np.array([0.5 * v * (1 + erf(v / math.sqrt(2))) for v in x])
    assert np.abs(GELU("erf")(ms.Tensor(x)).asnumpy() - exact).max() < 1e-5
    tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert np.abs(GELU("tanh")(ms.Tensor(x)).asnumpy() - tanh).max() < 1e-5
    y = np.random.randn(4, 6).astype(np.float32)
    ln = LayerNorm(6, eps=1e-6)
    ref = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-6)
    assert np.abs(ln(ms.Tensor(y)).asnumpy() - ref).max() < 1e-5
    lin = Linear(6, 3)
    z = np.random.randn(2, 4, 6).astype(np.float32)
    assert np.abs(lin(ms.Tensor(z)).asnumpy() - (z @ lin.weight.asnumpy().T + lin.bias.asnumpy())).max() < 1e-5


def test_drop_path_drops_whole_samples_and_rates_grow_with_depth():
    dp = DropPath(0.5)
    dp.set_train(True)
    out = dp(ms.Tensor(np.ones((64, 3, 4), np.float32))).asnumpy()
    per_sample = out.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    dp.set_train(False)
    assert (dp(ms.Tensor(np.ones((2, 3), np.float32))).asnumpy() == 1).all()
    model = create_model("vit_ti16", num_classes=3, image_size=32, depth=4, drop_path_rate=0.3)
    assert [b.drop_path.p for b in model.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_no_weight_decay_names():
    model = create_model("vit_ti16", num_classes=3, image_size=32, depth=1)
    names = model.no_weight_decay()
    assert {"cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "head.bias"} <= names
    assert "blocks.0.attn.qkv.weight" not in names and "patch_embed.proj.weight" not in names
