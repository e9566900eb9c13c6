"""Independent numpy (float64) ViT forward passes, each written from its source's own definition, and random
weights in each source's own naming: the references for the converter parity tests.

    state = random_timm_state(rng, dim=32, depth=2, heads=2, patch=8, grid=4, classes=10)
    logits = timm_forward(state, images, heads=2)                  # images: (B, C, H, W)

| source   | names / layouts                                    | GELU | LayerNorm eps |
|----------|----------------------------------------------------|------|---------------|
| timm     | patch_embed.proj (D,C,P,P), blocks.i.attn.qkv ...  | erf  | 1e-6          |
|          | DeiT distilled (timm and Facebook): + dist_token,  |      |               |
|          | head_dist; eval logits = mean of the two heads     |      |               |
| npz      | Flax: embedding/kernel (P,P,C,D) on NHWC images,   | tanh | 1e-6          |
|          | q/k/v kernels (D,H,hd), out/kernel (H,hd,D)        |      |               |
| tutorial | MindSpore tutorial `ViT` cell (SequentialCell idx) | tanh | 1e-7          |
"""
import math
from typing import Dict, Optional

import numpy as np

State = Dict[str, np.ndarray]


# ----------------------------------------------------------------------------------------------------------
# Building blocks.


def gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def dense(x: np.ndarray, weight_out_in: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return x @ weight_out_in.T + bias


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """q, k, v: (B, H, N, hd) -> (B, N, H*hd), scores scaled by 1/sqrt(hd)."""
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])  # (B, H, N, N)
    out = softmax(scores) @ v  # (B, H, N, hd)
    b, h, n, hd = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, n, h * hd)


def patchify_nchw(x: np.ndarray, p: int) -> np.ndarray:
    """(B, C, H, W) -> (B, h*w, C, P, P), patches in row-major order."""
    b, c, hh, ww = x.shape
    x = x.reshape(b, c, hh // p, p, ww // p, p).transpose(0, 2, 4, 1, 3, 5)  # (B, h, w, C, P, P)
    return x.reshape(b, -1, c, p, p)


def _f64(state: State) -> State:
    return {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}


# ----------------------------------------------------------------------------------------------------------
# timm (the PyTorch reference; our names are the same).


def timm_forward(state: State, x: np.ndarray, heads: int, gelu_kind: str = "erf", eps: float = 1e-6,
                 attention: Optional[list] = None, both_heads: bool = False):
    """Logits (B, classes); `attention`, when given a list, receives each block's (B, H, N, N) probabilities.

    With `dist_token` in the state (DeiT's DistilledVisionTransformer): tokens are [class, distillation, patches],
    the result the mean of head(class) and head_dist(distillation), or both when `both_heads` (training)."""
    s, x = _f64(state), np.asarray(x, np.float64)
    w = s["patch_embed.proj.weight"]  # (D, C, P, P): a stride-P convolution
    tokens = np.einsum("bncij,dcij->bnd", patchify_nchw(x, w.shape[-1]), w) + s["patch_embed.proj.bias"]
    prefix = [np.broadcast_to(s[name], (x.shape[0], 1, w.shape[0])) for name in ("cls_token", "dist_token") if name in s]
    h = np.concatenate([*prefix, tokens], 1) + s["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}."
        y = layer_norm(h, s[p + "norm1.weight"], s[p + "norm1.bias"], eps)
        b, n, d = y.shape
        qkv = dense(y, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"]).reshape(b, n, 3, heads, d // heads)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # (B, H, N, hd) each
        if attention is not None:
            attention.append(softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])))  # (B, H, N, N)
        h = h + dense(attend(q, k, v), s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        y = layer_norm(h, s[p + "norm2.weight"], s[p + "norm2.bias"], eps)
        y = gelu(dense(y, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"]), gelu_kind)
        h = h + dense(y, s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
    if "fc_norm.weight" in s:  # timm global_pool='avg' with fc_norm: no final norm, LayerNorm of the mean
        z = layer_norm(h[:, 1:].mean(1), s["fc_norm.weight"], s["fc_norm.bias"], eps)
    else:
        h = layer_norm(h, s["norm.weight"], s["norm.bias"], eps)
        z = h[:, 0]
        if "dist_token" in s:
            cls, dist = dense(z, s["head.weight"], s["head.bias"]), dense(h[:, 1], s["head_dist.weight"],
                                                                           s["head_dist.bias"])
            return (cls, dist) if both_heads else (cls + dist) / 2
    if "pre_logits.fc.weight" in s:
        z = np.tanh(dense(z, s["pre_logits.fc.weight"], s["pre_logits.fc.bias"]))
    return dense(z, s["head.weight"], s["head.bias"])


def random_timm_state(rng: np.random.Generator, dim: int, depth: int, heads: int, patch: int, grid: int,
                      classes: int, channels: int = 3, mlp_ratio: float = 4.0, std: float = 0.2,
                      representation: Optional[int] = None, fc_norm: bool = False, distilled: bool = False) -> State:
    hidden = int(dim * mlp_ratio)

    def r(*shape, mean=0.0):
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    final = "fc_norm" if fc_norm else "norm"  # timm: fc_norm replaces the final norm (global_pool='avg')
    s = {"patch_embed.proj.weight": r(dim, channels, patch, patch), "patch_embed.proj.bias": r(dim),
         "cls_token": r(1, 1, dim), "pos_embed": r(1, grid * grid + (2 if distilled else 1), dim),
         f"{final}.weight": r(dim, mean=1.0), f"{final}.bias": r(dim)}
    for i in range(depth):
        p = f"blocks.{i}."
        s.update({p + "norm1.weight": r(dim, mean=1.0), p + "norm1.bias": r(dim),
                  p + "attn.qkv.weight": r(3 * dim, dim), p + "attn.qkv.bias": r(3 * dim),
                  p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                  p + "norm2.weight": r(dim, mean=1.0), p + "norm2.bias": r(dim),
                  p + "mlp.fc1.weight": r(hidden, dim), p + "mlp.fc1.bias": r(hidden),
                  p + "mlp.fc2.weight": r(dim, hidden), p + "mlp.fc2.bias": r(dim)})
    features = dim
    if representation:
        s.update({"pre_logits.fc.weight": r(representation, dim), "pre_logits.fc.bias": r(representation)})
        features = representation
    s.update({"head.weight": r(classes, features), "head.bias": r(classes)})
    if distilled:  # DeiT: distillation token and its head
        s.update({"dist_token": r(1, 1, dim), "head_dist.weight": r(classes, features), "head_dist.bias": r(classes)})
    return s


# ----------------------------------------------------------------------------------------------------------
# Google ViT / AugReg (Flax, vit_jax/models_vit.py): NHWC images, DenseGeneral attention kernels.


def npz_forward(params: State, x_nhwc: np.ndarray, gelu_kind: str = "tanh", eps: float = 1e-6) -> np.ndarray:
    s, x = _f64(params), np.asarray(x_nhwc, np.float64)
    kernel = s["embedding/kernel"]  # (P, P, C, D), conv with VALID padding and stride P
    p = kernel.shape[0]
    b, hh, ww, c = x.shape
    patches = x.reshape(b, hh // p, p, ww // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p, p, c)
    h = np.einsum("bnijc,ijcd->bnd", patches, kernel) + s["embedding/bias"]
    h = np.concatenate([np.tile(s["cls"], (b, 1, 1)), h], 1) + s["Transformer/posembed_input/pos_embedding"]
    depth = len({k.split("/")[1] for k in s if k.startswith("Transformer/encoderblock_")})
    for i in range(depth):
        e = f"Transformer/encoderblock_{i}/"
        a = e + "MultiHeadDotProductAttention_1/"
        y = layer_norm(h, s[e + "LayerNorm_0/scale"], s[e + "LayerNorm_0/bias"], eps)
        q, k, v = (np.einsum("bnd,dhk->bhnk", y, s[f"{a}{n}/kernel"]) + s[f"{a}{n}/bias"][None, :, None, :]
                   for n in ("query", "key", "value"))  # (B, H, N, hd)
        heads, hd = s[a + "query/kernel"].shape[1:]
        out = attend(q, k, v).reshape(b, -1, heads, hd)  # (B, N, H, hd)
        h = h + np.einsum("bnhk,hkd->bnd", out, s[a + "out/kernel"]) + s[a + "out/bias"]
        y = layer_norm(h, s[e + "LayerNorm_2/scale"], s[e + "LayerNorm_2/bias"], eps)
        y = gelu(y @ s[e + "MlpBlock_3/Dense_0/kernel"] + s[e + "MlpBlock_3/Dense_0/bias"], gelu_kind)
        h = h + y @ s[e + "MlpBlock_3/Dense_1/kernel"] + s[e + "MlpBlock_3/Dense_1/bias"]
    z = layer_norm(h, s["Transformer/encoder_norm/scale"], s["Transformer/encoder_norm/bias"], eps)[:, 0]
    if "pre_logits/kernel" in s:
        z = np.tanh(z @ s["pre_logits/kernel"] + s["pre_logits/bias"])
    return z @ s["head/kernel"] + s["head/bias"]


def random_npz_state(rng: np.random.Generator, dim: int, depth: int, heads: int, patch: int, grid: int,
                     classes: int, channels: int = 3, std: float = 0.2, representation: Optional[int] = None,
                     prefix: str = "") -> State:
    hidden, hd = 4 * dim, dim // heads

    def r(*shape, mean=0.0):
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    s = {"embedding/kernel": r(patch, patch, channels, dim), "embedding/bias": r(dim), "cls": r(1, 1, dim),
         "Transformer/posembed_input/pos_embedding": r(1, grid * grid + 1, dim),
         "Transformer/encoder_norm/scale": r(dim, mean=1.0), "Transformer/encoder_norm/bias": r(dim)}
    for i in range(depth):
        e = f"Transformer/encoderblock_{i}/"
        a = e + "MultiHeadDotProductAttention_1/"
        for n in ("query", "key", "value"):
            s.update({f"{a}{n}/kernel": r(dim, heads, hd), f"{a}{n}/bias": r(heads, hd)})
        s.update({a + "out/kernel": r(heads, hd, dim), a + "out/bias": r(dim),
                  e + "LayerNorm_0/scale": r(dim, mean=1.0), e + "LayerNorm_0/bias": r(dim),
                  e + "LayerNorm_2/scale": r(dim, mean=1.0), e + "LayerNorm_2/bias": r(dim),
                  e + "MlpBlock_3/Dense_0/kernel": r(dim, hidden), e + "MlpBlock_3/Dense_0/bias": r(hidden),
                  e + "MlpBlock_3/Dense_1/kernel": r(hidden, dim), e + "MlpBlock_3/Dense_1/bias": r(dim)})
    features = dim
    if representation:
        s.update({"pre_logits/kernel": r(dim, representation), "pre_logits/bias": r(representation)})
        features = representation
    s.update({"head/kernel": r(features, classes), "head/bias": r(classes)})
    return {prefix + k: v for k, v in s.items()}


# ----------------------------------------------------------------------------------------------------------
# MindSpore ViT tutorial: ViT(patch_embedding.conv, cls, pos_embedding, transformer.layers[i] =
# SequentialCell([ResidualCell(SequentialCell([LayerNorm, Attention(qkv, out)])),
#                 ResidualCell(SequentialCell([LayerNorm, FeedForward(dense1, GELU, dense2)]))]), norm, dense).
# nn.GELU() is the tanh approximation and nn.LayerNorm's epsilon is 1e-7.


def tutorial_forward(state: State, x: np.ndarray, heads: int, gelu_kind: str = "tanh",
                     eps: float = 1e-7) -> np.ndarray:
    s, x = _f64(state), np.asarray(x, np.float64)
    w = s["patch_embedding.conv.weight"]
    tokens = np.einsum("bncij,dcij->bnd", patchify_nchw(x, w.shape[-1]), w) + s["patch_embedding.conv.bias"]
    cls = s["cls"] if "cls" in s else s["cls_token"]  # the Parameter is named 'cls'; some saves use the attribute
    h = np.concatenate([np.tile(cls, (x.shape[0], 1, 1)), tokens], 1) + s["pos_embedding"]
    depth = len({k.split(".")[2] for k in s if k.startswith("transformer.layers.")})
    for i in range(depth):
        r0, r1 = f"transformer.layers.{i}.0.cell.", f"transformer.layers.{i}.1.cell."
        y = layer_norm(h, s[r0 + "0.gamma"], s[r0 + "0.beta"], eps)
        b, n, c = y.shape
        qkv = dense(y, s[r0 + "1.qkv.weight"], s[r0 + "1.qkv.bias"]).reshape(b, n, 3, heads, c // heads)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)
        h = h + dense(attend(q, k, v), s[r0 + "1.out.weight"], s[r0 + "1.out.bias"])
        y = layer_norm(h, s[r1 + "0.gamma"], s[r1 + "0.beta"], eps)
        y = gelu(dense(y, s[r1 + "1.dense1.weight"], s[r1 + "1.dense1.bias"]), gelu_kind)
        h = h + dense(y, s[r1 + "1.dense2.weight"], s[r1 + "1.dense2.bias"])
    z = layer_norm(h, s["norm.gamma"], s["norm.beta"], eps)[:, 0]
    return dense(z, s["dense.weight"], s["dense.bias"])


def random_tutorial_state(rng: np.random.Generator, dim: int, depth: int, patch: int, grid: int, classes: int,
                          channels: int = 3, std: float = 0.2, cls_name: str = "cls") -> State:
    t = random_timm_state(rng, dim, depth, 1, patch, grid, classes, channels, std=std)
    s = {"patch_embedding.conv.weight": t["patch_embed.proj.weight"],
         "patch_embedding.conv.bias": t["patch_embed.proj.bias"], cls_name: t["cls_token"],
         "pos_embedding": t["pos_embed"], "norm.gamma": t["norm.weight"], "norm.beta": t["norm.bias"],
         "dense.weight": t["head.weight"], "dense.bias": t["head.bias"]}
    for i in range(depth):
        p, r0, r1 = f"blocks.{i}.", f"transformer.layers.{i}.0.cell.", f"transformer.layers.{i}.1.cell."
        s.update({r0 + "0.gamma": t[p + "norm1.weight"], r0 + "0.beta": t[p + "norm1.bias"],
                  r0 + "1.qkv.weight": t[p + "attn.qkv.weight"], r0 + "1.qkv.bias": t[p + "attn.qkv.bias"],
                  r0 + "1.out.weight": t[p + "attn.proj.weight"], r0 + "1.out.bias": t[p + "attn.proj.bias"],
                  r1 + "0.gamma": t[p + "norm2.weight"], r1 + "0.beta": t[p + "norm2.bias"],
                  r1 + "1.dense1.weight": t[p + "mlp.fc1.weight"], r1 + "1.dense1.bias": t[p + "mlp.fc1.bias"],
                  r1 + "1.dense2.weight": t[p + "mlp.fc2.weight"], r1 + "1.dense2.bias": t[p + "mlp.fc2.bias"]})
    return s
