"""Scaled dot-product attention over a fused qkv projection: (B, N, 3D) -> (B, N, D), as two formulations.

- `DotProductAttention`: softmax(q k^T / sqrt(Dh)) v per head, written out (any device).
- `FlashAttention`: MindSpore's fused `flash_attention_score` kernel (Ascend 910B/910C only, `vit_ms.chips`), same function.
`formulations.Formulation.attention` picks one; neither holds parameters. Both also give the attention
probabilities on their own (`probabilities`, for attention maps: not used by the forward pass).
"""
import mindspore as ms
from mindspore import nn, ops

from .layers import Softmax, dropout


def split_heads(qkv, num_heads: int, scale: float):
    """Fused qkv (B, N, 3D) -> q * scale, k, v, each (B, H, N, Dh).

    The fewest data moves measured on CPU (docs/performance.md): a split along the last axis, one transpose per
    tensor (k's transpose for q k^T is left to the matmul, `BatchMatMul(transpose_b=True)`), and the scale on q
    (cheaper than on the (N, N) scores).
    """
    b, n, _ = qkv.shape
    q, k, v = ops.split(qkv, qkv.shape[-1] // 3, axis=-1)  # (B, N, D) each
    q = (q * scale).reshape(b, n, num_heads, -1).transpose(0, 2, 1, 3)  # (B, H, N, Dh)
    k = k.reshape(b, n, num_heads, -1).transpose(0, 2, 1, 3)  # (B, H, N, Dh)
    v = v.reshape(b, n, num_heads, -1).transpose(0, 2, 1, 3)  # (B, H, N, Dh)
    return q, k, v


class DotProductAttention(nn.Cell):
    """Multi-head attention from a fused qkv tensor, `softmax` as given (float32 inside under amp by default)."""

    def __init__(self, num_heads: int, head_dim: int, attn_drop: float = 0.0, softmax: nn.Cell = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.softmax = softmax if softmax is not None else Softmax()
        self.attn_drop = dropout(attn_drop)
        # the primitives: ops.matmul's broadcasting form measured ~20% slower on CPU
        self.q_matmul_k = ops.BatchMatMul(transpose_b=True)
        self.attn_matmul_v = ops.BatchMatMul()

    def construct(self, qkv):
        b, n, _ = qkv.shape
        q, k, v = split_heads(qkv, self.num_heads, self.scale)  # (B, H, N, Dh) each
        attn = self.attn_drop(self.softmax(self.q_matmul_k(q, k)))  # (B, H, N, N)
        out = self.attn_matmul_v(attn, v)  # (B, H, N, Dh)
        return out.transpose(0, 2, 1, 3).reshape(b, n, -1)  # (B, N, D)

    def probabilities(self, qkv):
        """softmax(q k^T / sqrt(Dh)) as `construct` computes it (before attention dropout): (B, N, 3D) -> (B, H, N, N)."""
        return attention_probabilities(qkv, self.num_heads, self.scale, self.softmax)


class FlashAttention(nn.Cell):
    """The same attention through Ascend's fused kernel (float16/bfloat16 inside; float32 inputs are cast).

    No attention dropout: the run plan refuses `model.attn_drop_rate > 0` with this formulation.
    """

    def __init__(self, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = head_dim ** -0.5

    def construct(self, qkv):
        q, k, v = ops.split(qkv, qkv.shape[-1] // 3, axis=-1)  # (B, N, D) each, the "BSH" layout
        if qkv.dtype == ms.float32:  # the kernel takes float16/bfloat16 only (amp O0 runs)
            q, k, v = q.astype(ms.float16), k.astype(ms.float16), v.astype(ms.float16)
        out = ops.flash_attention_score(q, k, v, self.num_heads, scalar_value=self.scale, input_layout="BSH")
        return out.astype(qkv.dtype)  # (B, N, D)

    def probabilities(self, qkv):
        """The probabilities the fused kernel applies, written out in float32: (B, N, 3D) -> (B, H, N, N)."""
        return attention_probabilities(qkv.astype(ms.float32), self.num_heads, self.scale, Softmax())


def attention_probabilities(qkv, num_heads: int, scale: float, softmax: nn.Cell):
    """softmax(scale * q k^T) per head from a fused qkv tensor: (B, N, 3D) -> (B, H, N, N)."""
    q, k, _ = split_heads(qkv, num_heads, scale)
    return softmax(ops.matmul(q, k.swapaxes(-1, -2)))  # (B, H, N, N)
