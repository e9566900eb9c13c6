"""vit_ms.data.augment: RandAugment as timm defines it, op by op, on real photos (scikit-learn's sample images).

References are written from timm's definitions (timm/data/auto_augment.py) with numpy, or with the PIL call timm
makes: each op's argument at m = 5, 9 and 15, its pixels, and the sampling of ops, magnitudes and signs.
"""
import math
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageFilter

from vit_ms.config import DataConfig
from vit_ms.data import augment, build_augment
from vit_ms.data.augment import LEVELS, RAND_INCREASING_OPS, RAND_OPS, RandAugment, apply_op, parse_rand_augment
from vit_ms.errors import ConfigError


@pytest.fixture(scope="module")
def photos():
    """china.jpg and flower.jpg, 224 x 224 (PIL bicubic), (224, 224, 3) uint8."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(Image.fromarray(img).resize((224, 224), Image.BICUBIC)) for img in load_sample_images().images]


# timm's argument of each op at m = 5, 9 and 15 (15 clipped to timm's default mmax of 10), sign +1 and -1.
EXPECTED = {
    "Rotate": ((15.0, 27.0, 30.0), (-15.0, -27.0, -30.0)),
    "Posterize": ((2, 3, 4),) * 2, "PosterizeIncreasing": ((2, 1, 0),) * 2,
    "Solarize": ((128, 230, 256),) * 2, "SolarizeIncreasing": ((128, 26, 0),) * 2,
    "SolarizeAdd": ((55, 99, 110),) * 2,
    "Color": ((1.0, 1.72, 1.9),) * 2, "ColorIncreasing": ((1.45, 1.81, 1.9), (0.55, 0.19, 0.1)),
    "ShearX": ((0.15, 0.27, 0.3), (-0.15, -0.27, -0.3)),
    "TranslateXRel": ((0.225, 0.405, 0.45), (-0.225, -0.405, -0.45)),
}
for _op in ("Contrast", "Brightness", "Sharpness"):
    EXPECTED[_op], EXPECTED[_op + "Increasing"] = EXPECTED["Color"], EXPECTED["ColorIncreasing"]
EXPECTED["ShearY"], EXPECTED["TranslateYRel"] = EXPECTED["ShearX"], EXPECTED["TranslateXRel"]


def test_the_op_lists_are_timms():
    assert len(RAND_OPS) == len(RAND_INCREASING_OPS) == 15 and "SolarizeAdd" in RAND_OPS
    increasing = {"Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness"}
    assert RAND_INCREASING_OPS == tuple(n + "Increasing" if n in increasing else n for n in RAND_OPS)
    assert set(LEVELS) >= set(RAND_OPS) | set(RAND_INCREASING_OPS)
    assert all(LEVELS[n] is None for n in ("AutoContrast", "Equalize", "Invert"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_magnitude_to_argument_at_m5_m9_m15(name):
    for sign, expected in zip((1, -1), EXPECTED[name]):
        levels = [RandAugment(magnitude=m).draw_level(np.random.default_rng(0)) for m in (5, 9, 15)]
        assert levels == [5.0, 9.0, 10.0]  # mstd 0: the magnitude itself, clipped to mmax = 10
        got = [LEVELS[name](level, sign) for level in levels]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert RandAugment(magnitude=15, magnitude_max=15).draw_level(np.random.default_rng(0)) == 15.0


def _equalize(channel: np.ndarray) -> np.ndarray:
    """PIL's (and so timm's) equalize of one uint8 channel: step = (pixels - count of the last used value) // 255."""
    hist = np.bincount(channel.ravel(), minlength=256)
    used = hist[hist > 0]
    step = (used.sum() - used[-1]) // 255
    if step == 0:
        return channel
    lut = (step // 2 + np.concatenate([[0], np.cumsum(hist)[:-1]])) // step
    return np.minimum(lut, 255).astype(np.uint8)[channel]


def _autocontrast(channel: np.ndarray) -> np.ndarray:
    lo, hi = int(channel.min()), int(channel.max())
    if hi <= lo:
        return channel
    scale = 255.0 / (hi - lo)
    return np.clip(np.arange(256) * scale - lo * scale, 0, 255).astype(np.uint8)[channel]


def _blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    """ImageEnhance (PIL's blend): degenerate + factor * (image - degenerate), truncated and clipped."""
    return np.clip(np.trunc(degenerate + factor * (image.astype(np.float64) - degenerate)), 0, 255)


def _gray(image: np.ndarray) -> np.ndarray:
    """PIL's RGB -> L (ITU-R 601-2 luma)."""
    r, g, b = (image[..., c].astype(np.float64) for c in range(3))
    return np.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536)


def numpy_reference(name: str, image: np.ndarray, arg) -> np.ndarray:
    """The colour ops of timm's list in numpy, from their definitions (PIL's ImageOps / ImageEnhance maths)."""
    x = image.astype(np.int64)
    if name == "Invert":
        return 255 - x
    if name.startswith("Posterize"):
        return x if arg >= 8 else x & (~(2 ** (8 - arg) - 1) & 255)
    if name.startswith("Solarize") and name != "SolarizeAdd":
        return np.where(x < arg, x, 255 - x)
    if name == "SolarizeAdd":
        return np.where(x < 128, np.minimum(255, x + arg), x)
    if name == "Equalize":
        return np.stack([_equalize(image[..., c]) for c in range(3)], axis=-1)
    if name == "AutoContrast":
        return np.stack([_autocontrast(image[..., c]) for c in range(3)], axis=-1)
    kind = name.replace("Increasing", "")
    if kind == "Brightness":
        return _blend(np.zeros_like(x), image, arg)
    if kind == "Color":
        return _blend(_gray(image)[..., None], image, arg)
    if kind == "Contrast":
        return _blend(np.floor(_gray(image).mean() + 0.5), image, arg)
    if kind == "Sharpness":  # blend with PIL's 3x3 SMOOTH filter (centre 5, the rest 1, / 13); border unchanged
        padded = x.astype(np.float64)
        smooth = padded.copy()
        acc = sum(padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1)) + 4 * padded[1:-1, 1:-1]
        smooth[1:-1, 1:-1] = np.floor(acc / 13 + 0.5)
        return _blend(smooth, image, arg)
    raise KeyError(name)


COLOUR_OPS = ("AutoContrast", "Equalize", "Invert", "Posterize", "PosterizeIncreasing", "Solarize",
              "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast", "ContrastIncreasing",
              "Brightness", "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing")


@pytest.mark.parametrize("m", [5, 9, 15])
@pytest.mark.parametrize("name", COLOUR_OPS)
def test_colour_ops_equal_a_numpy_reference_on_photos(photos, name, m):
    for sign in (1, -1):
        level = min(m, 10)
        arg = None if LEVELS[name] is None else LEVELS[name](level, sign)
        for image in photos:
            out = np.asarray(apply_op(name, Image.fromarray(image), level, sign)).astype(np.int64)
            ref = numpy_reference(name, image, arg)
            assert out.shape == image.shape
            assert np.abs(out - ref).mean() <= 0.5 and np.abs(out - ref).max() <= 1  # rounding only


GEOMETRIC = {  # timm's PIL call for each geometric op and argument
    "ShearX": lambda img, f, kw: img.transform(img.size, Image.AFFINE, (1, f, 0, 0, 1, 0), **kw),
    "ShearY": lambda img, f, kw: img.transform(img.size, Image.AFFINE, (1, 0, 0, f, 1, 0), **kw),
    "TranslateXRel": lambda img, p, kw: img.transform(img.size, Image.AFFINE, (1, 0, p * img.size[0], 0, 1, 0), **kw),
    "TranslateYRel": lambda img, p, kw: img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, p * img.size[1]), **kw),
    "Rotate": lambda img, deg, kw: img.rotate(deg, **kw),
}


@pytest.mark.parametrize("m", [5, 9, 15])
@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_geometric_ops_are_timms_pil_calls(photos, name, m):
    fill = (124, 116, 104)
    for interpolation, resample in (("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)):
        for sign in (1, -1):
            arg = LEVELS[name](min(m, 10), sign)
            for image in photos:
                img = Image.fromarray(image)
                out = np.asarray(apply_op(name, img, min(m, 10), sign, fill, interpolation))
                ref = np.asarray(GEOMETRIC[name](img, arg, dict(resample=resample, fillcolor=fill)))
                np.testing.assert_array_equal(out, ref)
                assert np.abs(out.astype(int) - image).mean() > 10  # and the op does move the picture


def test_shear_and_translate_move_pixels_by_timms_amounts():
    """Output pixel (x, y) reads input (x + f y, y) for ShearX: a band 82 px above the centre of a 224 image moves
    by 0.27 * 82 = 22 px at m = 9 (nearest: whole pixels); TranslateXRel moves everything by 0.405 * 224 px."""
    image = np.zeros((224, 224, 3), np.uint8)
    image[:, 100:104] = 255  # a vertical bar, 4 px wide
    rows = {}
    for name, level in (("ShearX", 9), ("TranslateXRel", 9)):
        out = np.asarray(apply_op(name, Image.fromarray(image), level, 1, (0, 0, 0), "nearest"))
        rows[name] = [np.flatnonzero(out[y, :, 0] > 127).min() for y in (30, 112)]
    assert rows["ShearX"][0] == 100 - round(0.27 * 30.5) and rows["ShearX"][1] == 100 - round(0.27 * 112.5)
    assert rows["TranslateXRel"] == [100 - round(0.405 * 224)] * 2


def test_sampling_of_ops_probability_magnitude_and_sign(monkeypatch):
    """n ops uniform with replacement, each applied with p; magnitude N(m, mstd) clipped to [0, mmax]; sign +-."""
    calls = []
    monkeypatch.setattr(augment, "apply_op", lambda name, img, level, sign, fill, interp: calls.append(
        (name, level, sign)) or img)
    policy = parse_rand_augment("rand-m9-mstd0.5-inc1", (124, 116, 104), "bicubic")
    rng, image, trials = np.random.default_rng(0), np.zeros((8, 8, 3), np.uint8), 6000
    for _ in range(trials):
        policy.apply(image, rng)
    assert abs(len(calls) / (2 * trials) - 0.5) < 0.02  # p = 0.5 per drawn op
    counts = Counter(name for name, _, _ in calls)
    assert set(counts) == set(RAND_INCREASING_OPS)
    assert max(abs(c / len(calls) - 1 / 15) for c in counts.values()) < 0.015
    levels = np.array([level for _, level, _ in calls])
    assert abs(levels.mean() - 9.0) < 0.03 and abs(levels.std() - 0.5) < 0.03 and levels.max() <= 10.0
    assert abs(np.mean([sign > 0 for _, _, sign in calls]) - 0.5) < 0.02
    calls.clear()
    uniform = parse_rand_augment("rand-m9-mstd101-n3-p1.0", (0, 0, 0), "bicubic")
    for _ in range(2000):
        uniform.apply(image, rng)
    levels = np.array([level for _, level, _ in calls])
    assert len(calls) == 3 * 2000 and abs(levels.mean() - 4.5) < 0.15 and 0 <= levels.min() and levels.max() <= 9


def test_policy_strings():
    cfg = DataConfig()
    timm, mindcv = (build_augment(DataConfig(auto_augment=p), 224) for p in ("rand-m9-mstd0.5-inc1",
                                                                                "randaug-m9-mstd0.5-inc1"))
    assert vars(timm) == vars(mindcv)
    assert (timm.magnitude, timm.num_ops, timm.prob, timm.magnitude_std, timm.ops) == (9, 2, 0.5, 0.5,
                                                                                      RAND_INCREASING_OPS)
    assert timm.fill == (124, 116, 104) == tuple(round(v) for v in cfg.mean)  # timm: img_mean
    assert timm.interpolation == "bicubic"
    assert build_augment(DataConfig(auto_augment="rand-m9-inc0"), 224).ops == RAND_OPS
    assert build_augment(DataConfig(auto_augment="rand-m7"), 224).ops == RAND_OPS
    assert math.isinf(build_augment(DataConfig(auto_augment="rand-mstd200"), 224).magnitude_std)
    assert build_augment(DataConfig(auto_augment="rand-m12-mmax15"), 224).magnitude_max == 15
    for bad in ("rand-m9-bogus1", "rand-m9-mstd", "rand-n0"):
        with pytest.raises(ConfigError, match="data.auto_augment"):
            build_augment(DataConfig(auto_augment=bad), 224)


def test_rand_augment_changes_photos_as_much_as_timms_would(photos):
    """Mean absolute change of the policy on photos: about what timm's gives (48 on 0-255, docs/training.md)."""
    policy = build_augment(DataConfig(), 224)
    rng = np.random.default_rng(0)
    changes = [np.abs(out.astype(int) - image).mean() for _ in range(40) for image in photos
               for out in policy([image], rng)]
    assert 25 < np.mean(changes) < 55
    smooth = Image.fromarray(photos[0]).filter(ImageFilter.SMOOTH)  # the reference's filter is PIL's SMOOTH
    assert np.abs(numpy_reference("Sharpness", photos[0], 0.0) - np.asarray(smooth)).max() <= 1


def test_the_parity_command_names_what_to_install_without_timm(monkeypatch, capsys):
    """python -m vit_ms.augment_parity compares with timm's own code; without timm it stops with exit 2 and says so."""
    import sys

    from vit_ms import augment_parity as command
    from vit_ms.errors import run_cli
    from vit_ms.tools import augment_parity

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    assert run_cli(command.main, []) == 2
    assert "pip install torch timm" in capsys.readouterr().err
    assert run_cli(command.main, ["--draws", "0"]) == 2
    rows = [augment_parity.row("op", "m=9", [np.array([0.0, 2.0])]), augment_parity.row("x", "s", ours="1", timm="2")]
    table = augment_parity.format_table(rows, "timm 1.0").splitlines()
    assert table[2].startswith("| check |") and table[4] == "| op | m=9 |  |  | 1.000 | 2.0 |  |"
    assert table[5] == "| x | s | 1 | 2 |  |  |  |"
