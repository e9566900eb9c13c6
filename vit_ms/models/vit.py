"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

Pre-norm encoder blocks, class token, learned position embedding, head on the class token (or on the mean
of the patch tokens with `global_pool="avg"`), optional pre-logits layer (Linear + tanh, the paper's
"representation size"). Defaults match the published weights: exact GELU, LayerNorm eps 1e-6, qkv bias.

Parameter names follow timm so converters stay short: patch_embed.proj, cls_token, pos_embed,
blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, pre_logits.fc, head.

Deviations from the reference code, not from the math: the patch embedding's stride-P convolution may run
as a reshape + matmul (`patch_embed="matmul"`), which computes the same function with the same (D, C, P, P)
weight and is several times faster on CPU; `custom_backward=True` gives LayerNorm, GELU and the attention
softmax hand-written gradients (same derivatives, faster CPU kernels; see layers.py).
"""
import math

import mindspore as ms
from mindspore import nn, ops

from .layers import GELU, DropPath, LayerNorm, Linear, Softmax, trunc_normal_parameter, zeros_parameter


class PatchEmbed(nn.Cell):
    """Split an image into P x P patches and project each to `embed_dim`: (B, C, H, W) -> (B, N, D)."""

    def __init__(self, image_size: int, patch_size: int, in_channels: int, embed_dim: int, impl: str = "matmul"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        if impl not in ("conv", "matmul"):
            raise ValueError(f"patch embedding impl must be 'conv' or 'matmul', got {impl!r}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        self.embed_dim = embed_dim
        self.use_conv = impl == "conv"
        self.proj = PatchProjection(in_channels, embed_dim, patch_size)
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        b, c, h, w = x.shape
        p, d = self.patch_size, self.embed_dim
        if self.use_conv:
            x = ops.conv2d(x, self.proj.weight, stride=p) + self.proj.bias.reshape(1, d, 1, 1)  # (B, D, h, w)
            return x.reshape(b, d, -1).transpose(0, 2, 1)  # (B, N, D)
        x = x.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)  # (B, h, w, C, P, P)
        x = x.reshape(-1, c * p * p)  # (B*N, C*P*P)
        x = self.matmul(x, self.proj.weight.reshape(d, -1)) + self.proj.bias  # (B*N, D)
        return x.reshape(b, -1, d)  # (B, N, D)


class PatchProjection(nn.Cell):
    """Holds the patch projection's parameters in conv layout: weight (D, C, P, P), bias (D,)."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int):
        super().__init__()
        fan_in = in_channels * patch_size * patch_size
        self.weight = trunc_normal_parameter((embed_dim, in_channels, patch_size, patch_size), "weight",
                                             std=math.sqrt(1.0 / fan_in))
        self.bias = zeros_parameter((embed_dim,), "bias")


class Attention(nn.Cell):
    """Multi-head self-attention with a fused qkv projection: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, fused: bool = False, custom_backward: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused = fused
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.attn_drop = nn.Dropout(p=attn_drop) if attn_drop > 0 else None
        self.proj_drop = nn.Dropout(p=proj_drop) if proj_drop > 0 else None
        self.q_matmul_k = ops.BatchMatMul(transpose_b=True)
        self.attn_matmul_v = ops.BatchMatMul()
        self.softmax = Softmax() if custom_backward else None  # else ops.softmax and its autodiff

    def construct(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x)  # (B, N, 3D)
        if self.fused:
            q, k, v = ops.split(qkv, d, axis=-1)  # (B, N, D) each, the "BSH" layout
            if qkv.dtype == ms.float32:  # the Ascend kernel takes float16/bfloat16 only (amp O0 runs)
                q, k, v = q.astype(ms.float16), k.astype(ms.float16), v.astype(ms.float16)
            out = ops.flash_attention_score(q, k, v, self.num_heads, scalar_value=self.scale, input_layout="BSH")
            out = out.astype(qkv.dtype)
        else:
            qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)  # (3, B, H, N, Dh)
            q, k, v = ops.split(qkv, 1, axis=0)  # (1, B, H, N, Dh) each
            q = q.squeeze(0) * self.scale  # scaling q is cheaper than scaling the (N, N) scores
            attn = self.q_matmul_k(q, k.squeeze(0))  # (B, H, N, N)
            if attn.dtype != ms.float32:  # softmax in float32 under O2, then back
                attn = ops.softmax(attn.astype(ms.float32), axis=-1).astype(q.dtype)
            elif self.softmax is not None:
                attn = self.softmax(attn)
            else:
                attn = ops.softmax(attn, axis=-1)
            if self.attn_drop is not None:
                attn = self.attn_drop(attn)
            out = self.attn_matmul_v(attn, v.squeeze(0))  # (B, H, N, Dh)
            out = out.transpose(0, 2, 1, 3).reshape(b, n, d)  # (B, N, D)
        out = self.proj(out)
        if self.proj_drop is not None:
            out = self.proj_drop(out)
        return out


class Mlp(nn.Cell):
    """Linear -> GELU -> Linear, with optional dropout: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, gelu: str = "erf", custom_backward: bool = False):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = GELU(gelu, custom_backward)
        self.fc2 = Linear(hidden_dim, dim)
        self.drop = nn.Dropout(p=drop) if drop > 0 else None

    def construct(self, x):
        x = self.act(self.fc1(x))
        if self.drop is not None:
            x = self.drop(x)
        x = self.fc2(x)
        if self.drop is not None:
            x = self.drop(x)
        return x


class Block(nn.Cell):
    """Pre-norm transformer encoder block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, gelu: str = "erf", norm_eps: float = 1e-6,
                 fused_attention: bool = False, custom_backward: bool = False):
        super().__init__()
        self.norm1 = LayerNorm(dim, norm_eps, custom_backward)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, fused_attention, custom_backward)
        self.norm2 = LayerNorm(dim, norm_eps, custom_backward)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop, gelu, custom_backward)
        self.drop_path = DropPath(drop_path)

    def construct(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class PreLogits(nn.Cell):
    """The original ViT's pre-logits layer: Linear + tanh (`representation_size`)."""

    def __init__(self, dim: int, representation_size: int):
        super().__init__()
        self.fc = Linear(dim, representation_size)

    def construct(self, x):
        return ops.tanh(self.fc(x))


class VisionTransformer(nn.Cell):
    """ViT classifier: (B, C, H, W) images -> (B, num_classes) logits (features when num_classes is 0)."""

    def __init__(self, image_size: int = 224, patch_size: int = 16, in_channels: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, global_pool: str = "token", representation_size: int = None,
                 gelu: str = "erf", norm_eps: float = 1e-6, fused_attention: bool = False,
                 patch_embed: str = "matmul", custom_backward: bool = False):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(image_size, patch_size, in_channels, embed_dim, patch_embed)
        self.cls_token = trunc_normal_parameter((1, 1, embed_dim), "cls_token", std=1e-6)
        self.pos_embed = trunc_normal_parameter((1, self.patch_embed.num_patches + 1, embed_dim), "pos_embed")
        self.pos_drop = nn.Dropout(p=drop_rate) if drop_rate > 0 else None
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear in depth
        self.blocks = nn.CellList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rates[i], gelu, norm_eps,
                  fused_attention, custom_backward)
            for i in range(depth)
        ])
        self.norm = LayerNorm(embed_dim, norm_eps, custom_backward)
        self.pre_logits = PreLogits(embed_dim, representation_size) if representation_size else None
        self.num_features = representation_size or embed_dim
        self.head = Linear(self.num_features, num_classes) if num_classes > 0 else None

    def forward_features(self, x):
        x = self.patch_embed(x)  # (B, N, D)
        cls = ops.broadcast_to(self.cls_token.astype(x.dtype), (x.shape[0], 1, self.embed_dim))  # (B, 1, D)
        x = ops.concat((cls, x), axis=1) + self.pos_embed.astype(x.dtype)  # (B, N+1, D)
        if self.pos_drop is not None:
            x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # (B, N+1, D)

    def forward_head(self, x):
        x = x[:, 1:].mean(axis=1) if self.global_pool == "avg" else x[:, 0]  # (B, D)
        if self.pre_logits is not None:
            x = self.pre_logits(x)
        if self.head is not None:
            x = self.head(x)
        return x

    def construct(self, x):
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set:
        """Names of parameters exempt from weight decay: biases, norm weights, position embedding, class token."""
        return {p.name for p in self.trainable_params() if p.ndim <= 1} | {self.cls_token.name, self.pos_embed.name}

    def backbone_parameters(self):
        """Every trainable parameter except the head's (for `train.freeze_backbone`)."""
        head = {id(p) for p in self.head.get_parameters()} if self.head is not None else set()
        return [p for p in self.trainable_params() if id(p) not in head]
