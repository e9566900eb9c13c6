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
