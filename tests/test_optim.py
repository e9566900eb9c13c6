"""vit_ms.train.optim: the fused AdamW equals mindcv's AdamW step for step."""
import numpy as np
import pytest
from mindcv.optim.adamw import AdamW as MindcvAdamW
from mindspore import Parameter, Tensor

from vit_ms.train.optim import AdamW


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


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_numpy(nesterov):
    """Three steps of build_optimizer's SGD equal PyTorch's update computed in numpy: g += wd w (decayed
    parameters only), v = m v + g (v = g at the first step), w -= lr v (nesterov: w -= lr (g + m v))."""
    from tiny import tiny_model

    from vit_ms.config import OptimConfig
    from vit_ms.train.optim import build_optimizer

    model = tiny_model(depth=1)
    params = model.trainable_params()
    ocfg = OptimConfig(name="sgd", momentum=0.9, nesterov=nesterov, weight_decay=0.05)
    lrs = [0.1, 0.05, 0.02]
    opt = build_optimizer(model, params, ocfg, lrs)
    no_decay = model.no_weight_decay()
    w = [p.asnumpy().astype(np.float64) for p in params]
    v = [np.zeros_like(x) for x in w]
    rng = np.random.default_rng(1)
    for step, lr in enumerate(lrs):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        opt(tuple(Tensor(g) for g in grads))
        for i, p in enumerate(params):
            g = grads[i] + (0.0 if p.name in no_decay else 0.05) * w[i]
            v[i] = g if step == 0 else 0.9 * v[i] + g
            w[i] = w[i] - lr * (g + 0.9 * v[i] if nesterov else v[i])
    for p, want in zip(params, w):
        np.testing.assert_allclose(p.asnumpy(), want, rtol=1e-5, atol=1e-6, err_msg=p.name)
    assert any(n.startswith("accum.") for n in (q.name for q in opt.get_parameters()))
