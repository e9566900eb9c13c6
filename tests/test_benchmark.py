"""The benchmark tool end to end (tiny model, no timing thresholds), the FLOP count, and the speed changes it
measures: hand-written backward passes, the fused AdamW and the O0 loss check keep the math of what they replace."""
import json
import math
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindcv.optim.adamw import AdamW as MindcvAdamW
from mindspore import Parameter, Tensor, nn, ops

from vit_ms.config import load_config
from vit_ms.engine import build_train_step
from vit_ms.flops import TRAIN_FACTOR, model_flops, vit_flops
from vit_ms.models import create_model, model_from_config
from vit_ms.optim import AdamW

ms.set_context(mode=ms.PYNATIVE_MODE)

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.depth=2", "model.embed_dim=32", "model.num_heads=2", "model.patch_size=8", "model.image_size=32",
        "model.num_classes=5", "data.mixup=0.8", "data.cutmix=1.0", "data.num_parallel_workers=2"]


def test_benchmark_smoke_with_mindcv_comparison():
    cmd = [sys.executable, "-m", "vit_ms.benchmark", "--config", "demo.yaml", "--batch", "2", "--steps", "2",
           "--warmup", "1", "--mode", "graph", "--compare", "mindcv", "--data-batches", "3"]
    for item in TINY:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert "train images/s (median)" in proc.stdout and "ours / mindcv" in proc.stdout  # the table comes first
    records = [json.loads(line) for line in lines if line.startswith("{")]
    by_kind = {}
    for r in records[:-1]:
        by_kind.setdefault(r["measurement"], []).append(r)
    assert set(by_kind) == {"setting", "flops", "matmul_peak", "train", "compile", "eval", "memory", "utilisation",
                            "data"}
    for kind in ("train", "compile", "eval", "memory", "utilisation"):
        assert [r["model"] for r in by_kind[kind]] == ["ours", "mindcv"]
    for r in by_kind["train"] + by_kind["eval"]:
        assert r["images_per_sec"] > 0 and r["images_per_sec_min"] <= r["images_per_sec"] <= r["images_per_sec_max"]
        assert r["steps"] == 2 and r["batch"] == 2
    for r in by_kind["train"]:
        assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"])
    assert all(r["first_step_s"] > 0 for r in by_kind["compile"])
    assert all(r["peak_bytes"] > 0 and "RSS" in r["source"] for r in by_kind["memory"])
    assert all(r["train_gflops_per_sec"] > 0 and 0 < r["mfu"] < 1 for r in by_kind["utilisation"])
    peak = by_kind["matmul_peak"][0]
    assert peak["numpy_gflops"] > 0 and peak["mindspore_gflops"] > 0
    data = by_kind["data"][0]
    assert data["images_per_sec"] > 0 and data["images"] == 6 and data["workers"] >= 1
    flops = by_kind["flops"][0]
    assert flops["train_gflops_per_image"] == pytest.approx(3 * flops["forward_gflops_per_image"])
    last = records[-1]
    assert {"ours_images_per_sec", "mindcv_images_per_sec", "ratio"} <= set(last)
    assert last["ours_images_per_sec"] > 0 and last["mindcv_images_per_sec"] > 0
    assert last["ratio"] == pytest.approx(last["ours_images_per_sec"] / last["mindcv_images_per_sec"])
    assert lines[-1].startswith("{") and json.loads(lines[-1]) == last


def independent_flops(model, tokens: int) -> int:
    """2 x multiply-adds, read off the built model's weight shapes: each Linear on every token (the head on one),
    the patch projection on every patch, and q @ k^T plus attn @ v in every block."""
    total = 0
    for name, p in model.parameters_and_names():
        if not name.endswith("weight") or p.ndim < 2:
            continue
        if name.startswith("patch_embed"):
            total += 2 * (tokens - 1) * int(np.prod(p.shape))
        elif name.startswith("head") or name.startswith("pre_logits"):
            total += 2 * int(np.prod(p.shape))
        else:
            total += 2 * tokens * int(np.prod(p.shape))
    dim = model.embed_dim
    return total + len(model.blocks) * 2 * 2 * tokens * tokens * dim


@pytest.mark.parametrize("kwargs", [dict(), dict(representation_size=24, mlp_ratio=2.0, num_classes=7)])
def test_flop_count_matches_an_independent_count(kwargs):
    args = dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5) | kwargs
    model = create_model("vit_ti16", **args)
    counted = vit_flops(args["image_size"], args["patch_size"], args["embed_dim"], args["depth"],
                        args.get("mlp_ratio", 4.0), args["num_classes"],
                        representation_size=args.get("representation_size"))
    assert counted["total"] == independent_flops(model, tokens=(32 // 8) ** 2 + 1)


def test_flops_of_published_sizes():
    # ViT-B/16: 17.56 GMACs, ViT-S/16: 4.6, ViT-Ti/16: 1.26 (the usual fvcore / DeiT figures)
    assert model_flops(load_config("vit_b16").model)["total"] / 2e9 == pytest.approx(17.56, abs=0.01)
    assert model_flops(load_config("vit_s16").model)["total"] / 2e9 == pytest.approx(4.60, abs=0.01)
    assert model_flops(load_config("vit_ti16").model)["total"] / 2e9 == pytest.approx(1.25, abs=0.01)
    assert TRAIN_FACTOR == 3


def gradients(model, x, y):
    loss_fn = lambda images, labels: ops.cross_entropy(model(images), labels)  # noqa: E731
    loss, grads = ms.value_and_grad(loss_fn, None, model.trainable_params())(x, y)
    return float(loss.asnumpy()), [g.asnumpy() for g in grads]


@pytest.mark.parametrize("gelu", ["erf", "tanh"])
def test_custom_backward_gives_autodiff_gradients(gelu):
    kwargs = dict(num_classes=5, image_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3, gelu=gelu)
    plain, custom = create_model("vit_ti16", **kwargs), create_model("vit_ti16", custom_backward=True, **kwargs)
    ms.load_param_into_net(custom, {p.name: Parameter(p.data.copy(), p.name) for p in plain.get_parameters()})
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    y = Tensor(np.array([0, 1, 2, 3], np.int32))
    loss_a, grads_a = gradients(plain, x, y)
    loss_b, grads_b = gradients(custom, x, y)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for p, a, b in zip(plain.trainable_params(), grads_a, grads_b):
        assert np.abs(a - b).max() <= 1e-5 * max(np.abs(a).max(), 1e-3), p.name


def test_mixed_precision_keeps_autodiff_and_trains_alike():
    cfg = load_config("demo", ["amp.level=O2"])
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    y = Tensor(np.array([1, 2, 3, 4], np.int32))
    losses = []
    for custom in (False, True):
        ms.set_seed(0)
        model = create_model("vit_ti16", num_classes=10, image_size=32, patch_size=8, embed_dim=32, depth=1,
                             num_heads=2, custom_backward=custom)
        step = build_train_step(model, AdamW(model.trainable_params(), learning_rate=[1e-3] * 4), cfg, "O2")
        losses.append([float(step(x, y)[0].asnumpy()) for _ in range(2)])
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)


def test_device_selects_attention_and_backward():
    mcfg = load_config("demo").model
    cpu = model_from_config(mcfg, "CPU")
    assert not cpu.blocks[0].attn.fused and cpu.blocks[0].attn.softmax is not None
    assert cpu.blocks[0].norm1.function is not None and cpu.blocks[0].mlp.act.function is not None
    ascend = model_from_config(mcfg, "Ascend")  # built only: the flash-attention kernel runs on Ascend
    assert all(block.attn.fused for block in ascend.blocks) and ascend.patch_embed.use_conv
    assert ascend.blocks[0].norm1.function is None and ascend.blocks[0].attn.softmax is None
    gpu = model_from_config(mcfg, "GPU")
    assert not gpu.blocks[0].attn.fused and gpu.blocks[0].norm1.function is None


def test_plain_attention_with_custom_softmax_is_standard_attention():
    model = create_model("vit_ti16", num_classes=3, image_size=32, depth=1, num_heads=3, custom_backward=True)
    attn = model.blocks[0].attn
    attn.set_train(False)
    x = np.random.default_rng(1).standard_normal((2, 5, 192)).astype(np.float32)
    w, b = attn.qkv.weight.asnumpy(), attn.qkv.bias.asnumpy()
    q, k, v = (x @ w.T + b).reshape(2, 5, 3, 3, 64).transpose(2, 0, 3, 1, 4)  # (B, H, N, Dh) each
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(64)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = (p @ v).transpose(0, 2, 1, 3).reshape(2, 5, 192) @ attn.proj.weight.asnumpy().T + attn.proj.bias.asnumpy()
    assert np.abs(attn(Tensor(x)).asnumpy() - ref).max() < 1e-4


@pytest.mark.parametrize("groups", [True, False])
def test_fused_adamw_matches_mindcv_adamw(groups):
    rng = np.random.default_rng(0)
    shapes = [(16, 8), (8,), (4, 16), (4,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]

    def build(cls):
        params = [Parameter(Tensor(a.copy()), name=f"p{i}") for i, a in enumerate(init)]
        spec = [{"params": params[0::2], "weight_decay": 0.05}, {"params": params[1::2], "weight_decay": 0.0},
                {"order_params": params}] if groups else params
        return cls(spec, learning_rate=list(np.linspace(1e-3, 5e-3, 12)), beta1=0.9, beta2=0.999, eps=1e-8,
                   weight_decay=0.05), params

    (ref, ref_params), (fused, fused_params) = build(MindcvAdamW), build(AdamW)
    for _ in range(12):
        grads = tuple(Tensor((rng.standard_normal(s) * 10 ** rng.uniform(-4, 1)).astype(np.float32)) for s in shapes)
        ref(grads)
        fused(grads)
    for a, b, start in zip(ref_params, fused_params, init):
        a, b = a.asnumpy(), b.asnumpy()
        assert np.abs(a - start).max() > 1e-3  # the parameters moved
        np.testing.assert_allclose(b, a, rtol=0, atol=2 * np.spacing(np.abs(a).max()))
    assert [p.name for p in fused.get_parameters()] == [p.name for p in ref.get_parameters()]


class _Scale(nn.Cell):
    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(np.ones(3, np.float32)), name="w")

    def construct(self, x):
        return self.w * x  # (B, 3) "logits"


def test_o0_step_checks_the_loss_and_skips_a_non_finite_one():
    cfg = load_config("demo")
    net = _Scale()
    step = build_train_step(net, nn.SGD(net.trainable_params(), learning_rate=0.1), cfg, "O0")
    assert step.check_loss_only
    y = Tensor(np.array([0, 1], np.int32))
    loss, overflow, scale = step(Tensor(np.full((2, 3), np.inf, np.float32)), y)
    assert bool(overflow.asnumpy()) and not math.isfinite(float(loss.asnumpy())) and float(scale.asnumpy()) == 1.0
    np.testing.assert_array_equal(net.w.asnumpy(), np.ones(3))  # no update
    loss, overflow, _ = step(Tensor(np.ones((2, 3), np.float32)), y)
    assert not bool(overflow.asnumpy()) and math.isfinite(float(loss.asnumpy()))
    assert not np.allclose(net.w.asnumpy(), np.ones(3))
    other = _Scale()
    assert not build_train_step(other, nn.SGD(other.trainable_params(), 0.1), cfg, "O2").check_loss_only
