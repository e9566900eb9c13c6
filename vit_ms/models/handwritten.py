"""Layers with their gradients written out: the same derivatives as autodiff, from fewer or faster CPU kernels.

The erf kernel in GELU's gradient and a ReduceSum over the softmax rows are slow on CPU; these cells compute the
same backward without them. Each is a parameter-free cell with a `bprop`, the form MindSpore 2.10 accepts in graph
mode; an outer cell keeps any parameters and their names, so checkpoints move between formulations unchanged.
The GELU and softmax cells are float32 only: the run plan uses them under amp O0 alone.
LayerNorm keeps the primitive's LayerNormGrad: written out, its backward is faster but MindSpore keeps its
temporaries (docs/performance.md, memory on CPU).
Chosen by `formulations.Formulation(backward="handwritten")`, the default on CPU; `BiasGemmLinear` by
`Formulation(bias_grad="gemm")`, the default on GPU.
"""
import math

from mindspore import nn, ops

from .layers import LinearFunction


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


class HandwrittenErfGELU(nn.Cell):
    """The exact GELU, x * Phi(x), with the gradient of `_ErfGELUFunction`."""

    approximate = "erf"

    def __init__(self):
        super().__init__()
        self.function = _ErfGELUFunction()

    def construct(self, x):
        return self.function(x)[0]


class HandwrittenSoftmax(nn.Cell):
    """Softmax over the last axis; its backward y * (dy - rowsum(y * dy)) takes the row sums as a matmul with a
    column of ones (the CPU ReduceSum over a 197-long last axis of a 4-d tensor is about 3x slower)."""

    def construct(self, x):
        return ops.softmax(x, axis=-1)

    def bprop(self, x, out, dout):
        n = x.shape[-1]
        t = out * dout
        row_sum = ops.matmul(t.reshape(-1, n), ops.ones((n, 1), t.dtype)).reshape(out.shape[:-1] + (1,))
        return (t - out * row_sum,)


class BiasGemmLinear(LinearFunction):
    """x @ weight.T + bias whose bias gradient is a matrix product, ones(1, M) @ dy, instead of a reduction.

    dx = dy @ weight, dweight = dy^T @ x, dbias = ones(1, M) @ dy. On GPUs the BiasAddGrad reduction of the
    autodiff form ran at ~57 GB/s and took 43% of a ViT-B/16 step in a profile on an H100; as a GEMM it
    runs on the tensor cores. Any dtype: the plan selects it for GPU under every amp level.
    """

    def __init__(self):
        super().__init__()
        self.matmul_tn = ops.MatMul(transpose_a=True)

    def bprop(self, x, weight, bias, out, dout):
        # under amp O2 dout is float16 while a parameter may arrive in float32: compute in dout's dtype, return
        # each gradient in its input's dtype
        w, xs = weight.astype(dout.dtype), x.astype(dout.dtype)
        dx = ops.matmul(dout, w)  # (M, in)
        dweight = self.matmul_tn(dout, xs)  # (out, in)
        dbias = ops.matmul(ops.ones((1, dout.shape[0]), dout.dtype), dout).reshape(bias.shape)  # (out,)
        return dx.astype(x.dtype), dweight.astype(weight.dtype), dbias.astype(bias.dtype)
