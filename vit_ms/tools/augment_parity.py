"""Our augmentation and eval transform beside timm's own code, on real photos, in one table.

    rows, versions = parity_rows(draws=500, seed=0)   # needs timm (and torch, torchvision) importable
    print(format_table(rows, versions))               # python -m vit_ms.augment_parity

The photos are scikit-learn's two sample images (china.jpg, flower.jpg, 427 x 640), resized to 224 x 224 with
PIL's bicubic for the per-op rows. Every row runs timm's code and ours on the same input:

- RandAugment, op by op: timm's `AugmentOp(name, prob=1, magnitude=m)` with its random sign fixed (each sign in
  turn), the mean colour as fill and bicubic resampling (DeiT's hyper-parameters), against
  `vit_ms.data.augment.apply_op` at our level for m (clipped to mmax = 10 as timm clips), at m = 5, 9, 15;
  then the whole policy (mean change of a photo over many draws, which are random on both sides).
- Random erasing (DeiT's mode='pixel', probability 1): box area, aspect and fill statistics over many draws.
- Resizing: the training crop (torchvision's `resized_crop`, which timm's RandomResizedCropAndInterpolation
  calls) against `SeededCrop`'s and the C++ RandomCropDecodeResize's; timm's eval transform
  (`create_transform(is_training=False)`) against ours from the JPEG's bytes, at several crop_pct.
- The published weights' eval settings (vit_ms.weights.hub) against timm's `pretrained_cfg` for the same weights.

Pixel rows give the mean and max absolute difference on the 0-255 scale (normalised outputs times std).
"""
import io
import random
from typing import Callable, List, Sequence

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

from ..config import DataConfig
from ..data.augment import RAND_INCREASING_OPS, RAND_OPS, RandAugment, apply_op
from ..data.batch_ops import Normalizer, random_erase
from ..data.transforms import SeededCrop, build_augment, build_eval_transforms, build_train_transforms, crop_box
from ..errors import UserError
from ..weights.hub import PRETRAINED

FILL = (124, 116, 104)  # timm's img_mean for the ImageNet mean
_PIL = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def load_timm():
    """timm's modules this command compares with; UserError naming the install when they are missing."""
    try:
        import timm  # noqa: F401
        import torch
        from timm.data import auto_augment, create_transform
        from timm.data.random_erasing import RandomErasing
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as tvf
    except ImportError as err:
        raise UserError(f"python -m vit_ms.augment_parity compares with timm's own transforms, which cannot be "
                        f"imported here ({err}). Install them in a separate environment beside this repository's "
                        f"requirements, e.g. pip install torch timm, and run the command there") from err
    return dict(timm=timm, torch=torch, aa=auto_augment, create_transform=create_transform,
                RandomErasing=RandomErasing, tvf=tvf, InterpolationMode=InterpolationMode)


def sample_photos() -> List[np.ndarray]:
    return list(load_sample_images().images)  # (427, 640, 3) uint8 each


def _diff(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))


def row(check: str, setting: str, diffs: Sequence[np.ndarray] = (), ours: str = "", timm: str = "",
        note: str = "") -> dict:
    flat = np.concatenate([d.ravel() for d in diffs]) if len(diffs) else None
    return {"check": check, "setting": setting, "ours": ours, "timm": timm, "note": note,
            "mean_abs": None if flat is None else float(flat.mean()),
            "max_abs": None if flat is None else float(flat.max())}


def op_rows(t: dict, photos: Sequence[np.ndarray]) -> List[dict]:
    """Each RandAugment op at m = 5, 9 and 15, both signs, on the 224 px photos: one row per op."""
    aa, rows = t["aa"], []
    negate = aa._randomly_negate
    images = [np.asarray(Image.fromarray(p).resize((224, 224), Image.BICUBIC)) for p in photos]
    try:
        for name in dict.fromkeys(RAND_OPS + RAND_INCREASING_OPS):
            diffs, notes = [], set()
            for m in (5, 9, 15):
                level = RandAugment(magnitude=m).draw_level(np.random.default_rng(0))
                for sign in (1, -1):
                    aa._randomly_negate = (lambda v: v) if sign > 0 else (lambda v: -v)
                    op = aa.AugmentOp(name, prob=1.0, magnitude=m, hparams=dict(img_mean=FILL,
                                                                                interpolation=Image.BICUBIC))
                    for image in images:
                        ours = np.asarray(apply_op(name, Image.fromarray(image), level, sign, FILL, "bicubic"))
                        try:
                            theirs = np.asarray(op(Image.fromarray(image)))
                        except ValueError as err:  # Posterize to 0 bits: recent Pillow refuses
                            notes.add(f"m={m}: timm raises ({err}); compared with black, older Pillow's result")
                            theirs = np.zeros_like(image)
                        diffs.append(_diff(ours, theirs))
            rows.append(row(f"RandAugment {name}", "m=5, 9, 15; both signs", diffs, note="; ".join(sorted(notes))))
    finally:
        aa._randomly_negate = negate
    return rows


def policy_rows(t: dict, photos: Sequence[np.ndarray], draws: int, seed: int) -> List[dict]:
    """The whole policy: mean absolute change of a photo, ours and timm's, over `draws` random draws each."""
    images = [np.asarray(Image.fromarray(p).resize((224, 224), Image.BICUBIC)) for p in photos]
    rows = []
    for policy in ("rand-m9-mstd0.5-inc1", "rand-m9-mstd0.5", "rand-m7-mstd0.5"):
        ours_op = build_augment(DataConfig(auto_augment=policy), 224)
        theirs_op = t["aa"].rand_augment_transform(policy, dict(img_mean=FILL, interpolation=Image.BICUBIC))
        rng = np.random.default_rng(seed)
        random.seed(seed)
        np.random.seed(seed)
        ours = [_diff(ours_op([im], rng)[0], im).mean() for _ in range(draws) for im in images]
        theirs = [_diff(np.asarray(theirs_op(Image.fromarray(im))), im).mean() for _ in range(draws) for im in images]
        rows.append(row("RandAugment, whole policy", policy, ours=f"{np.mean(ours):.1f}",
                        timm=f"{np.mean(theirs):.1f}", note="mean absolute change of a photo, 0-255"))
    return rows


def _boxes(erased: np.ndarray) -> tuple:
    """(h, w) of the one box in each (3, S, S) image of a batch erased over a zero background."""
    mask = (erased != 0).any(axis=1)  # (B, S, S)
    hs, ws = mask.any(axis=2).sum(axis=1), mask.any(axis=1).sum(axis=1)
    return hs[hs > 0], ws[hs > 0]


def erasing_rows(t: dict, draws: int, seed: int) -> List[dict]:
    torch, size, batch = t["torch"], 224, 100
    eraser = t["RandomErasing"](probability=1.0, mode="pixel", device="cpu")
    torch.manual_seed(seed)
    random.seed(seed)
    rng = np.random.default_rng(seed)
    stats = {"ours": [[], [], []], "timm": [[], [], []]}  # h, w, fill values
    for _ in range(max(1, draws // batch)):
        ours = random_erase(np.zeros((batch, 3, size, size), np.float32), 1.0, rng, "pixel")
        theirs = np.stack([eraser(torch.zeros(3, size, size)).numpy() for _ in range(batch)])
        for key, out in (("ours", ours), ("timm", theirs)):
            h, w = _boxes(out)
            stats[key][0].append(h)
            stats[key][1].append(w)
            stats[key][2].append(out[out != 0][:20000])
    summary = {}
    for key, (h, w, fill) in stats.items():
        h, w, fill = np.concatenate(h).astype(float), np.concatenate(w).astype(float), np.concatenate(fill)
        summary[key] = {"median w/h": np.median(w / h), "share wider than tall": np.mean(w > h),
                        "mean area fraction": np.mean(h * w) / size**2, "fill mean": fill.mean(),
                        "fill std": fill.std()}
    return [row("RandomErasing mode=pixel", stat, ours=f"{summary['ours'][stat]:.3f}",
                timm=f"{summary['timm'][stat]:.3f}", note=f"{draws} draws each")
            for stat in summary["ours"]]


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def resize_rows(t: dict, photos: Sequence[np.ndarray], seed: int) -> List[dict]:
    """Training crops and the eval transform, from the JPEG's bytes, against timm's / torchvision's on PIL."""
    tvf, modes, rows = t["tvf"], t["InterpolationMode"], []
    cfg = DataConfig()
    std = np.array(cfg.std)[:, None, None]
    for interpolation in ("bicubic", "bilinear"):
        mode = getattr(modes, interpolation.upper())
        crop_diffs, cpp_diffs = [], []
        for k, photo in enumerate(photos):
            data = _jpeg(photo)
            decoded = Image.open(io.BytesIO(data)).convert("RGB")
            rng = np.random.default_rng(seed + k)
            seeded = SeededCrop(DataConfig(interpolation=interpolation, hflip=0.0, auto_augment=""), 224)
            for _ in range(10):
                state = rng.bit_generator.state
                top, left, h, w = crop_box(rng, decoded.height, decoded.width, cfg.scale, cfg.ratio)
                rng.bit_generator.state = state  # SeededCrop draws the same box
                ours = seeded(np.frombuffer(data, np.uint8), rng)
                theirs = np.asarray(tvf.resized_crop(decoded, top, left, h, w, [224, 224], mode))
                crop_diffs.append(_diff(ours, theirs))
            if interpolation == "bicubic":
                whole = DataConfig(scale=[1.0, 1.0], ratio=[photo.shape[1] / photo.shape[0]] * 2, hflip=0.0,
                                   auto_augment="")
                cpp = build_train_transforms(whole, 224, encoded=True)[0](np.frombuffer(data, np.uint8))
                cpp_diffs.append(_diff(cpp, np.asarray(tvf.resize(decoded, [224, 224], mode))))
        rows.append(row("train crop + resize (Python, SeededCrop)", interpolation, crop_diffs))
        if cpp_diffs:
            rows.append(row("train crop + resize (C++ RandomCropDecodeResize)", interpolation, cpp_diffs,
                            note="whole-image crop"))
        for crop_pct in (0.875, 0.9, 1.0):
            ecfg = DataConfig(interpolation=interpolation, crop_pct=crop_pct)
            theirs_op = t["create_transform"](224, is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                                              mean=tuple(v / 255 for v in ecfg.mean),
                                              std=tuple(v / 255 for v in ecfg.std))
            diffs = []
            for photo in list(photos) + [photos[0][:, :601], photos[1][:423, :603]]:  # odd margins too
                data = _jpeg(np.ascontiguousarray(photo))
                out = np.frombuffer(data, np.uint8)
                for op in build_eval_transforms(ecfg, 224, encoded=True):
                    out = op(out)
                ours = Normalizer(ecfg.mean, ecfg.std)(np.asarray(out))  # (3, 224, 224)
                theirs = theirs_op(Image.open(io.BytesIO(data)).convert("RGB")).numpy()
                diffs.append(_diff(ours * std, theirs * std))
            rows.append(row("eval transform (from JPEG bytes)", f"{interpolation}, crop_pct={crop_pct}", diffs))
    return rows


def weights_rows(t: dict) -> List[dict]:
    """Our weights table's eval settings against timm's pretrained_cfg for the timm-hub weights."""
    rows = []
    for name, weights in PRETRAINED.items():
        if "huggingface.co/timm/" not in weights.url:
            continue
        timm_name = weights.url.split("huggingface.co/timm/")[1].split("/")[0]
        cfg = t["timm"].models.get_pretrained_cfg(timm_name)
        if cfg is None:
            rows.append(row("weights eval settings", name, note=f"timm has no pretrained_cfg '{timm_name}'"))
            continue
        ours = (weights.crop_pct, weights.interpolation, tuple(round(v / 255, 3) for v in weights.mean),
                weights.image_size)
        theirs = (cfg.crop_pct, cfg.interpolation, tuple(round(v, 3) for v in cfg.mean), cfg.input_size[-1])
        rows.append(row("weights eval settings", name, ours=str(ours), timm=str(theirs),
                        note="same" if ours == theirs else "DIFFERENT"))
    return rows


def format_table(rows: Sequence[dict], versions: str) -> str:
    """One Markdown table: check | setting | ours | timm | mean abs | max abs | note."""
    lines = [f"augmentation parity with timm ({versions}); pixel differences on the 0-255 scale", "",
             "| check | setting | ours | timm | mean abs diff | max abs diff | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mean = "" if r["mean_abs"] is None else f"{r['mean_abs']:.3f}"
        most = "" if r["max_abs"] is None else f"{r['max_abs']:.1f}"
        lines.append(f"| {r['check']} | {r['setting']} | {r['ours']} | {r['timm']} | {mean} | {most} | {r['note']} |")
    return "\n".join(lines)


def parity_rows(draws: int, seed: int, skip: Sequence[str] = ()) -> tuple:
    """(rows, versions): every part of the comparison not in `skip`, and timm's, torch's and Pillow's versions."""
    t = load_timm()
    photos = sample_photos()
    parts: List[Callable[[], List[dict]]] = []
    if "ops" not in skip:
        parts.append(lambda: op_rows(t, photos))
    if "policy" not in skip:
        parts.append(lambda: policy_rows(t, photos, max(1, draws // 5), seed))
    if "erasing" not in skip:
        parts.append(lambda: erasing_rows(t, draws, seed))
    if "resize" not in skip:
        parts.append(lambda: resize_rows(t, photos, seed))
    if "weights" not in skip:
        parts.append(lambda: weights_rows(t))
    versions = f"timm {t['timm'].__version__}, torch {t['torch'].__version__}, Pillow {Image.__version__}"
    return [r for part in parts for r in part()], versions
