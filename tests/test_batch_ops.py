"""vit_ms.data.batch_ops: normalising, random erasing and mixup on whole batches; per-batch seeding."""
import numpy as np
import pytest
from mindspore.dataset import vision

from vit_ms.config import DataConfig
from vit_ms.data import build_augment
from vit_ms.data.batch_ops import BatchFinish, Normalizer, build_mixup, erase_box, random_erase

MEAN, STD = DataConfig().mean, DataConfig().std


class Info:
    """What MindSpore's per_batch_map passes as the last argument."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def get_epoch_num(self):
        return self.epoch

    def get_batch_num(self):
        return self.batch


def uint8_batch(n: int = 4, side: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)  # (B, S, S, 3)


def test_normalizer_equals_the_formula_and_mindspores_normalize():
    images = uint8_batch()
    out = Normalizer(MEAN, STD)(images)
    expected = ((images.astype(np.float64) - MEAN) / STD).transpose(0, 3, 1, 2)  # (B, 3, S, S)
    assert out.shape == (4, 3, 16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    ops = [vision.Normalize(MEAN, STD), vision.HWC2CHW()]
    mindspore = np.stack([ops[1](ops[0](image)) for image in images])
    np.testing.assert_allclose(out, mindspore, rtol=0, atol=1e-6)
    assert Normalizer(MEAN, STD)(images[0]).shape == (3, 16, 16)  # one image as well


def test_erase_box_stays_inside_and_in_range():
    rng = np.random.default_rng(0)
    boxes = [erase_box(rng, 64, 48) for _ in range(2000)]
    assert all(b is not None for b in boxes)  # at these sizes a box is found within 10 attempts
    for top, left, h, w in boxes:
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 48 and h > 0 and w > 0
    area = np.array([h * w for _, _, h, w in boxes]) / (64 * 48)
    aspect = np.array([w / h for _, _, h, w in boxes])
    assert area.min() > 0.01 and area.max() < 0.36 and 0.2 < aspect.min() and aspect.max() < 4.0  # rounding
    assert abs(area.mean() - 0.175) < 0.02  # uniform in [0.02, 0.33]: mean 0.175


def test_random_erase_zeroes_one_box_in_about_prob_of_the_images():
    images = np.ones((400, 3, 32, 32), np.float32)
    random_erase(images, 0.25, np.random.default_rng(1), mode="const")
    zeros = (images == 0).all(axis=1)  # (B, S, S): erased pixels are 0 in every channel
    erased = zeros.any(axis=(1, 2))
    assert 0.18 < erased.mean() < 0.32
    for mask in zeros[erased]:  # one rectangle each
        rows, cols = np.where(mask.any(1))[0], np.where(mask.any(0))[0]
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and mask.sum() == len(rows) * len(cols)
    untouched = np.ones((8, 3, 32, 32), np.float32)
    np.testing.assert_array_equal(random_erase(untouched, 0.0, np.random.default_rng(1)), 1.0)


def test_erase_box_is_timms_area_uniform_and_aspect_log_uniform():
    """timm: area fraction uniform on [0.02, 1/3], log(h / w) uniform on [log 0.3, log(1 / 0.3)]: median w / h 1.0
    and half the boxes wider than tall (a uniform aspect on (0.3, 3.3) gave 1.8 and 76%)."""
    rng = np.random.default_rng(0)
    boxes = [erase_box(rng, 224, 224) for _ in range(20000)]
    boxes = [b for b in boxes if b is not None]
    assert len(boxes) > 19000
    h, w = np.array([b[2] for b in boxes], float), np.array([b[3] for b in boxes], float)
    aspect = w / h
    assert abs(np.median(aspect) - 1.0) < 0.05 and abs((aspect > 1).mean() - (aspect < 1).mean()) < 0.03
    log_aspect = np.log(aspect)
    assert abs(log_aspect.mean()) < 0.02 and abs(log_aspect.std() - np.log(1 / 0.3) / np.sqrt(3)) < 0.03  # uniform
    area = h * w / 224**2
    assert abs(np.median(area) - (0.02 + 1 / 3) / 2) < 0.02 and area.max() < 1 / 3 + 0.01
    halves = [erase_box(rng, 224, 224, count=2) for _ in range(4000)]
    assert abs(np.mean([b[2] * b[3] for b in halves if b]) / 224**2 - (0.02 + 1 / 3) / 4) < 0.01  # area / count


def test_random_erase_modes_fill_as_timm():
    """pixel (DeiT): standard normal noise per pixel in normalised space; rand: one normal colour per box;
    count: that many boxes per erased image."""
    images = np.full((300, 3, 48, 48), 7.0, np.float32)  # 7.0: no noise sample is ever that value
    random_erase(images, 1.0, np.random.default_rng(2), mode="pixel")
    erased = images != 7.0  # (B, 3, S, S)
    assert erased.any(axis=(1, 2, 3)).mean() > 0.97
    values = images[erased]
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1.0) < 0.01 and len(np.unique(values)) > 1000
    colours = np.full((200, 3, 48, 48), 7.0, np.float32)
    random_erase(colours, 1.0, np.random.default_rng(3), mode="rand")
    for image in colours:
        mask = (image != 7.0).all(axis=0)
        if mask.any():
            assert all(len(np.unique(image[c][mask])) == 1 for c in range(3))  # one colour per box
    counted = np.full((200, 3, 64, 64), 7.0, np.float32)
    random_erase(counted, 1.0, np.random.default_rng(4), mode="const", count=3)
    fractions = (counted == 0).all(axis=1).mean(axis=(1, 2))  # (B,) erased share of each image
    assert 0.1 < fractions.mean() < 0.2  # three boxes sharing an area of mean (0.02 + 1/3) / 2, overlapping


def finish(**kwargs) -> BatchFinish:
    cfg = DataConfig(mixup=0.8, cutmix=1.0)  # and RandAugment rand-m9-mstd0.5-inc1
    return BatchFinish(Normalizer(MEAN, STD), augment=build_augment(cfg, 16), re_prob=0.5,
                       mixup=build_mixup(cfg, 5, 0.1), seed=(3, 0), **kwargs)


def test_batch_finish_shapes_and_eval_is_normalising_only():
    images, labels = list(uint8_batch()), [0, 1, 2, 4]
    out, soft = finish()(images, labels, Info(0, 0))
    assert out.shape == (4, 3, 16, 16) and soft.shape == (4, 5) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
    plain = BatchFinish(Normalizer(MEAN, STD))
    out, labels_out = plain(images, labels, Info(0, 0))
    np.testing.assert_array_equal(out, Normalizer(MEAN, STD)(np.stack(images)))
    assert labels_out.dtype == np.int32 and labels_out.tolist() == labels


def test_the_policy_is_applied_and_reproducible_across_threads():
    """RandAugment draws from Python's and numpy's global RNGs: seeded per batch under a lock, so four threads
    finishing the same batches in any order give what one thread gives."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [list(uint8_batch(n=8, seed=k)) for k in range(8)]
    op = BatchFinish(Normalizer(MEAN, STD), augment=build_augment(DataConfig(), 16), seed=(1, 0))
    one = [op(images, [0] * 8, Info(0, k))[0] for k, images in enumerate(batches)]
    with ThreadPoolExecutor(4) as pool:
        many = list(pool.map(lambda k: op(batches[k], [0] * 8, Info(0, k))[0], reversed(range(8))))[::-1]
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)
    plain = [Normalizer(MEAN, STD)(np.stack(images)) for images in batches]
    changed = np.mean([not np.array_equal(a[i], p[i]) for a, p in zip(one, plain) for i in range(8)])
    assert 0.5 < changed  # most images are changed by at least one of the two ops (each applied with p = 0.5)


def test_each_batch_draws_from_its_own_seed_whatever_the_call_order():
    batches = [list(uint8_batch(seed=k)) for k in range(4)]
    labels = [0, 1, 2, 3]
    op = finish()
    forward = [op(images, labels, Info(0, k)) for k, images in enumerate(batches)]
    backward = [op(batches[k], labels, Info(0, k)) for k in reversed(range(4))][::-1]  # another worker order
    for (a, sa), (b, sb) in zip(forward, backward):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)
    assert not np.array_equal(forward[0][1], op(batches[0], labels, Info(1, 0))[1])  # the next epoch differs


@pytest.mark.parametrize("skip", [1, 3])
@pytest.mark.parametrize("counts_from_zero", [True, False])
def test_a_resumed_pipeline_draws_what_the_uninterrupted_one_drew(skip, counts_from_zero):
    """Started at epoch 2 with `skip` batches left out, batch k of the resumed pipeline is batch skip + k of the
    epoch; its later epochs are the same too. MindSpore numbers the epochs from 0, or from 2 (set_init_step)."""
    images, labels = list(uint8_batch()), [0, 1, 2, 3]
    base = 2 if counts_from_zero else 0
    full = finish(start_epoch=2, epoch_base=base)
    resumed = finish(start_epoch=2, skip_batches=skip, epoch_base=base)
    first = 2 - base  # what MindSpore calls epoch 2
    for k in range(2):
        np.testing.assert_array_equal(resumed(images, labels, Info(first, k))[0],
                                      full(images, labels, Info(first, skip + k))[0])
    next_epoch = Info(first + 1, 0)
    np.testing.assert_array_equal(resumed(images, labels, next_epoch)[1], full(images, labels, next_epoch)[1])
    assert not np.array_equal(resumed(images, labels, Info(first, 0))[0], full(images, labels, Info(first, 0))[0])


def test_erasing_settings_are_checked_when_the_config_loads():
    from vit_ms.config_loader import load_config
    from vit_ms.errors import ConfigError

    with pytest.raises(ConfigError, match="data.re_count=0 must be at least 1"):
        load_config("vit_b16.yaml", ["data.re_count=0"])
    with pytest.raises(ConfigError, match="re_mode"):
        load_config("vit_b16.yaml", ["data.re_mode=zeros"])
    assert load_config("vit_b16.yaml").data.re_mode == "pixel"
