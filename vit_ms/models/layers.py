"""Small building blocks of the ViT, each written in the form MindSpore 2.10 runs fastest.

Measured on CPU (see README "Performance"): a matmul followed by an Add beats `nn.Dense`'s BiasAdd, and
GELU built from elementwise ops beats the GeLU kernel and its gradient. The math is unchanged.

`custom_backward=True` (chosen for CPU by `model_from_config`) gives LayerNorm, the exact GELU and the attention
softmax hand-written gradients for float32 inputs: the same derivatives as autodiff, from fewer or faster CPU
kernels (LayerNormGrad and a ReduceSum over the softmax rows are slow there). Each sits in a parameter-free cell
with a `bprop`, the form MindSpore 2.10 accepts in graph mode; the outer cell keeps the parameters and their
names. Under mixed precision (float16 inputs) the cells use autodiff as before.
"""
import math

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Constant, TruncatedNormal, initializer


class Linear(nn.Cell):
    """y = x @ weight.T + bias, for inputs of any rank; parameters named like `nn.Dense` (weight: (out, in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, std: float = 0.02):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(initializer(TruncatedNormal(std), (out_features, in_features), ms.float32),
                                name="weight")
        self.bias = Parameter(initializer("zeros", (out_features,), ms.float32), name="bias") if bias else None
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        lead = x.shape[:-1]
        y = self.matmul(x.reshape(-1, self.in_features), self.weight)  # (M, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(lead + (self.out_features,))


class _LayerNormFunction(nn.Cell):
    """(x, weight, bias) -> LayerNorm(x) over the last axis, with the backward written out.

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight; dweight = sum(dy * xhat),
    dbias = sum(dy) over all rows. The statistics are recomputed (the primitive's extra outputs differ by device).
    """

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x, weight, bias):
        y, _, _ = self.layer_norm(x, weight, bias)
        return y

    def bprop(self, x, weight, bias, out, dout):
        d = x.shape[-1]
        x2, dy = x.reshape(-1, d), dout.reshape(-1, d)  # (M, D)
        xc = x2 - ops.mean(x2, -1, True)
        rstd = ops.rsqrt(ops.mean(xc * xc, -1, True) + self.eps)  # (M, 1)
        xhat = xc * rstd
        g = dy * weight
        dx = (g - ops.mean(g, -1, True) - xhat * ops.mean(g * xhat, -1, True)) * rstd
        return dx.reshape(x.shape), ops.sum(dy * xhat, 0), ops.sum(dy, 0)


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with `weight`/`bias` parameters; eps 1e-6 as in published ViT weights."""

    def __init__(self, dim: int, eps: float = 1e-6, custom_backward: bool = False):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32), name="bias")
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)  # CPU has no LayerNormExt
        self.function = _LayerNormFunction(eps) if custom_backward else None

    def construct(self, x):
        if self.function is not None and x.dtype == ms.float32:  # amp O1-O3 keep autodiff (fp16 gradients)
            return self.function(x, self.weight, self.bias)
        y, _, _ = self.layer_norm(x, self.weight, self.bias)
        return y


class _ErfGELUFunction(nn.Cell):
    """x -> (x * cdf, cdf) with cdf = Phi(x) = 0.5 (1 + erf(x / sqrt 2)); backward dy * (cdf + x * phi(x)).

    Returning the cdf lets the backward reuse it instead of recomputing erf (a slow kernel on CPU).
    """

    def construct(self, x):
        cdf = 0.5 + 0.5 * ops.erf(x * (1.0 / math.sqrt(2.0)))
        return x * cdf, cdf

    def bprop(self, x, out, dout):
        pdf = ops.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
        return (dout[0] * (out[1] + x * pdf),)


class GELU(nn.Cell):
    """GELU: exact (erf, the default of published ViT weights) or the tanh approximation."""

    def __init__(self, approximate: str = "erf", custom_backward: bool = False):
        super().__init__()
        if approximate not in ("erf", "tanh"):
            raise ValueError(f"GELU approximate must be 'erf' or 'tanh', got {approximate!r}")
        self.tanh = approximate == "tanh"
        self.function = _ErfGELUFunction() if custom_backward and not self.tanh else None

    def construct(self, x):
        if self.tanh:  # 0.5 x (1 + tanh(u)) written as x sigmoid(2u): same function, accurate in float32
            return x * ops.sigmoid(2.0 * math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x))
        if self.function is not None and x.dtype == ms.float32:
            return self.function(x)[0]
        return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


class Softmax(nn.Cell):
    """Softmax over the last axis; its backward y * (dy - rowsum(y * dy)) takes the row sums as a matmul with a
    column of ones (the CPU ReduceSum over a 197-long last axis of a 4-d tensor is about 3x slower)."""

    def construct(self, x):
        return ops.softmax(x, axis=-1)

    def bprop(self, x, out, dout):
        n = x.shape[-1]
        t = out * dout
        row_sum = ops.matmul(t.reshape(-1, n), ops.ones((n, 1), t.dtype)).reshape(out.shape[:-1] + (1,))
        return (t - out * row_sum,)


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


def zeros_parameter(shape: tuple, name: str) -> Parameter:
    return Parameter(initializer(Constant(0.0), shape, ms.float32), name=name)


def trunc_normal_parameter(shape: tuple, name: str, std: float = 0.02) -> Parameter:
    return Parameter(initializer(TruncatedNormal(std), shape, ms.float32), name=name)
