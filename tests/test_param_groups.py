"""vit_ms.train.optim parameter groups: BEiT/MAE layer ids, lr scales and weight-decay exemptions, checked through real
optimizer steps (every parameter's effective lr equals the formula)."""
import re

import numpy as np
import pytest
from mindspore import Tensor
from tiny import tiny_model

from vit_ms.config import OptimConfig
from vit_ms.train.optim import build_optimizer
from vit_ms.train.optim import group_table, parameter_groups

DEPTH = 2


def expected_layer(name: str) -> int:
    """Written out independently of layer_id: embeddings 0, block i -> i + 1, the rest depth + 1."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    match = re.match(r"blocks\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else DEPTH + 1


def exempt(name: str, shape) -> bool:
    return len(shape) <= 1 or name in ("cls_token", "pos_embed")


def _model_and_params():
    model = tiny_model(depth=DEPTH)
    return model, model.trainable_params()


def test_groups_and_table():
    model, params = _model_and_params()
    groups = parameter_groups(model, params, weight_decay=0.05, layer_decay=0.5)
    assert sum(len(g.params) for g in groups) == len(params)
    for g in groups:
        for p in g.params:
            assert g.layer == expected_layer(p.name)
            assert g.lr_scale == pytest.approx(0.5 ** (DEPTH + 1 - g.layer))
            assert g.weight_decay == (0.0 if exempt(p.name, p.shape) else 0.05)
    table = group_table(groups).splitlines()
    assert table[0].split() == ["layer", "lr", "scale", "weight", "decay", "tensors", "parameters"]
    assert table[1].split()[:3] == ["0", "0.12500", "0.05"]  # patch_embed.proj.weight
    assert sum(int(line.split()[-1]) for line in table[1:]) == sum(int(p.size) for p in params)
    off = parameter_groups(model, params, weight_decay=0.05, layer_decay=1.0)
    assert [(g.layer, g.lr_scale, g.weight_decay) for g in off] == [(-1, 1.0, 0.05), (-1, 1.0, 0.0)]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_every_parameter_trains_at_its_layer_lr(name):
    """Step 1 with zero gradients moves only decayed weights (by lr x scale x decay x w); step 2 with random
    gradients moves every parameter by the formula of its optimizer at lr x scale."""
    decay, wd, lrs = 0.6, 0.05, [0.1, 0.2]
    model, params = _model_and_params()
    ocfg = OptimConfig(name=name, momentum=0.0, weight_decay=wd, layer_decay=decay)
    opt = build_optimizer(model, params, ocfg, lrs)
    rng = np.random.default_rng(0)
    before = [p.asnumpy().copy() for p in params]
    opt(tuple(Tensor(np.zeros(p.shape, np.float32)) for p in params))
    for p, w in zip(params, before):
        scale = decay ** (DEPTH + 1 - expected_layer(p.name))
        w_decay = 0.0 if exempt(p.name, p.shape) else wd
        np.testing.assert_allclose(p.asnumpy(), w - lrs[0] * scale * w_decay * w, rtol=1e-5, atol=1e-8,
                                   err_msg=p.name)
    mid = [p.asnumpy().copy() for p in params]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    opt(tuple(Tensor(g) for g in grads))
    for p, w, g in zip(params, mid, grads):
        lr = lrs[1] * decay ** (DEPTH + 1 - expected_layer(p.name))
        w_decay = 0.0 if exempt(p.name, p.shape) else wd
        if name == "sgd":  # L2 in the gradient, no momentum
            want = w - lr * (g + w_decay * w)
        else:  # second Adam step after a zero gradient: m = 0.1 g, v = 0.001 g^2, decoupled decay
            m_hat, v_hat = 0.1 * g / (1 - 0.9 ** 2), 0.001 * g * g / (1 - 0.999 ** 2)
            want = w - lr * (m_hat / (np.sqrt(v_hat) + 1e-8) + w_decay * w)
        np.testing.assert_allclose(p.asnumpy(), want, rtol=1e-5, atol=1e-6, err_msg=p.name)


def test_resume_keeps_the_configured_per_group_lr_tables(tmp_path):
    """Checkpoints hold the per-group lr tables (learning_rate_group_<n>); a resume takes the tables from the
    config (it may extend train.epochs), the weights and moments from the file."""

    from vit_ms.train.checkpoint import TrainState, save_checkpoint, train_state
    from vit_ms.weights.checkpoint import read_checkpoint
    from vit_ms.train.step import TrainStep
    from vit_ms.train.losses import ClassificationLoss, WithLoss
    from vit_ms.train.trainer import Resume, restore

    def build(lrs):
        model, params = _model_and_params()
        opt = build_optimizer(model, params, OptimConfig(name="sgd", layer_decay=0.5), lrs)
        return model, opt, TrainStep(WithLoss(model, ClassificationLoss(0.0)), opt, Tensor(np.float32(1.0)))

    model, _, step = build([0.1] * 4)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    step(x, Tensor(np.array([0, 1], np.int32)))
    save_checkpoint(step, tmp_path / "last.ckpt", TrainState(global_step=1))
    params = read_checkpoint(tmp_path / "last.ckpt")
    assert any(k.startswith("learning_rate_group_") for k in params)
    resumed_model, opt, resumed_step = build([0.2] * 8)
    restore(resumed_step, resumed_model, Resume(tmp_path / "last.ckpt", params, train_state(params)))
    for p, q in zip(model.get_parameters(), resumed_model.get_parameters()):
        np.testing.assert_array_equal(q.asnumpy(), p.asnumpy())
    for p in opt.parameters:
        table = opt.get_lr_parameter(p).asnumpy()  # the group's per-step lr table
        np.testing.assert_allclose(table, 0.2 * 0.5 ** (DEPTH + 1 - expected_layer(p.name)), rtol=1e-6)
        assert len(table) == 8
