"""The per-batch end of the pipeline: auto-augment, normalise, random erasing, mixup / cutmix, in one pass.

The per-image C++ ops (crop while decoding, flip, colour jitter) hand on (S, S, 3) uint8 images; batching those
moves a quarter of the bytes of float32 (3, S, S) ones, and one call per batch replaces four per-image ops
(RandAugment and RandomErasing were Python ops, each taking the GIL and converting every image; Normalize,
HWC2CHW). `BatchFinish` is that pass:

    [train.deterministic, or a filter only PIL has: B encoded images -> decode, crop, flip, jitter (`SeededCrop`)]
    B images (S, S, 3) uint8 -> auto-augment policy, image by image (train: timm's RandAugment, `augment`)
    -> (x - mean) / std as a table lookup -> (B, 3, S, S) float32
    -> random erasing (train: each image with data.re_prob, timm's RandomErasing, DeiT's per-pixel noise)
    -> mixup / cutmix (train, when enabled: labels become (B, num_classes) float32 soft labels)

Randomness comes from a generator seeded by (train.seed, shard, epoch, batch of the epoch), never from a shared
one, so the result does not depend on which worker thread finishes a batch first and a run resumed in the middle
of an epoch draws what the uninterrupted run drew. RandAugment draws from that generator too; mindcv's other
policies draw from Python's and numpy's global RNGs: those are seeded from the batch's generator and the policy
applied under a lock, one batch at a time (`GlobalRngPolicy`).
"""
import math
import random
import threading
from typing import Callable, Optional, Sequence

import numpy as np
from mindcv.data.mixup import mixup_target

from ..config import DataConfig


class Normalizer:
    """uint8 (..., S, S, 3) RGB -> float32 (..., 3, S, S), (x - mean) / std per channel (0-255 mean and std).

    A lookup table per channel computes exactly what MindSpore's Normalize computes, in float32, for each of the
    256 values, and reads the (S, S, 3) layout straight into (3, S, S).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        values = np.arange(256, dtype=np.float32)
        self.table = np.stack([(values - np.float32(m)) / np.float32(s) for m, s in zip(mean, std)])  # (3, 256)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.empty(images.shape[:-3] + (3,) + images.shape[-3:-1], dtype=np.float32)
        for c in range(3):  # uint8 indices are always in range: "wrap" skips take's bounds check (17% faster)
            np.take(self.table[c], images[..., c], out=out[..., c, :, :], mode="wrap")
        return out


def erase_box(rng: np.random.Generator, height: int, width: int, min_area: float = 0.02,
              max_area: float = 1 / 3, min_aspect: float = 0.3, count: int = 1, attempts: int = 10):
    """(top, left, h, w) of one random erasing box as timm's RandomErasing draws it, or None after `attempts`
    misses: area fraction uniform in [min_area, max_area] / count, log aspect ratio uniform in
    [log(min_aspect), -log(min_aspect)], strictly smaller than the image."""
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for _ in range(attempts):
        area = rng.uniform(min_area, max_area) * height * width / count
        aspect = math.exp(rng.uniform(*log_aspect))  # h / w
        h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if w < width and h < height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return None


def random_erase(images: np.ndarray, prob: float, rng: np.random.Generator, mode: str = "pixel",
                 count: int = 1) -> np.ndarray:
    """timm's RandomErasing on each image of a batch, in place: with probability `prob`, `count` boxes
    (`erase_box`) filled, in normalised space, with per-pixel standard normal noise (mode "pixel", DeiT's), one
    normal colour per box ("rand") or 0, the mean colour ("const"). images (B, 3, S, S) float32."""
    channels, height, width = images.shape[-3:]
    for image in images:
        if rng.random() >= prob:
            continue
        for _ in range(count):
            box = erase_box(rng, height, width, count=count)
            if box is None:
                continue
            top, left, h, w = box
            if mode == "pixel":
                fill = rng.standard_normal((channels, h, w), dtype=np.float32)
            elif mode == "rand":
                fill = rng.standard_normal((channels, 1, 1), dtype=np.float32)
            else:
                fill = 0.0
            image[:, top:top + h, left:left + w] = fill
    return images


class BatchMixup:
    """Mixup or CutMix on a whole batch, mixing each image with the batch reversed (timm's "batch" mode).

    images (B, 3, S, S) float32, labels (B,) int, rng -> images, soft labels (B, num_classes) float32.
    Same maths as mindcv's Mixup (whose label code, `mixup_target`, is reused), but drawing from the generator
    it is given: mindcv's draws from numpy's global RNG, shared with other pipeline threads, so no two runs
    would mix alike. Label smoothing is folded into the soft labels, as in timm and mindcv.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, prob: float, switch_prob: float,
                 label_smoothing: float, num_classes: int):
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing, self.num_classes = label_smoothing, num_classes

    @staticmethod
    def _cutmix(images: np.ndarray, lam: float, rng: np.random.Generator) -> float:
        """Paste a box of area ~(1 - lam) from the reversed batch, in place; returns the corrected lam."""
        h, w = images.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cy, cx = rng.integers(h), rng.integers(w)
        y0, y1 = np.clip([cy - int(h * cut) // 2, cy + int(h * cut) // 2], 0, h)
        x0, x1 = np.clip([cx - int(w * cut) // 2, cx + int(w * cut) // 2], 0, w)
        images[:, :, y0:y1, x0:x1] = images[::-1, :, y0:y1, x0:x1].copy()
        return 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)

    def __call__(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        images = np.asarray(images, dtype=np.float32)  # (B, 3, S, S); copied only where written
        lam = 1.0
        if rng.random() < self.prob:
            use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            lam = float(rng.beta(alpha, alpha))
            if use_cutmix:
                images = images.copy()
                lam = self._cutmix(images, lam, rng)
            else:
                images = images * lam + images[::-1] * (1.0 - lam)
        soft = mixup_target(np.asarray(labels), self.num_classes, lam, self.label_smoothing)  # (B, num_classes)
        return images, soft.astype(np.float32, copy=False)


def build_mixup(cfg: DataConfig, num_classes: int, label_smoothing: float) -> Optional[BatchMixup]:
    """The batch op for cfg.mixup / cfg.cutmix alphas, or None when both are 0."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return BatchMixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, label_smoothing, num_classes)


_GLOBAL_RNGS = threading.Lock()  # held while a batch's policy draws from Python's and numpy's global RNGs


class GlobalRngPolicy:
    """A per-image policy that draws from the global RNGs (mindcv's autoaug, 3a, trivialaugwide) as a batch op:
    (B images (S, S, 3) uint8, rng) -> B images, with those RNGs seeded from `rng` under a lock, so the same
    images and generator give the same result in any thread."""

    def __init__(self, policy: Callable):
        self.policy = policy

    def __call__(self, images: Sequence[np.ndarray], rng: np.random.Generator) -> list:
        seeds = rng.integers(0, 2**32, size=2)
        with _GLOBAL_RNGS:
            random.seed(int(seeds[0]))
            np.random.seed(int(seeds[1]))
            return [np.asarray(self.policy(image), dtype=np.uint8) for image in images]


class BatchFinish:
    """`per_batch_map` of the pipeline's batch op: (images, labels, BatchInfo) -> (images, labels), see above.

    images: B arrays (S, S, 3) uint8 (with `crop`: B encoded images) -> (B, 3, S, S) float32; labels: B int32 ->
    (B,) int32, or (B, num_classes) float32 with mixup. augment: (images, rng) -> images
    (`transforms.build_augment`); re_prob, re_mode, re_count: random erasing (`random_erase`).
    seed: (train.seed, shard id); start_epoch: the first epoch the pipeline yields, of which `skip_batches` were
    left out (a resume in the middle of it); epoch_base: what to add to MindSpore's epoch number to get the epoch
    (start_epoch when the pipeline counts from 0, 0 when a resumed MindDataset reports the epoch itself).
    """

    def __init__(self, normalize: Normalizer, augment: Optional[Callable] = None, re_prob: float = 0.0,
                 mixup: Optional[BatchMixup] = None, seed: Sequence[int] = (0, 0), start_epoch: int = 0,
                 skip_batches: int = 0, epoch_base: int = 0, crop: Optional[Callable] = None,
                 re_mode: str = "pixel", re_count: int = 1):
        self.normalize, self.augment, self.re_prob, self.mixup = normalize, augment, re_prob, mixup
        self.re_mode, self.re_count = re_mode, re_count
        self.crop = crop  # (encoded image, rng) -> (S, S, 3) uint8, or None: the images come cropped
        self.seed, self.epoch_base = tuple(seed), epoch_base
        self.start_epoch, self.skip_batches = start_epoch, skip_batches

    def rng(self, epoch: int, batch: int) -> np.random.Generator:
        """The generator of the `batch`-th batch the pipeline yields in its epoch numbered `epoch` by MindSpore."""
        epoch += self.epoch_base
        batch += self.skip_batches if epoch == self.start_epoch else 0
        return np.random.default_rng(self.seed + (epoch, batch))

    def __call__(self, images, labels, info):
        labels = np.asarray(labels, dtype=np.int32)
        rng = self.rng(info.get_epoch_num(), info.get_batch_num())
        if self.crop is not None:
            images = [self.crop(image, rng) for image in images]
        if self.augment is not None:
            images = self.augment(images, rng)
        out = self.normalize(np.stack(images))  # (B, 3, S, S)
        if self.re_prob > 0:
            random_erase(out, self.re_prob, rng, self.re_mode, self.re_count)
        return (out, labels) if self.mixup is None else self.mixup(out, labels, rng)
