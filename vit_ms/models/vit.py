"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

Pre-norm encoder blocks, class token, learned position embedding, head on the class token (or on the mean
of the patch tokens with `global_pool="avg"`, normalised by `fc_norm` instead of the final norm when the
architecture says so, as timm and MAE fine-tuning do), optional pre-logits layer (Linear + tanh, the paper's
"representation size"). Defaults match the published weights: exact GELU, LayerNorm eps 1e-6, qkv bias.

Parameter names follow timm so converters stay short: patch_embed.proj, cls_token, pos_embed,
blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm (or fc_norm), pre_logits.fc, head.

`distilled` (DeiT, Touvron et al., "Training data-efficient image transformers & distillation through
attention", ICML 2021): a distillation token `dist_token` follows the class token (the position embedding covers
both), and its own head `head_dist` reads it. In training mode the model returns both heads' logits
(class, distillation) for the distillation loss (vit_ms.train.losses); in eval mode their average, as DeiT's
and timm's distilled models do, or the class head alone when `average_heads` is False (a head_dist that no
teacher trained: vit_ms.loader.opener.use_trained_heads).

The architecture (`vit_ms.variants.Architecture`) fixes the function; the formulation (`formulations.Formulation`)
fixes how the Linear layers, GELU, LayerNorm, the attention core and the patch embedding are computed (same
function, faster on one device or another). The patch embedding's stride-P convolution may run as a reshape + matmul with the same
(D, C, P, P) weight.
"""
import math

from mindspore import nn, ops

from .formulations import Formulation
from .layers import DropPath, dropout, trunc_normal_parameter, zeros_parameter
from ..variants import Architecture


class PatchProjection(nn.Cell):
    """Holds the patch projection's parameters in conv layout: weight (D, C, P, P), bias (D,)."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int):
        super().__init__()
        fan_in = in_channels * patch_size * patch_size
        self.weight = trunc_normal_parameter((embed_dim, in_channels, patch_size, patch_size), "weight",
                                             std=math.sqrt(1.0 / fan_in))
        self.bias = zeros_parameter((embed_dim,), "bias")


class PatchEmbed(nn.Cell):
    """Split an image into P x P patches and project each to `embed_dim`: (B, C, H, W) -> (B, N, D)."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int, use_conv: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.use_conv = use_conv
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


class Attention(nn.Cell):
    """Multi-head self-attention with a fused qkv projection: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float,
                 f: Formulation):
        super().__init__()
        self.qkv = f.linear(dim, dim * 3, bias=qkv_bias)
        self.attend = f.attention_core(num_heads, dim // num_heads, attn_drop)  # softmax(q k^T / sqrt(Dh)) v
        self.proj = f.linear(dim, dim)
        self.proj_drop = dropout(proj_drop)

    def construct(self, x):
        out = self.attend(self.qkv(x))  # (B, N, 3D) -> (B, N, D)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Cell):
    """Linear -> GELU -> Linear, with optional dropout: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float, gelu: str, f: Formulation):
        super().__init__()
        self.fc1 = f.linear(dim, hidden_dim)
        self.act = f.gelu(gelu)
        self.fc2 = f.linear(hidden_dim, dim)
        self.drop = dropout(drop)

    def construct(self, x):
        x = self.drop(self.act(self.fc1(x)))  # (B, N, hidden)
        return self.drop(self.fc2(x))


class Block(nn.Cell):
    """Pre-norm transformer encoder block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, a: Architecture, drop_path: float, f: Formulation):
        super().__init__()
        self.norm1 = f.layer_norm(a.embed_dim, a.norm_eps)
        self.attn = Attention(a.embed_dim, a.num_heads, a.qkv_bias, a.attn_drop_rate, a.drop_rate, f)
        self.norm2 = f.layer_norm(a.embed_dim, a.norm_eps)
        self.mlp = Mlp(a.embed_dim, a.mlp_hidden, a.drop_rate, a.gelu, f)
        self.drop_path = DropPath(drop_path)

    def construct(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class PreLogits(nn.Cell):
    """The original ViT's pre-logits layer: Linear + tanh (`representation_size`)."""

    def __init__(self, dim: int, representation_size: int, f: Formulation):
        super().__init__()
        self.fc = f.linear(dim, representation_size)

    def construct(self, x):
        return ops.tanh(self.fc(x))


class VisionTransformer(nn.Cell):
    """ViT classifier: (B, C, H, W) images -> (B, num_classes) logits (features when num_classes is 0)."""

    def __init__(self, arch: Architecture, formulation: Formulation = Formulation()):
        super().__init__()
        a = self.arch = arch
        self.formulation = formulation
        self.num_classes = a.num_classes
        self.image_size = a.image_size
        self.patch_embed = PatchEmbed(a.patch_size, a.in_channels, a.embed_dim, formulation.patch_embed == "conv")
        self.cls_token = trunc_normal_parameter((1, 1, a.embed_dim), "cls_token", std=1e-6)
        self.distilled = a.distilled
        self.average_heads = a.distilled  # eval mode: mean of the two heads; False: the class head alone
        self.num_prefix_tokens = a.num_prefix_tokens  # class token (+ distillation token)
        self.dist_token = trunc_normal_parameter((1, 1, a.embed_dim), "dist_token") if a.distilled else None
        self.pos_embed = trunc_normal_parameter((1, a.num_patches + a.num_prefix_tokens, a.embed_dim), "pos_embed")
        self.pos_drop = dropout(a.drop_rate)
        rates = [a.drop_path_rate * i / max(a.depth - 1, 1) for i in range(a.depth)]  # linear in depth
        self.blocks = nn.CellList([Block(a, rate, formulation) for rate in rates])
        self.norm = None if a.fc_norm else formulation.layer_norm(a.embed_dim, a.norm_eps)
        self.fc_norm = formulation.layer_norm(a.embed_dim, a.norm_eps) if a.fc_norm else None
        self.pre_logits = PreLogits(a.embed_dim, a.representation_size, formulation) if a.representation_size else None
        self.num_features = a.representation_size or a.embed_dim
        self.head = formulation.linear(self.num_features, a.num_classes) if a.num_classes > 0 else None
        self.head_dist = formulation.linear(self.num_features, a.num_classes) if a.distilled and a.num_classes > 0 \
            else None
        self.avg_pool = a.global_pool == "avg"

    def tokens(self, x):
        """(B, C, H, W) -> (B, T+N, D): patches projected after the T prefix tokens (class token, then the
        distillation token of a distilled model), position embedding added."""
        x = self.patch_embed(x)  # (B, N, D)
        shape = (x.shape[0], 1, x.shape[2])
        cls = ops.broadcast_to(self.cls_token.astype(x.dtype), shape)  # (B, 1, D)
        if self.distilled:
            dist = ops.broadcast_to(self.dist_token.astype(x.dtype), shape)  # (B, 1, D)
            x = ops.concat((cls, dist, x), axis=1)  # (B, 2+N, D)
        else:
            x = ops.concat((cls, x), axis=1)  # (B, 1+N, D)
        return self.pos_drop(x + self.pos_embed.astype(x.dtype))

    def forward_features(self, x):
        x = self.tokens(x)  # (B, T+N, D)
        for block in self.blocks:
            x = block(x)
        return x if self.norm is None else self.norm(x)  # (B, T+N, D)

    def attention_probabilities(self, x) -> list:
        """Each block's attention probabilities on images x (B, C, H, W): a list of `depth` (B, heads, T+N, T+N)
        tensors, token 0 the class token, patches after the T = `num_prefix_tokens` prefix tokens. Runs the blocks
        as the forward pass does (call it in PyNative mode, on a model in eval mode); for attention maps, not
        training."""
        x = self.tokens(x)
        found = []
        for block in self.blocks:
            found.append(block.attn.attend.probabilities(block.attn.qkv(block.norm1(x))))
            x = block(x)
        return found

    def forward_head(self, x):
        if self.distilled:
            return self.forward_distilled_heads(x)
        x = x[:, 1:].mean(axis=1) if self.avg_pool else x[:, 0]  # (B, D)
        if self.fc_norm is not None:
            x = self.fc_norm(x)
        if self.pre_logits is not None:
            x = self.pre_logits(x)
        if self.head is not None:
            x = self.head(x)
        return x

    def forward_distilled_heads(self, x):
        """(B, 2+N, D) -> training: (class logits, distillation logits), each (B, K); eval: their mean (B, K), or
        the class logits alone when `average_heads` is False.
        Without a head (num_classes 0): the two tokens' features, the same way."""
        cls, dist = x[:, 0], x[:, 1]  # (B, D) each
        if self.head is not None:
            cls, dist = self.head(cls), self.head_dist(dist)
        if self.training:
            return cls, dist
        return (cls + dist) / 2 if self.average_heads else cls

    def construct(self, x):
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set:
        """Names of parameters exempt from weight decay: biases, norm weights, position embedding, class token."""
        tokens = {self.cls_token.name, self.pos_embed.name} | ({self.dist_token.name} if self.distilled else set())
        return {p.name for p in self.trainable_params() if p.ndim <= 1} | tokens
