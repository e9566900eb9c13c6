"""vit_ms.data.sampler repeated augmentation (data.aug_repeats, DeiT's RASampler semantics)."""
from collections import Counter

import numpy as np
import pytest

from vit_ms.data import EpochSampler


def shards(n, k, r, **kw):
    return [EpochSampler(n, shuffle=True, seed=5, num_shards=r, shard_id=i, repeats=k, **kw) for i in range(r)]


@pytest.mark.parametrize("n,k,r", [(12, 3, 4), (9, 3, 3), (16, 2, 2)])
def test_before_the_cut_every_index_appears_k_times_on_different_shards(n, k, r):
    samplers = shards(n, k, r)
    before = [s.repeated_shard(s.epoch_order(2)) for s in samplers]
    counts = Counter(np.concatenate(before).tolist())
    assert sorted(counts) == list(range(n)) and set(counts.values()) == {k}
    for index in range(n):
        holders = [i for i, part in enumerate(before) for x in part if x == index]
        assert len(set(holders)) == k  # k copies, k different shards
    after = [s.epoch_indices(2) for s in samplers]
    assert all(len(a) == n // r for a in after)  # the usual samples per shard
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b[: n // r])


def test_padding_repeats_the_start_as_deit_does():
    samplers = shards(10, 3, 4)  # 30 copies padded to 32 with the first two
    order = samplers[0].epoch_order(0)
    counts = Counter(np.concatenate([s.repeated_shard(order) for s in samplers]).tolist())
    assert counts[int(order[0])] == 5 and all(counts[int(i)] == 3 for i in order[1:])
    assert [len(s.epoch_indices(0)) for s in samplers] == [2, 2, 2, 2]


def test_one_shard_sees_each_image_k_times_in_a_row():
    (sampler,) = shards(12, 3, 1)
    got = sampler.epoch_indices(0)
    order = sampler.epoch_order(0)
    assert len(got) == 12
    np.testing.assert_array_equal(got, np.repeat(order[:4], 3))


def test_deterministic_per_epoch_and_resumable_mid_epoch():
    a, b = shards(12, 3, 2)[1], shards(12, 3, 2)[1]
    np.testing.assert_array_equal(a.epoch_indices(4), b.epoch_indices(4))
    assert not np.array_equal(a.epoch_indices(4), a.epoch_indices(5))
    full = EpochSampler(12, shuffle=True, seed=5, num_shards=2, shard_id=1, repeats=3)
    resumed = EpochSampler(12, shuffle=True, seed=5, num_shards=2, shard_id=1, repeats=3, start_epoch=1, skip=4)
    assert list(resumed) == full.epoch_indices(1)[4:].tolist()
    assert list(resumed) == full.epoch_indices(2).tolist()  # later epochs whole again


def test_pipeline_keeps_the_steps_per_epoch(tiny_imagenet):
    from tiny import tiny_overrides

    from vit_ms.config_loader import load_config
    from vit_ms.data import Feed, create_dataset

    cfg = load_config(None, tiny_overrides(num_classes=3) + [f"data.root={tiny_imagenet}", "data.aug_repeats=3",
                                                              "data.num_parallel_workers=1", "data.mixup=0",
                                                              "data.cutmix=0"])
    dataset, info = create_dataset(cfg.data, "train", Feed.of(cfg, 4))
    assert info.steps_per_epoch == 24 // 4
    labels = np.concatenate([y for _, y in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)])
    assert len(labels) == 24 and all(labels[i] == labels[i + 1] == labels[i + 2] for i in range(0, 24, 3))
