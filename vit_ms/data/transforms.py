"""Per-image transforms, on encoded bytes or decoded (H, W, 3) uint8 RGB arrays: the pixels timm's give.

They end in (S, S, 3) uint8; the auto-augment policy (built here by `build_augment`), normalising, random
erasing and mixup follow on whole batches (`batch_ops`).

Resizing is PIL's (antialiased, as timm's and torchvision's transforms on PIL images): in C++ where MindSpore has
PIL's filter (`Inter.PILCUBIC` is PIL's bicubic bit for bit, also inside RandomCropDecodeResize), else PIL
itself in Python (`pil_resize`: bilinear, nearest). MindSpore's own BICUBIC and BILINEAR are OpenCV's, which do
not antialias: 5 grey levels from PIL on average at the 0.35 downscale of a 640 x 427 photo to 224.

- train: random resized crop (C++ RandomCropDecodeResize for bicubic; `SeededCrop` for train.deterministic and
  for the filters only PIL has), flip, colour jitter (mindcv's `transforms_imagenet_train` ops, when there is
  no policy, as in timm).
- policy: RandAugment is timm's (`augment`); the other mindcv policies (autoaug, 3a, trivialaugwide) are mindcv's.
- eval: timm's `transforms_imagenet_eval`: resize the shorter side to floor(S / crop_pct) (torchvision's sizes),
  center crop with torchvision's rounding (`EvalCrop`).
"""
import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from mindcv.data.auto_augment import auto_augment_transform, trivial_augment_wide_transform
from mindcv.data.transforms_factory import transforms_imagenet_train
from mindspore.dataset import vision
from mindspore.dataset.vision import Inter
from PIL import Image

from ..config import DataConfig
from ..errors import ConfigError
from .augment import PIL_FILTERS, parse_rand_augment
from .batch_ops import GlobalRngPolicy, Normalizer

# data.interpolation -> MindSpore's C++ filter that is PIL's bit for bit; the others resize in PIL (`pil_resize`)
_CPP_EXACT = {"bicubic": Inter.PILCUBIC}
_MINDSPORE_FILTERS = {"bicubic": Inter.BICUBIC, "bilinear": Inter.BILINEAR, "nearest": Inter.NEAREST}  # for mindcv
_POLICY_HELP = ("use e.g. 'rand-m9-mstd0.5-inc1' (timm's RandAugment, DeiT's policy; 'randaug-...' is read the "
                "same), 'autoaug', '3a', 'trivialaugwide', or '' for none")


def pil_resize(image: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8, PIL's antialiased resize (what timm's transforms run)."""
    return np.asarray(Image.fromarray(image).resize((width, height), PIL_FILTERS[interpolation]))


def train_crop_in_cpp(cfg: DataConfig) -> bool:
    """Whether MindSpore's C++ RandomCropDecodeResize gives PIL's pixels for cfg.interpolation; if not, the
    training crop runs in Python (`SeededCrop`)."""
    return cfg.interpolation in _CPP_EXACT


def build_augment(cfg: DataConfig, image_size: int) -> Optional[Callable]:
    """The auto-augment policy of cfg.auto_augment, or None for "": (B images (S, S, 3) uint8, rng) -> B images.

    RandAugment ('rand-...' or 'randaug-...') is timm's (`augment.RandAugment`, drawing from the batch's
    generator); 'autoaug', '3a' and 'trivialaugwide' are mindcv's, drawing from the global RNGs that
    `batch_ops.GlobalRngPolicy` seeds from the batch's generator. Fill: the mean colour; geometric ops resample
    with cfg.interpolation (timm's hyper-parameters in transforms_imagenet_train)."""
    policy = cfg.auto_augment
    if not policy:
        return None
    fill = tuple(min(255, round(x)) for x in cfg.mean)
    kind = policy.split("-")[0]
    try:
        if kind in ("rand", "randaug"):
            return parse_rand_augment(policy, fill, cfg.interpolation)
        hparams = dict(translate_const=int(image_size * 0.45), img_mean=fill,
                       interpolation=_MINDSPORE_FILTERS[cfg.interpolation])
        if kind in ("autoaug", "3a"):
            return GlobalRngPolicy(auto_augment_transform(policy, hparams))
        if kind == "trivialaugwide":
            return GlobalRngPolicy(trivial_augment_wide_transform(policy, hparams))
    except (AssertionError, ValueError, KeyError) as err:  # mindcv checks the string with assert
        raise ConfigError(f"data.auto_augment={policy!r} is not a valid policy ({err or 'unknown section'}); "
                          f"{_POLICY_HELP}") from err
    raise ConfigError(f"data.auto_augment={policy!r}: unknown policy '{kind}' (augmix is not supported: it "
                      f"needs its own split-batch loss); {_POLICY_HELP}")


def _jitter(cfg: DataConfig) -> float:
    """Colour jitter strength: only without a policy, as timm (and mindcv) apply it."""
    return cfg.color_jitter if cfg.color_jitter > 0 and not cfg.auto_augment else 0.0


def build_train_transforms(cfg: DataConfig, image_size: int, encoded: bool = False) -> list:
    """RandomResizedCrop, flip, colour jitter; all C++ ops, for an interpolation MindSpore has as PIL's
    (`train_crop_in_cpp`; else `SeededCrop` crops). The auto-augment policy (`build_augment`), normalising and
    random erasing follow per batch (`batch_ops`).

    Input (H, W, 3) uint8 RGB -> output (S, S, 3) uint8, S = image_size. encoded: the input is an encoded
    image (N,) uint8 (see vit_ms.data.decode) and the crop is RandomCropDecodeResize (same scale, ratio,
    interpolation and 10 attempts), which decodes a JPEG only inside the crop.
    """
    if not train_crop_in_cpp(cfg):
        raise ValueError(f"data.interpolation={cfg.interpolation!r} has no C++ filter equal to PIL's: the "
                         f"training crop is SeededCrop's")
    _, colour, _ = transforms_imagenet_train(image_resize=image_size, color_jitter=_jitter(cfg) or None,
                                             separate=True)
    crop = vision.RandomCropDecodeResize if encoded else vision.RandomResizedCrop
    ops = [crop(image_size, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio),
                interpolation=_CPP_EXACT[cfg.interpolation])]
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
    """Training's per-image ops drawing from the batch's generator (`batch_ops.BatchFinish`): decode, random
    resized crop, flip, colour jitter. For train.deterministic: MindSpore's random C++ ops draw from one stream
    per op, so a run resumed in the middle of an epoch would crop differently from one never stopped; these draw
    from (seed, shard, epoch, batch) and do not. Also the crop of every interpolation without a C++ filter
    equal to PIL's (`train_crop_in_cpp`): the resize is PIL's.

    encoded image (N,) uint8 -> (S, S, 3) uint8; same distributions as `build_train_transforms` (the C++ ops
    decode a JPEG only inside the crop; this decodes it whole, then crops: slower, same pixels per crop box).
    """

    def __init__(self, cfg: DataConfig, image_size: int):
        self.scale, self.ratio, self.hflip, self.jitter = tuple(cfg.scale), tuple(cfg.ratio), cfg.hflip, _jitter(cfg)
        self.decode = vision.Decode()
        self.size, self.interpolation = image_size, cfg.interpolation

    def __call__(self, encoded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = np.asarray(self.decode(encoded))  # (H, W, 3)
        top, left, h, w = crop_box(rng, image.shape[0], image.shape[1], self.scale, self.ratio)
        crop = np.ascontiguousarray(image[top:top + h, left:left + w])
        out = pil_resize(crop, self.size, self.size, self.interpolation)  # (S, S, 3)
        if self.hflip > 0 and rng.random() < self.hflip:
            out = out[:, ::-1]
        if self.jitter > 0:  # brightness, contrast, saturation in random order, as RandomColorAdjust
            low, high = max(0.0, 1.0 - self.jitter), 1.0 + self.jitter
            ops = (vision.AdjustBrightness, vision.AdjustContrast, vision.AdjustSaturation)
            for k in rng.permutation(3):
                out = np.asarray(ops[k](float(rng.uniform(low, high)))(np.ascontiguousarray(out)))
        return np.ascontiguousarray(out, dtype=np.uint8)


class EvalCrop:
    """timm's eval transform after decoding: resize the shorter side to floor(S / crop_pct) with
    cfg.interpolation (the longer one to int(short * long / shorter), torchvision's sizes), then the center S x S
    crop, offsets rounded as torchvision's CenterCrop rounds them (MindSpore's CenterCrop rounds half the odd
    margins the other way). (H, W, 3) uint8 -> (S, S, 3) uint8; the resize is PIL's (`pil_resize`).
    """

    def __init__(self, cfg: DataConfig, image_size: int):
        self.size, self.interpolation = image_size, cfg.interpolation
        self.short = math.floor(image_size / cfg.crop_pct)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if min(height, width) == self.short:  # resized already (C++ Resize: the same sizes, tests/test_data.py)
            h, w = height, width
        elif height <= width:
            h, w = self.short, int(self.short * width / height)
        else:
            h, w = int(self.short * height / width), self.short
        if (h, w) != (height, width):
            image = pil_resize(image, h, w, self.interpolation)
        top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        return np.ascontiguousarray(image[top:top + self.size, left:left + self.size])  # (S, S, 3)


def build_eval_transforms(cfg: DataConfig, image_size: int, encoded: bool = False) -> list:
    """timm's eval transform (`EvalCrop`; normalising: `batch_ops`): decode (encoded: the input is an encoded
    image (N,) uint8, decoded in C++), the resize in C++ where MindSpore has PIL's filter, then `EvalCrop` (which
    then only crops). Output (S, S, 3) uint8, S = image_size."""
    exact = _CPP_EXACT.get(cfg.interpolation)
    resize = [] if exact is None else [vision.Resize(math.floor(image_size / cfg.crop_pct), exact)]
    return ([vision.Decode()] if encoded else []) + resize + [EvalCrop(cfg, image_size)]


def preprocess_eval(image: np.ndarray, cfg: DataConfig, image_size: int) -> np.ndarray:
    """Apply the eval transforms to one decoded (H, W, 3) uint8 RGB image -> (3, S, S) float32."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"preprocess_eval expects an (H, W, 3) uint8 RGB array (see load_image_rgb), "
                         f"got shape {image.shape} dtype {image.dtype}")
    return Normalizer(cfg.mean, cfg.std)(EvalCrop(cfg, image_size)(image))
