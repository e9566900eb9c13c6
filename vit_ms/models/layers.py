"""Small building blocks of the ViT, in the form MindSpore 2.10 runs fastest, computed by autodiff.

Measured on CPU (see docs/performance.md): a matmul followed by an Add beats `nn.Dense`'s BiasAdd, and
GELU built from elementwise ops beats the GeLU kernel and its gradient. The math is unchanged.
`handwritten.py` holds the same functions with written-out gradients; `formulations.py` picks between them.
"""
import math

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Constant, TruncatedNormal, initializer


def zeros_parameter(shape: tuple, name: str) -> Parameter:
    return Parameter(initializer(Constant(0.0), shape, ms.float32), name=name)


def trunc_normal_parameter(shape: tuple, name: str, std: float = 0.02) -> Parameter:
    return Parameter(initializer(TruncatedNormal(std), shape, ms.float32), name=name)


class LinearFunction(nn.Cell):
    """(x (M, in), weight (out, in), bias (out,)) -> x @ weight.T + bias; parameter-free, so a formulation can
    swap it (autodiff here: the bias gradient is a ReduceSum over the M rows)."""

    def __init__(self):
        super().__init__()
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x, weight, bias):
        return self.matmul(x, weight) + bias


class Linear(nn.Cell):
    """y = x @ weight.T + bias, for inputs of any rank; parameters named like `nn.Dense` (weight: (out, in)).

    `function` computes it (default: `LinearFunction`, autodiff).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, std: float = 0.02,
                 function: nn.Cell = None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = trunc_normal_parameter((out_features, in_features), "weight", std)
        self.bias = zeros_parameter((out_features,), "bias") if bias else None
        self.function = function if function is not None else LinearFunction()

    def construct(self, x):
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)  # (M, in)
        if self.bias is None:
            y = self.function.matmul(x, self.weight)  # (M, out)
        else:
            y = self.function(x, self.weight, self.bias)  # (M, out)
        return y.reshape(lead + (self.out_features,))


class Float32UnderAmp(nn.Cell):
    """Base of the layers computed in float32 under amp O2/O3 (LayerNorm, softmax) unless `half`.

    amp marks every cell float16 (`Cell.to_float`, which reaches each cell through `add_flags_recursive`), and
    inside a marked cell a cast to float32 written in `construct` does not hold (measured in PyNative and graph
    mode: the op still ran in float16). These layers take the float32 mark instead, as amp does for MindSpore's own
    nn.LayerNorm (its AMP_BLACK_LIST): float16 inputs are cast up, the parameters stay float32, and the next cell
    casts the float32 output back.
    With `half` (`amp.norms: half`, resolved by the run plan) they keep amp's float16 or bfloat16.
    """

    def __init__(self, half: bool = False):
        super().__init__()
        self.half = half

    def add_flags_recursive(self, **flags):
        if not self.half and (flags.get("fp16") or flags.get("bf16")):
            flags = dict(flags, fp16=False, bf16=False, fp32=True)
        return super().add_flags_recursive(**flags)


class LayerNorm(Float32UnderAmp):
    """LayerNorm over the last axis with `weight`/`bias` parameters; eps 1e-6 as in published ViT weights."""

    def __init__(self, dim: int, eps: float = 1e-6, half: bool = False):
        super().__init__(half)
        self.dim = dim
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.bias = zeros_parameter((dim,), "bias")
        # the primitive, not LayerNormExt: CPU has no LayerNormExt kernel
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x):
        y, _, _ = self.layer_norm(x, self.weight, self.bias)
        return y


class GELU(nn.Cell):
    """GELU: exact (erf, the default of published ViT weights) or the tanh approximation."""

    def __init__(self, approximate: str = "erf"):
        super().__init__()
        if approximate not in ("erf", "tanh"):
            raise ValueError(f"GELU approximate must be 'erf' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self.tanh = approximate == "tanh"

    def construct(self, x):
        if self.tanh:  # 0.5 x (1 + tanh(u)) written as x sigmoid(2u): same function, accurate in float32
            return x * ops.sigmoid(2.0 * math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x))
        return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


class Softmax(Float32UnderAmp):
    """Softmax over the last axis; in float32 under amp unless `half` (see `Float32UnderAmp`)."""

    def construct(self, x):
        return ops.softmax(x, axis=-1)


class DropPath(nn.Cell):
    """Stochastic depth: drop the whole residual branch per sample with probability `p` (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p
        self.dropout = nn.Dropout(p=p) if p > 0 else None  # applied to a (B, 1, 1) mask of ones

    def construct(self, x):
        if self.dropout is None or not self.training:
            return x
        mask = self.dropout(ops.ones((x.shape[0],) + (1,) * (x.ndim - 1), x.dtype))  # 0 or 1/(1-p)
        return x * mask


def dropout(p: float) -> nn.Cell:
    """nn.Dropout(p), or the identity when p is 0 (no mask drawn)."""
    return nn.Dropout(p=p) if p > 0 else nn.Identity()
