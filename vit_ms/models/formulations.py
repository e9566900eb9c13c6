"""How each swappable layer is computed. Every formulation has the same parameters, names and function, so a
checkpoint moves between them (and between devices) unchanged; only speed and memory differ.

    f = Formulation(patch_embed="matmul", attention="standard", backward="handwritten", bias_grad="reduce")  # CPU
    model = VisionTransformer(arch, f)

The run plan (`vit_ms.plan`) picks the formulation for the device; `model.attention` and `amp.norms` in the
config force those two, and the benchmark's `--formulation` the others (patch_embed, backward, bias_grad).
`norms` matters under amp O2/O3 alone: LayerNorm and the attention softmax in float32 with float32 parameters
(`layers.Float32UnderAmp`) or in amp's float16 or bfloat16; under O0 everything is float32 either way.
"""
from dataclasses import dataclass

from mindspore import nn

from .attention import DotProductAttention, FlashAttention
from .handwritten import BiasGemmLinear, HandwrittenErfGELU, HandwrittenSoftmax
from .layers import GELU, LayerNorm, Linear, Softmax

PATCH_EMBEDS = ("matmul", "conv")  # reshape + matmul (fast on CPU) or the stride-P convolution
ATTENTIONS = ("standard", "fused")  # written out, or Ascend 910B/910C's flash-attention kernel
BACKWARDS = ("autodiff", "handwritten")  # handwritten: erf GELU and softmax gradients (float32)
BIAS_GRADS = ("reduce", "gemm")  # a Linear's bias gradient: autodiff's row reduction, or ones(1, M) @ dy
NORMS = ("float32", "half")  # LayerNorm and softmax under amp O2/O3: kept in float32, or in amp's float16


@dataclass(frozen=True)
class Formulation:
    patch_embed: str = "matmul"
    attention: str = "standard"
    backward: str = "autodiff"
    bias_grad: str = "reduce"
    norms: str = "float32"

    def __post_init__(self):
        for key, allowed in (("patch_embed", PATCH_EMBEDS), ("attention", ATTENTIONS), ("backward", BACKWARDS),
                             ("bias_grad", BIAS_GRADS), ("norms", NORMS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"Formulation.{key}={getattr(self, key)!r} must be one of {allowed}")
        if self.handwritten and self.half_norms:
            raise ValueError("Formulation(backward='handwritten') computes float32 gradients only; it cannot take "
                             "norms='half'")

    def describe(self) -> str:
        """One phrase for logs and the benchmark table."""
        return (f"patch embedding {self.patch_embed}, attention {self.attention}, backward {self.backward}, "
                f"bias gradient {self.bias_grad}, norms {self.norms}")

    @property
    def handwritten(self) -> bool:
        return self.backward == "handwritten"

    @property
    def half_norms(self) -> bool:
        return self.norms == "half"

    def linear(self, in_features: int, out_features: int, bias: bool = True) -> Linear:
        return Linear(in_features, out_features, bias, function=BiasGemmLinear() if self.bias_grad == "gemm" else None)

    def gelu(self, approximate: str) -> nn.Cell:
        if self.handwritten and approximate == "erf":
            return HandwrittenErfGELU()
        return GELU(approximate)

    def layer_norm(self, dim: int, eps: float) -> LayerNorm:
        return LayerNorm(dim, eps, half=self.half_norms)

    def attention_core(self, num_heads: int, head_dim: int, attn_drop: float) -> nn.Cell:
        """(B, N, 3D) fused qkv -> (B, N, D)."""
        if self.attention == "fused":
            return FlashAttention(num_heads, head_dim)
        softmax = HandwrittenSoftmax() if self.handwritten else Softmax(half=self.half_norms)
        return DotProductAttention(num_heads, head_dim, attn_drop, softmax)
