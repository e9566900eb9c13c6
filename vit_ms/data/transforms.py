"""Per-image transforms, on encoded bytes or decoded (H, W, 3) uint8 RGB arrays, from mindcv 0.3.0.

They end in (S, S, 3) uint8; the auto-augment policy (built here by `build_augment`), normalising, random
erasing and mixup follow on whole batches (`batch_ops`).

Reused from mindcv: the eval list (`transforms_imagenet_eval`: Decode, Resize, CenterCrop), the colour jitter
(`transforms_imagenet_train`) and the auto-augment policies (`rand_augment_transform` and friends).
Changed, each for a reason given where it happens: for decoded arrays (infer.py, tests) mindcv's Decode /
RandomCropDecodeResize become RandomResizedCrop / nothing (`encoded=False`); mindcv ignores `mstd` in a
RandAugment string; mindcv's per-image RandAugment, Normalize, HWC2CHW and RandomErasing run per batch instead.
"""
import re
from typing import Callable, Optional

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
