"""vit_ms.train.ema: the EMA follows the numpy recurrence over the raw weights' history, skips overflowed steps,
swaps in for evaluation, and survives a checkpoint round trip exactly."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from vit_ms.config_loader import load_config
from vit_ms.plan import resolve_plan
from vit_ms.runtime import Runtime
from vit_ms.train.checkpoint import TrainState, save_checkpoint
from vit_ms.train.ema import WeightEma, decay_at
from vit_ms.train.step import build_train_step, loss_scale_sense
from vit_ms.weights.checkpoint import ema_weights, has_ema, network_params, read_checkpoint
from vit_ms.train.step import TrainStep


class Linear2(nn.Cell):
    """loss = mean((x W + b - y)^2): two parameters that every step moves."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.w = Parameter(Tensor(rng.standard_normal((4, 2)).astype(np.float32)), name="w")
        self.b = Parameter(Tensor(np.zeros(2, np.float32)), name="b")

    def construct(self, x, y):
        return ((ms.ops.matmul(x, self.w) + self.b - y) ** 2).mean()


def make_step(decay=0.8, warmup=False, loss_scale=None):
    net = Linear2()
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.05, momentum=0.9)
    scale = loss_scale if loss_scale is not None else Tensor(1.0, ms.float32)
    return net, TrainStep(net, opt, scale, ema=WeightEma(opt.parameters, decay, warmup))


def batches(n, seed=1):
    rng = np.random.default_rng(seed)
    return [(Tensor(rng.standard_normal((8, 4)).astype(np.float32)),
             Tensor(rng.standard_normal((8, 2)).astype(np.float32))) for _ in range(n)]


@pytest.mark.parametrize("mode,warmup", [(ms.GRAPH_MODE, False), (ms.GRAPH_MODE, True), (ms.PYNATIVE_MODE, True)])
def test_ema_equals_numpy_recurrence_over_the_weight_history(mode, warmup, keep_mindspore_mode):
    ms.set_context(mode=mode)
    net, step = make_step(decay=0.8, warmup=warmup)
    ema = {"w": net.w.asnumpy().astype(np.float64), "b": net.b.asnumpy().astype(np.float64)}
    for n, (x, y) in enumerate(batches(6)):
        step(x, y)
        d = min(0.8, 1 - (1 + n) ** (-2 / 3)) if warmup else 0.8
        assert decay_at(0.8, warmup, n) == pytest.approx(d)
        for name in ema:
            ema[name] = d * ema[name] + (1 - d) * getattr(net, name).asnumpy()
    shadow = {p.name: p.asnumpy() for p in step.ema.shadow}
    assert set(shadow) == {"ema.w", "ema.b"} and all(v.dtype == np.float32 for v in shadow.values())
    for name in ema:
        assert np.abs(getattr(net, name).asnumpy() - ema[name]).max() > 1e-3  # the average lags the weights
        np.testing.assert_allclose(shadow[f"ema.{name}"], ema[name], rtol=0, atol=1e-6)
    assert float(step.ema.num_updates.asnumpy()) == 6


def test_overflow_skipped_step_leaves_the_ema_untouched():
    plan = resolve_plan(load_config("vit_b16", ["amp.level=O2", f"amp.loss_scale_value={2.0 ** 120}"]), Runtime("CPU"))
    net, step = make_step(loss_scale=loss_scale_sense(plan))
    before = [p.asnumpy().copy() for p in step.ema.shadow]
    x, y = Tensor(np.full((8, 4), 1e30, np.float32)), Tensor(np.zeros((8, 2), np.float32))
    _, overflow, _ = step(x, y)
    assert bool(overflow.asnumpy())
    for p, b in zip(step.ema.shadow, before):
        np.testing.assert_array_equal(p.asnumpy(), b)
    assert float(step.ema.num_updates.asnumpy()) == 0


def test_applied_swaps_the_average_in_and_back():
    net, step = make_step()
    for x, y in batches(2):
        step(x, y)
    params = list(step.weights)
    raw = [p.asnumpy().copy() for p in params]
    with step.ema.applied(params):
        for p, s in zip(params, step.ema.shadow):
            np.testing.assert_array_equal(p.asnumpy(), s.asnumpy())
    for p, r in zip(params, raw):
        np.testing.assert_array_equal(p.asnumpy(), r)


def test_checkpoint_round_trip_restores_the_ema_exactly(tmp_path):
    """Two steps, save, rebuild, load, two more steps == four uninterrupted steps (EMA included, bit for bit)."""
    data = batches(4)
    net, full = make_step()
    for x, y in data:
        full(x, y)
    _, first = make_step()
    for x, y in data[:2]:
        first(x, y)
    save_checkpoint(first, tmp_path / "last.ckpt", TrainState(global_step=2))
    params = read_checkpoint(tmp_path / "last.ckpt")
    assert has_ema(params) and {"ema.w", "ema.b", "ema.num_updates"} <= set(params)
    _, resumed = make_step()
    ms.load_param_into_net(resumed, network_params(params))
    for x, y in data[2:]:
        resumed(x, y)
    for a, b in zip(full.ema.shadow, resumed.ema.shadow):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    merged = ema_weights(params, {"w": 0, "b": 1, "other": 2})
    np.testing.assert_array_equal(merged["w"].asnumpy(), params["ema.w"].asnumpy())
    assert merged["other"] == 2


def test_build_train_step_adds_the_ema_only_when_asked():
    class Logits(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = Parameter(Tensor(np.ones(3, np.float32)), name="w")

        def construct(self, x):
            return self.w * x

    for on in (False, True):
        cfg = load_config("demo", [f"train.ema={str(on).lower()}", "train.ema_decay=0.5"])
        net = Logits()
        step = build_train_step(net, nn.SGD(net.trainable_params(), 0.1), cfg, resolve_plan(cfg, Runtime("CPU")))
        assert (step.ema is not None) == on
        names = {p.name for p in step.get_parameters()}
        assert ("ema.w" in names) == on


def test_inference_picks_raw_or_ema_and_defaults_to_the_recorded_best():
    from vit_ms.errors import CheckpointError
    from vit_ms.weights.checkpoint import chosen_weights

    raw, avg = Tensor(np.zeros(2, np.float32)), Tensor(np.ones(2, np.float32))
    params = {"w": raw, "ema.w": avg, "ema.num_updates": Tensor(3.0), "adam_m.w": raw, "vit_ms_best_weights": "ema"}
    source = "run/best.ckpt"
    assert chosen_weights(params, None, source)["w"] is avg and set(chosen_weights(params, None, source)) == {"w"}
    assert chosen_weights(params, "raw", source)["w"] is raw
    plain = {"w": raw}
    assert chosen_weights(plain, None, "run/old.ckpt")["w"] is raw  # no record: raw
    with pytest.raises(CheckpointError, match="checkpoint 'run/old.ckpt' holds no EMA weights .* use --weights raw"):
        chosen_weights(plain, "ema", "run/old.ckpt")
