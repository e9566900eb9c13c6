"""Gradient accumulation in vit_ms.train.step and the plan/data sides of gradient accumulation: k micro-batches of b give the update
of one batch of k*b; a non-finite micro-batch skips the whole step; the plan derives accum_steps from the global
batch; the pipeline stacks micro-batches and the lr table counts optimizer steps."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from tiny import tiny_model, tiny_overrides

from vit_ms.config_loader import load_config
from vit_ms.data import Feed, create_dataset
from vit_ms.errors import ConfigError
from vit_ms.plan import resolve_plan
from vit_ms.runtime import Runtime
from vit_ms.train.step import TrainStep
from vit_ms.train.losses import ClassificationLoss, WithLoss
from vit_ms.train.optim import lr_schedule


def step_for(accum: int, scale: float):
    ms.set_seed(3)
    model = tiny_model(depth=1)  # no dropout, no drop path
    net = WithLoss(model, ClassificationLoss(0.1))
    opt = nn.SGD(model.trainable_params(), learning_rate=0.1, momentum=0.9)
    return model, TrainStep(net, opt, Tensor(scale, ms.float32), check_loss_only=scale == 1.0, accum_steps=accum)


@pytest.mark.parametrize("scale", [1.0, 1024.0])  # the O0 loss-check path and the loss-scaled path
def test_k_micro_batches_give_the_update_of_one_big_batch(scale, keep_mindspore_mode):
    ms.set_context(mode=ms.GRAPH_MODE)
    k, b = 3, 4
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((k * b, 3, 32, 32)).astype(np.float32), rng.integers(0, 3, k * b).astype(np.int32))
            for _ in range(2)]
    big_model, big = step_for(1, scale)
    acc_model, acc = step_for(k, scale)
    start = {p.name: p.asnumpy().copy() for p in big_model.get_parameters()}
    for x, y in data:
        loss_big, overflow, _ = big(Tensor(x), Tensor(y))
        loss_acc, overflow_acc, _ = acc(Tensor(x.reshape(k, b, 3, 32, 32)), Tensor(y.reshape(k, b)))
        assert not bool(overflow.asnumpy()) and not bool(overflow_acc.asnumpy())
        assert float(loss_acc.asnumpy()) == pytest.approx(float(loss_big.asnumpy()), rel=1e-5)
    moved = 0.0
    for p, q in zip(big_model.get_parameters(), acc_model.get_parameters()):
        np.testing.assert_allclose(q.asnumpy(), p.asnumpy(), rtol=0, atol=1e-5, err_msg=p.name)
        moved = max(moved, np.abs(p.asnumpy() - start[p.name]).max())
    assert moved > 1e-3


def test_a_non_finite_micro_batch_skips_the_whole_step():
    model, acc = step_for(2, 1.0)
    before = {p.name: p.asnumpy().copy() for p in model.get_parameters()}
    x = np.zeros((2, 2, 3, 32, 32), np.float32)
    x[1, 0, 0, 0, 0] = np.inf  # only the second micro-batch is bad
    _, overflow, _ = acc(Tensor(x), Tensor(np.zeros((2, 2), np.int32)))
    assert bool(overflow.asnumpy())
    for p in model.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name])


def plan_of(*overrides, world_size=1):
    return resolve_plan(load_config("vit_b16", list(overrides)), Runtime("CPU", world_size=world_size))


def test_plan_derives_accumulation_from_the_global_batch():
    plan = plan_of("train.global_batch_size=1024", "train.batch_size=128", world_size=2)
    assert (plan.batch_size, plan.accum_steps, plan.global_batch_size) == (128, 4, 1024)
    assert any("train.accum_steps=auto -> 4" in n for n in plan.notes)
    assert "batch 128 per device x 4 accumulated, 1024 global" in plan.describe()
    plan = plan_of("train.global_batch_size=96", "train.batch_size=40")  # 96 = 3 x 32: fewest micro-batches <= 40
    assert (plan.batch_size, plan.accum_steps) == (32, 3)
    plan = plan_of("train.global_batch_size=256", "train.batch_size=128", "train.accum_steps=8")
    assert (plan.batch_size, plan.accum_steps) == (32, 8)
    plan = plan_of("train.global_batch_size=0", "train.batch_size=16", "train.accum_steps=4", world_size=2)
    assert (plan.batch_size, plan.accum_steps, plan.global_batch_size) == (16, 4, 128)
    assert plan_of("train.global_batch_size=64").accum_steps == 1
    assert plan_of(world_size=8).accum_steps == 1 and plan_of().accum_steps == 8  # vit_b16.yaml: 1024 global
    with pytest.raises(ConfigError, match="not divisible into train.accum_steps=3 micro-batches"):
        plan_of("train.global_batch_size=256", "train.accum_steps=3")
    with pytest.raises(ConfigError, match="train.accum_steps=-1 must be >= 0"):
        load_config("vit_b16", ["train.accum_steps=-1"])


def test_pipeline_stacks_micro_batches_and_the_lr_table_counts_optimizer_steps(tiny_imagenet):
    cfg = load_config(None, tiny_overrides(num_classes=3) + [f"data.root={tiny_imagenet}", "data.mixup=0.2",
                                                              "data.num_parallel_workers=1"])
    k, b, epochs = 3, 2, 2
    dataset, info = create_dataset(cfg.data, "train", Feed.of(cfg, b, accum_steps=k))
    assert info.steps_per_epoch == 24 // (b * k) == 4
    batches = list(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(batches) == 4
    images, labels = batches[0]
    assert images.shape == (k, b, 3, 32, 32) and labels.shape == (k, b, 3)  # mixed-up soft labels per micro-batch
    lrs = lr_schedule(cfg.optim, 1e-3, epochs, info.steps_per_epoch)
    assert len(lrs) == epochs * (24 // b) // k
    resumed, _ = create_dataset(cfg.data, "train", Feed.of(cfg, b, accum_steps=k, skip_steps=3))
    assert len(list(resumed.create_tuple_iterator(num_epochs=1))) == 1
