"""Per-image transforms, on encoded bytes or decoded (H, W, 3) uint8 RGB arrays, from mindcv 0.3.0.

They end in (S, S, 3) uint8; the auto-augment policy (built here by `build_augment`), normalising, random
erasing and mixup follow on whole batches (`batch_ops`).

Reused from mindcv: the eval list (`transforms_imagenet_eval`: Decode, Resize, CenterCrop), the colour jitter
(`transforms_imagenet_train`) and the auto-augment policies (`rand_augment_transform` and friends).
Changed, each for a reason given where it happens: for decoded arrays (infer.py, tests) mindcv's Decode /
RandomCropDecodeResize become RandomResizedCrop / nothing (`encoded=False`); mindcv ignores `mstd` in a
RandAugment string; mindcv's per-image RandAugment, Normalize, HWC2CHW and RandomErasing run per batch instead.
"""
import math
import re
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from mindcv.data.auto_augment import auto_augment_transform, rand_augment_transform, trivial_augment_wide_transform
from mindcv.data.transforms_factory import transforms_imagenet_eval, transforms_imagenet_train
from mindspore.dataset import transforms, vision
from mindspore.dataset.vision import Inter

from ..config import DataConfig
from ..errors import ConfigError
from .batch_ops import Normalizer

_INTERPOLATION = {"bicubic": Inter.BICUBIC, "bilinear": Inter.BILINEAR, "nearest": Inter.NEAREST}
_POLICY_HELP = ("use e.g. 'randaug-m9-mstd0.5-inc1' (RandAugment), 'autoaug', '3a', 'trivialaugwide', "
                "or '' for none")


def build_augment(cfg: DataConfig, image_size: int) -> Optional[Callable]:
    """mindcv's auto-augment op for the policy string cfg.auto_augment (same hyper-parameters as
    transforms_imagenet_train), or None for "": (S, S, 3) uint8 -> (S, S, 3) uint8, drawing from Python's and
    numpy's global RNGs (`batch_ops.BatchFinish` seeds them per batch)."""
    policy = cfg.auto_augment
    if not policy:
        return None
    hparams = dict(translate_const=int(image_size * 0.45), img_mean=tuple(min(255, round(x)) for x in cfg.mean),
                   interpolation=_INTERPOLATION[cfg.interpolation])
    kind = policy.split("-")[0]
    try:
        if kind == "randaug":
            # mindcv 0.3.0 sets magnitude_std=0.5 before parsing the string, so its "mstd" is ignored; set it here.
            mstd = re.search(r"-mstd(\d+(?:\.\d+)?)", policy)
            if mstd:
                hparams["magnitude_std"] = float("inf") if float(mstd.group(1)) > 100 else float(mstd.group(1))
            return rand_augment_transform(policy, hparams)
        if kind in ("autoaug", "3a"):
            return auto_augment_transform(policy, hparams)
        if kind == "trivialaugwide":
            return trivial_augment_wide_transform(policy, hparams)
    except (AssertionError, ValueError, KeyError) as err:  # mindcv checks the string with assert
        raise ConfigError(f"data.auto_augment={policy!r} is not a valid policy ({err or 'unknown section'}); "
                          f"{_POLICY_HELP}") from err
    raise ConfigError(f"data.auto_augment={policy!r}: unknown policy '{kind}' (augmix is not supported: it "
                      f"needs its own split-batch loss); {_POLICY_HELP}")


def build_train_transforms(cfg: DataConfig, image_size: int, encoded: bool = False) -> list:
    """RandomResizedCrop, flip, colour jitter; all C++ ops. The auto-augment policy (`build_augment`), normalising
    and random erasing follow per batch (`batch_ops`).

    Input (H, W, 3) uint8 RGB -> output (S, S, 3) uint8, S = image_size. encoded: the input is an encoded
    image (N,) uint8 (see vit_ms.data.decode) and the crop is RandomCropDecodeResize (same scale, ratio,
    interpolation and 10 attempts), which decodes a JPEG only inside the crop.
    """
    _, colour, _ = transforms_imagenet_train(
        image_resize=image_size, interpolation=cfg.interpolation,
        color_jitter=cfg.color_jitter if cfg.color_jitter > 0 and not cfg.auto_augment else None, separate=True)
    crop = vision.RandomCropDecodeResize if encoded else vision.RandomResizedCrop
    ops = [crop(image_size, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio),
                interpolation=_INTERPOLATION[cfg.interpolation])]
    if cfg.hflip > 0:
        ops.append(vision.RandomHorizontalFlip(prob=cfg.hflip))
    return ops + colour


def crop_box(rng: np.random.Generator, height: int, width: int, scale: Sequence[float],
             ratio: Sequence[float], attempts: int = 10) -> Tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop as RandomResizedCrop draws it: area fraction uniform in
    `scale`, log aspect ratio (w/h) uniform in log(`ratio`), fully inside the image; after `attempts` misses the
    largest centred crop whose aspect ratio is clipped to `ratio`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = width / height
    if aspect < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class SeededCrop:
    """Training's per-image ops drawing from the batch's generator (`batch_ops.BatchFinish`), for
    train.deterministic: decode, random resized crop, flip, colour jitter. MindSpore's random C++ ops draw from
    one stream per op, so a run resumed in the middle of an epoch would crop differently from one never stopped;
    these draw from (seed, shard, epoch, batch) and do not.

    encoded image (N,) uint8 -> (S, S, 3) uint8; same distributions as `build_train_transforms` (the C++ ops
    decode a JPEG only inside the crop; this decodes it whole, then crops: slower, same pixels per crop box).
    """

    def __init__(self, cfg: DataConfig, image_size: int):
        self.scale, self.ratio, self.hflip = tuple(cfg.scale), tuple(cfg.ratio), cfg.hflip
        self.jitter = cfg.color_jitter if cfg.color_jitter > 0 and not cfg.auto_augment else 0.0
        self.decode = vision.Decode()
        self.resize = vision.Resize((image_size, image_size), interpolation=_INTERPOLATION[cfg.interpolation])

    def __call__(self, encoded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = np.asarray(self.decode(encoded))  # (H, W, 3)
        top, left, h, w = crop_box(rng, image.shape[0], image.shape[1], self.scale, self.ratio)
        out = np.asarray(self.resize(np.ascontiguousarray(image[top:top + h, left:left + w])))  # (S, S, 3)
        if self.hflip > 0 and rng.random() < self.hflip:
            out = out[:, ::-1]
        if self.jitter > 0:  # brightness, contrast, saturation in random order, as RandomColorAdjust
            low, high = max(0.0, 1.0 - self.jitter), 1.0 + self.jitter
            ops = (vision.AdjustBrightness, vision.AdjustContrast, vision.AdjustSaturation)
            for k in rng.permutation(3):
                out = np.asarray(ops[k](float(rng.uniform(low, high)))(np.ascontiguousarray(out)))
        return np.ascontiguousarray(out, dtype=np.uint8)


def build_eval_transforms(cfg: DataConfig, image_size: int, encoded: bool = False) -> list:
    """Resize the shorter side to floor(image_size / crop_pct), center crop (normalising: `batch_ops`).

    Input (H, W, 3) uint8 RGB -> output (S, S, 3) uint8, S = image_size. encoded: the input is an encoded
    image (N,) uint8 and the list starts with the C++ Decode, as mindcv's does.
    """
    ops = transforms_imagenet_eval(image_resize=image_size, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation)
    per_batch = (vision.Normalize, vision.HWC2CHW) + (() if encoded else (vision.Decode,))
    return [op for op in ops if not isinstance(op, per_batch)]


def preprocess_eval(image: np.ndarray, cfg: DataConfig, image_size: int) -> np.ndarray:
    """Apply the eval transforms to one decoded (H, W, 3) uint8 RGB image -> (3, S, S) float32."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"preprocess_eval expects an (H, W, 3) uint8 RGB array (see load_image_rgb), "
                         f"got shape {image.shape} dtype {image.dtype}")
    crop = np.asarray(transforms.Compose(build_eval_transforms(cfg, image_size))(image))  # (S, S, 3) uint8
    return Normalizer(cfg.mean, cfg.std)(crop)
