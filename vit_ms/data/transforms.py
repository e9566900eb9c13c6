"""Image transforms (on encoded bytes or decoded (H, W, 3) uint8 RGB arrays) and batch mixing, from mindcv 0.3.0.

Reused from mindcv: the eval list (`transforms_imagenet_eval`), the final train ops and colour jitter
(`transforms_imagenet_train`: Normalize, HWC2CHW, RandomErasing), the auto-augment policies
(`rand_augment_transform` and friends) and the soft-label code of mixup (`mixup_target`).
Changed, each for a reason given where it happens: for decoded arrays (infer.py, tests) mindcv's Decode /
RandomCropDecodeResize become RandomResizedCrop / nothing (`encoded=False`); mindcv ignores `mstd` in a
RandAugment string; mindcv's Mixup draws from numpy's global RNG, so `BatchMixup` does the same mixing with
its own.
"""
import math
import re
from typing import Callable, Optional, Sequence

import numpy as np
from mindcv.data.auto_augment import auto_augment_transform, rand_augment_transform, trivial_augment_wide_transform
from mindcv.data.mixup import mixup_target
from mindcv.data.transforms_factory import transforms_imagenet_eval, transforms_imagenet_train
from mindspore.dataset import transforms, vision
from mindspore.dataset.vision import Inter

from ..config import DataConfig
from ..errors import ConfigError

_INTERPOLATION = {"bicubic": Inter.BICUBIC, "bilinear": Inter.BILINEAR, "nearest": Inter.NEAREST}
_POLICY_HELP = ("use e.g. 'randaug-m9-mstd0.5-inc1' (RandAugment), 'autoaug', '3a', 'trivialaugwide', "
                "or '' for none")


def _auto_augment(policy: str, image_size: int, cfg: DataConfig) -> Callable:
    """mindcv's auto-augment op for a policy string (same hyper-parameters as transforms_imagenet_train)."""
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
    """RandomResizedCrop, flip, auto-augment or colour jitter, normalise, HWC2CHW, random erasing.

    Input (H, W, 3) uint8 RGB -> output (3, S, S) float32, S = image_size. encoded: the input is an encoded
    image (N,) uint8 (see vit_ms.data.decode) and the crop is RandomCropDecodeResize (same scale, ratio,
    interpolation and 10 attempts), which decodes a JPEG only inside the crop.
    """
    _, colour, final = transforms_imagenet_train(
        image_resize=image_size, interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std, re_prob=cfg.re_prob,
        color_jitter=cfg.color_jitter if cfg.color_jitter > 0 and not cfg.auto_augment else None, separate=True)
    crop = vision.RandomCropDecodeResize if encoded else vision.RandomResizedCrop
    ops = [crop(image_size, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio),
                interpolation=_INTERPOLATION[cfg.interpolation])]
    if cfg.hflip > 0:
        ops.append(vision.RandomHorizontalFlip(prob=cfg.hflip))
    if cfg.auto_augment:
        ops.append(_auto_augment(cfg.auto_augment, image_size, cfg))
    return ops + colour + final


def build_eval_transforms(cfg: DataConfig, image_size: int, encoded: bool = False) -> list:
    """Resize the shorter side to floor(image_size / crop_pct), center crop, normalise, HWC2CHW.

    Input (H, W, 3) uint8 RGB -> output (3, S, S) float32, S = image_size. encoded: the input is an encoded
    image (N,) uint8 and the list starts with the C++ Decode, as mindcv's does.
    """
    ops = transforms_imagenet_eval(image_resize=image_size, crop_pct=cfg.crop_pct, mean=cfg.mean, std=cfg.std,
                                   interpolation=cfg.interpolation)
    return ops if encoded else [op for op in ops if not isinstance(op, vision.Decode)]


def preprocess_eval(image: np.ndarray, cfg: DataConfig, image_size: int) -> np.ndarray:
    """Apply the eval transforms to one decoded (H, W, 3) uint8 RGB image -> (3, S, S) float32."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"preprocess_eval expects an (H, W, 3) uint8 RGB array (see load_image_rgb), "
                         f"got shape {image.shape} dtype {image.dtype}")
    out = transforms.Compose(build_eval_transforms(cfg, image_size))(image)
    return np.asarray(out, dtype=np.float32)


class BatchMixup:
    """Mixup or CutMix on a whole batch, mixing each image with the batch reversed (timm's "batch" mode).

    Batch op: images (B, 3, S, S) float32, labels (B,) int -> images, soft labels (B, num_classes) float32.
    Same maths as mindcv's Mixup (whose label code, `mixup_target`, is reused), but with its own seeded RNG:
    mindcv's draws from numpy's global RNG, which RandAugment also uses from another pipeline thread, so no
    two runs would mix alike. Label smoothing is folded into the soft labels, as in timm and mindcv.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, prob: float, switch_prob: float,
                 label_smoothing: float, num_classes: int, seed: Sequence[int]):
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing, self.num_classes = label_smoothing, num_classes
        self.rng = np.random.default_rng(list(seed))

    def _cutmix(self, images: np.ndarray, lam: float) -> float:
        """Paste a box of area ~(1 - lam) from the reversed batch, in place; returns the corrected lam."""
        h, w = images.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cy, cx = self.rng.integers(h), self.rng.integers(w)
        y0, y1 = np.clip([cy - int(h * cut) // 2, cy + int(h * cut) // 2], 0, h)
        x0, x1 = np.clip([cx - int(w * cut) // 2, cx + int(w * cut) // 2], 0, w)
        images[:, :, y0:y1, x0:x1] = images[::-1, :, y0:y1, x0:x1].copy()
        return 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)

    def __call__(self, images: np.ndarray, labels: np.ndarray):
        images = np.asarray(images, dtype=np.float32)  # (B, 3, S, S); copied only where written (about 1 ms
        lam = 1.0                                       # an image at 224 px for each full copy)
        if self.rng.random() < self.prob:
            use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or self.rng.random() < self.switch_prob)
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            lam = float(self.rng.beta(alpha, alpha))
            if use_cutmix:
                images = images.copy()
                lam = self._cutmix(images, lam)
            else:
                images = images * lam + images[::-1] * (1.0 - lam)
        soft = mixup_target(np.asarray(labels), self.num_classes, lam, self.label_smoothing)  # (B, num_classes)
        return images, soft.astype(np.float32, copy=False)


def build_mixup(cfg: DataConfig, num_classes: int, label_smoothing: float,
                seed: Sequence[int] = (0,)) -> Optional[BatchMixup]:
    """The batch op for cfg.mixup / cfg.cutmix alphas, or None when both are 0."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return BatchMixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, label_smoothing, num_classes,
                      seed)
