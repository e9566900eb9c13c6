"""RandAugment as timm defines it (`timm.data.auto_augment`, the policy DeiT trains with), on PIL images.

RandAugment (Cubuk et al., https://arxiv.org/abs/1909.13719) applies `n` ops drawn uniformly with replacement
from a list of 15, each with probability `p`, at a magnitude m on a 0-10 scale. timm's version, which DeiT's
`rand-m9-mstd0.5-inc1` names, adds Gaussian noise of std `mstd` to m for every op application (uniform on [0, m]
when mstd > 100), clips it to [0, mmax] (10 by default) and offers "increasing" variants (`inc1`) in which every
op gets stronger as m grows. The ops and their magnitude-to-argument mappings are timm's, in `LEVELS` and `OPS`
below; every op is PIL's own, so a given argument gives timm's pixels exactly.

Policy strings: `rand-m9-mstd0.5-inc1` (timm's and DeiT's spelling) and `randaug-m9-mstd0.5-inc1` (mindcv's:
the same policy). Sections: m (magnitude, default 10), n (ops per image, 2), p (probability of each op, 0.5),
mstd (magnitude noise, 0), mmax (upper clip, 10), inc (increasing ops, 0: `inc0` is the plain list, as in timm
1.0; mindcv 0.3 read it as `bool('0')`, which is true).

Randomness comes from the numpy Generator each call is given (the batch's, `batch_ops.BatchFinish`), so the
result depends only on (image, generator state), not on which thread runs it.
"""
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

LEVEL_DENOM = 10.0  # m is on a 0-10 scale: level / LEVEL_DENOM is the fraction of each op's range
PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}  # data.interpolation

RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
                       "TranslateYRel")


# Magnitude -> op argument, as timm's `*_level_to_arg`. `sign` is +1 or -1 (timm's `_randomly_negate`); ops
# without a sign ignore it. Level in [0, mmax].
def _enhance(level: float, sign: int) -> float:  # [0.1, 1.9]: 1.0 is no change at m = 5
    return level / LEVEL_DENOM * 1.8 + 0.1


def _enhance_increasing(level: float, sign: int) -> float:  # 1 -/+ up to 0.9: no change at m = 0
    return max(0.1, 1.0 + sign * level / LEVEL_DENOM * 0.9)


def _posterize(level: float, sign: int) -> int:  # bits kept, 0 up to 4 (weaker as m grows)
    return int(level / LEVEL_DENOM * 4)


def _solarize(level: float, sign: int) -> int:  # threshold 0 up to 256 (weaker as m grows)
    return int(level / LEVEL_DENOM * 256)


LEVELS: Dict[str, Optional[Callable[[float, int], float]]] = {
    "AutoContrast": None, "Equalize": None, "Invert": None,
    "Rotate": lambda level, sign: sign * level / LEVEL_DENOM * 30.0,  # degrees, [-30, 30]
    "Posterize": _posterize,
    "PosterizeIncreasing": lambda level, sign: 4 - _posterize(level, sign),  # bits kept, 4 down to 0
    "Solarize": _solarize,
    "SolarizeIncreasing": lambda level, sign: 256 - _solarize(level, sign),  # threshold 256 down to 0
    "SolarizeAdd": lambda level, sign: int(level / LEVEL_DENOM * 110),  # added below 128, 0 up to 110
    "Color": _enhance, "Contrast": _enhance, "Brightness": _enhance, "Sharpness": _enhance,
    "ColorIncreasing": _enhance_increasing, "ContrastIncreasing": _enhance_increasing,
    "BrightnessIncreasing": _enhance_increasing, "SharpnessIncreasing": _enhance_increasing,
    "ShearX": lambda level, sign: sign * level / LEVEL_DENOM * 0.3,  # shear factor, [-0.3, 0.3]
    "ShearY": lambda level, sign: sign * level / LEVEL_DENOM * 0.3,
    "TranslateXRel": lambda level, sign: sign * level / LEVEL_DENOM * 0.45,  # fraction of the side, [-0.45, 0.45]
    "TranslateYRel": lambda level, sign: sign * level / LEVEL_DENOM * 0.45,
}


def _affine(img: Image.Image, matrix: Tuple[float, ...], fill, resample) -> Image.Image:
    """PIL's affine transform: the output pixel (x, y) reads the input at (a x + b y + c, d x + e y + f)."""
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def _solarize_add(img: Image.Image, add: int, fill, resample) -> Image.Image:
    """Add `add` (clipped at 255) to every value below 128."""
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _posterize_op(img: Image.Image, bits: int, fill, resample) -> Image.Image:
    """Keep the `bits` high bits of every value: ImageOps.posterize, also for bits = 0 (black), which timm's
    increasing variant asks for at m = 10 and Pillow 13 rejects (older Pillow returned black)."""
    if bits >= 8:
        return img
    mask = ~(2 ** (8 - bits) - 1) & 0xFF
    return img.point([i & mask for i in range(256)] * len(img.getbands()))


# name -> (image, argument or None, fill colour, resampling filter) -> image
OPS: Dict[str, Callable] = {
    "AutoContrast": lambda img, arg, fill, resample: ImageOps.autocontrast(img),
    "Equalize": lambda img, arg, fill, resample: ImageOps.equalize(img),
    "Invert": lambda img, arg, fill, resample: ImageOps.invert(img),
    "Rotate": lambda img, deg, fill, resample: img.rotate(deg, resample=resample, fillcolor=fill),
    "Posterize": _posterize_op, "PosterizeIncreasing": _posterize_op,
    "Solarize": lambda img, thresh, fill, resample: ImageOps.solarize(img, thresh),
    "SolarizeIncreasing": lambda img, thresh, fill, resample: ImageOps.solarize(img, thresh),
    "SolarizeAdd": _solarize_add,
    "ShearX": lambda img, f, fill, resample: _affine(img, (1, f, 0, 0, 1, 0), fill, resample),
    "ShearY": lambda img, f, fill, resample: _affine(img, (1, 0, 0, f, 1, 0), fill, resample),
    "TranslateXRel": lambda img, pct, fill, resample: _affine(img, (1, 0, pct * img.size[0], 0, 1, 0), fill,
                                                              resample),
    "TranslateYRel": lambda img, pct, fill, resample: _affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), fill,
                                                              resample),
}
for _name, _enhancer in (("Color", ImageEnhance.Color), ("Contrast", ImageEnhance.Contrast),
                         ("Brightness", ImageEnhance.Brightness), ("Sharpness", ImageEnhance.Sharpness)):
    OPS[_name] = OPS[_name + "Increasing"] = (
        lambda enhancer: lambda img, factor, fill, resample: enhancer(img).enhance(factor))(_enhancer)


def apply_op(name: str, img: Image.Image, level: float, sign: int = 1, fill=(128, 128, 128),
             interpolation: str = "bicubic") -> Image.Image:
    """One op at magnitude `level` (already noised and clipped) with sign `sign`: timm's AugmentOp once drawn."""
    level_fn = LEVELS[name]
    arg = None if level_fn is None else level_fn(level, sign)
    return OPS[name](img, arg, tuple(fill), PIL_FILTERS[interpolation])


class RandAugment:
    """timm's RandAugment: per image, `num_ops` ops drawn uniformly with replacement from `ops`, each applied
    with probability `prob` at magnitude N(magnitude, magnitude_std) clipped to [0, magnitude_max].

    (S, S, 3) uint8 RGB, rng -> (S, S, 3) uint8. fill: the colour (0-255) that rotate, shear and translate
    bring in (timm: the dataset mean); interpolation: their resampling filter (timm: the config's
    interpolation).
    """

    def __init__(self, magnitude: float = 10.0, num_ops: int = 2, prob: float = 0.5, magnitude_std: float = 0.0,
                 magnitude_max: float = LEVEL_DENOM, increasing: bool = False, fill: Sequence[int] = (128,) * 3,
                 interpolation: str = "bicubic"):
        self.magnitude, self.num_ops, self.prob = magnitude, num_ops, prob
        self.magnitude_std, self.magnitude_max = magnitude_std, magnitude_max
        self.ops: Tuple[str, ...] = RAND_INCREASING_OPS if increasing else RAND_OPS
        self.fill, self.interpolation = tuple(int(v) for v in fill), interpolation

    def draw_level(self, rng: np.random.Generator) -> float:
        """One op application's magnitude: noised (timm's `random.gauss`, or uniform for mstd = inf), clipped."""
        level = self.magnitude
        if self.magnitude_std == float("inf"):
            level = rng.uniform(0.0, level)
        elif self.magnitude_std > 0:
            level = rng.normal(level, self.magnitude_std)
        return float(max(0.0, min(level, self.magnitude_max)))

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img = None  # converted to PIL only when an op applies (a quarter of the images keep theirs at p = 0.5)
        for k in rng.integers(0, len(self.ops), size=self.num_ops):
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            level, sign = self.draw_level(rng), (-1 if rng.random() > 0.5 else 1)
            img = apply_op(self.ops[k], Image.fromarray(image) if img is None else img, level, sign, self.fill,
                           self.interpolation)
        return image if img is None else np.asarray(img, dtype=np.uint8)

    def __call__(self, images: Sequence[np.ndarray], rng: np.random.Generator) -> List[np.ndarray]:
        """A batch's images, in order, from one generator."""
        return [self.apply(image, rng) for image in images]


_SECTION = re.compile(r"^([a-z]+)(\d+(?:\.\d+)?)$")


def parse_rand_augment(policy: str, fill: Sequence[int], interpolation: str) -> RandAugment:
    """RandAugment from a policy string such as 'rand-m9-mstd0.5-inc1' (see the module docstring); raises
    ValueError naming the section it cannot read."""
    kw: dict = {}
    for section in policy.split("-")[1:]:
        match = _SECTION.match(section)
        if not match:
            raise ValueError(f"cannot read section '{section}' (expected a letter key and a number, e.g. m9)")
        key, value = match.group(1), float(match.group(2))
        if key == "m":
            kw["magnitude"] = value
        elif key == "n":
            kw["num_ops"] = int(value)
        elif key == "p":
            kw["prob"] = value
        elif key == "mstd":
            kw["magnitude_std"] = float("inf") if value > 100 else value
        elif key == "mmax":
            kw["magnitude_max"] = value
        elif key == "inc":
            kw["increasing"] = bool(int(value))
        else:
            raise ValueError(f"unknown section '{section}' (RandAugment takes m, n, p, mstd, mmax, inc)")
    if kw.get("num_ops", 2) < 1 or not 0 <= kw.get("prob", 0.5) <= 1:
        raise ValueError("n must be at least 1 and p in [0, 1]")
    return RandAugment(fill=fill, interpolation=interpolation, **kw)
