"""vit_ms.train.step: the train step, loss-scale overflow handling, clipping; with the losses and the optimizer/
schedule it drives, against numpy."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from vit_ms.config_loader import load_config
from vit_ms.train.losses import ClassificationLoss
from vit_ms.train.step import TrainStep, build_train_step, loss_scale_sense
from vit_ms.models import create_model
from vit_ms.plan import resolve_plan
from vit_ms.runtime import Runtime
from vit_ms.train.optim import build_optimizer, lr_schedule, scaled_lr

ms.set_context(mode=ms.PYNATIVE_MODE)


def cpu_plan(cfg):
    return resolve_plan(cfg, Runtime("CPU"))


def log_softmax(x):
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def test_label_smoothed_and_soft_target_cross_entropy_match_numpy():
    logits = np.random.randn(6, 4).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1, 0], np.int32)
    eps = 0.1
    target = np.full((6, 4), eps / 4) + (1 - eps) * np.eye(4)[labels]
    ref = -(target * log_softmax(logits)).sum(1).mean()
    got = ClassificationLoss(eps)(Tensor(logits), Tensor(labels)).asnumpy()
    assert abs(got - ref) < 1e-5
    soft = np.random.dirichlet(np.ones(4), size=6).astype(np.float32)
    ref_soft = -(soft * log_softmax(logits)).sum(1).mean()
    assert abs(ClassificationLoss(eps)(Tensor(logits), Tensor(soft)).asnumpy() - ref_soft) < 1e-5


def test_lr_is_scaled_by_global_batch_and_follows_warmup_then_cosine():
    ocfg = load_config("vit_b16").optim
    assert scaled_lr(ocfg, 1024) == pytest.approx(1e-3)
    ocfg.lr_batch_size = 0
    assert scaled_lr(ocfg, 1024) == 5e-4
    ocfg.warmup_epochs, ocfg.warmup_lr, ocfg.min_lr = 2, 1e-6, 1e-5
    lrs = lr_schedule(ocfg, 1e-3, epochs=10, steps_per_epoch=5)
    assert len(lrs) == 50
    # linear warmup over 2 epochs of 5 steps from warmup_lr to the peak
    assert lrs[:11] == pytest.approx([1e-6 + (1e-3 - 1e-6) * i / 10 for i in range(11)], rel=1e-6)
    assert max(lrs) == pytest.approx(1e-3, rel=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then decaying
    assert lrs[-1] == pytest.approx(1e-5, rel=0.2)
    mid = 10 + 20  # halfway through the cosine part: (max + min) / 2
    assert lrs[mid] == pytest.approx((1e-3 + 1e-5) / 2, rel=0.05)


def test_optimizer_exempts_norms_biases_and_embeddings_from_weight_decay():
    model = create_model("vit_ti16", num_classes=3, image_size=32, depth=1, embed_dim=32, num_heads=2)
    ocfg = load_config("vit_b16").optim
    opt = build_optimizer(model, model.trainable_params(), ocfg, [1e-3] * 4)
    decayed = {p.name for p, flag in zip(opt.parameters, opt.decay_flags) if flag}
    assert "blocks.0.attn.qkv.weight" in decayed and "head.weight" in decayed
    assert not decayed & {"cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.mlp.fc1.bias", "norm.bias"}


class Scale(nn.Cell):
    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(Tensor(np.ones(3, np.float32)), name="w")

    def construct(self, x, y):
        return (self.w * x).sum() + y.sum() * 0


def test_overflowed_step_is_skipped_and_the_dynamic_scale_drops():
    net = Scale()
    opt = nn.SGD(net.trainable_params(), learning_rate=0.1)
    plan = cpu_plan(load_config("vit_b16", ["amp.level=O2", f"amp.loss_scale_value={2.0 ** 120}"]))
    assert plan.loss_scale == "dynamic"
    step = TrainStep(net, opt, loss_scale_sense(plan))
    x, y = Tensor(np.full(3, 1e30, np.float32)), Tensor(np.zeros(1, np.float32))
    loss, overflow, scale = step(x, y)
    assert bool(overflow.asnumpy()) and float(scale.asnumpy()) == 2.0 ** 120
    np.testing.assert_array_equal(net.w.asnumpy(), np.ones(3))  # no update
    assert float(step.scale_sense.asnumpy()) == 2.0 ** 119  # halved for the next step
    loss, overflow, _ = step(Tensor(np.ones(3, np.float32)), y)
    assert not bool(overflow.asnumpy())
    np.testing.assert_allclose(net.w.asnumpy(), np.ones(3) - 0.1, rtol=1e-6)  # unscaled gradient of 1


def test_gradient_clipping_by_global_norm():
    net = Scale()
    step = TrainStep(net, nn.SGD(net.trainable_params(), learning_rate=1.0), Tensor(1.0, ms.float32),
                     clip_grad_norm=1.0)
    step(Tensor(np.array([3.0, 4.0, 0.0], np.float32)), Tensor(np.zeros(1, np.float32)))  # grad norm 5
    np.testing.assert_allclose(net.w.asnumpy(), 1 - np.array([0.6, 0.8, 0.0]), rtol=1e-6)


class _Scale(nn.Cell):
    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(np.ones(3, np.float32)), name="w")

    def construct(self, x):
        return self.w * x  # (B, 3) "logits"


def test_o0_step_checks_the_loss_and_skips_a_non_finite_one():
    cfg = load_config("demo")
    net = _Scale()
    step = build_train_step(net, nn.SGD(net.trainable_params(), learning_rate=0.1), cfg, cpu_plan(cfg))
    assert step.check_loss_only
    y = Tensor(np.array([0, 1], np.int32))
    loss, overflow, scale = step(Tensor(np.full((2, 3), np.inf, np.float32)), y)
    assert bool(overflow.asnumpy()) and not math.isfinite(float(loss.asnumpy())) and float(scale.asnumpy()) == 1.0
    np.testing.assert_array_equal(net.w.asnumpy(), np.ones(3))  # no update
    loss, overflow, _ = step(Tensor(np.ones((2, 3), np.float32)), y)
    assert not bool(overflow.asnumpy()) and math.isfinite(float(loss.asnumpy()))
    assert not np.allclose(net.w.asnumpy(), np.ones(3))
    other = _Scale()
    o2 = load_config("demo", ["amp.level=O2"])
    assert not build_train_step(other, nn.SGD(other.trainable_params(), 0.1), o2, cpu_plan(o2)).check_loss_only


def test_amp_o1_really_casts_the_matmuls_and_trains_the_models_own_parameters(tmp_path, monkeypatch):
    """O1: auto_mixed_precision returns a new network (float16 matmuls, the rest float32) sharing the model's
    parameters; the train step computes with the network it returns (MindSpore 2.10's rewrite also swaps the
    model's sub-cells in place, but not the top-level cell), and the optimizer updates those parameters."""
    from vit_ms.models import model_from_plan

    monkeypatch.chdir(tmp_path)  # MindSpore's O1 rewrite writes its generated source under ./rewritten_network
    cfg = load_config("demo", ["amp.level=O1", "amp.loss_scale=fixed", "amp.loss_scale_value=1", "model.depth=1",
                               "data.mixup=0", "data.cutmix=0"])
    plan = cpu_plan(cfg)
    assert (plan.amp_level, plan.amp_dtype) == ("O1", "float16")
    ms.set_seed(0)
    model = model_from_plan(plan)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    y = Tensor(np.array([0, 1], np.int32))
    float32_logits = model(x).asnumpy()
    step = build_train_step(model, nn.SGD(model.trainable_params(), 0.1), cfg, plan)
    amp_net = step.network.network
    assert amp_net is not model
    o1_logits = amp_net(x).asnumpy()
    diff = np.abs(o1_logits - float32_logits).max()
    assert 1e-6 < diff < 1e-2 * np.abs(float32_logits).max()  # float16 rounding, not float32's exact result
    assert {id(p) for p in amp_net.get_parameters()} == {id(p) for p in model.get_parameters()}
    assert [p.name for p in amp_net.get_parameters()] == [p.name for p in model.get_parameters()]  # same checkpoint
    before = model.head.weight.asnumpy().copy()
    loss, overflow, _ = step(x, y)
    assert not bool(overflow.asnumpy()) and np.isfinite(float(loss.asnumpy()))
    assert not np.array_equal(model.head.weight.asnumpy(), before)
