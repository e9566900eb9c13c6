"""Small datasets written as ImageNet-style folders, with no download.

- `write_digits_folder`: scikit-learn's bundled handwritten digits (1,797 images of 8x8, 10 classes),
  upscaled to `image_size` PNGs, split per class into train / val with a fixed seed. Written into a temporary
  folder and renamed into place, with a marker file holding the counts; a complete folder is left as it is.
- `write_synthetic_folder`: random but learnable images (class = colour and stripe direction / period),
  JPEG and PNG mixed, for tests and benchmarks.

The command is `python -m vit_ms.demo` (vit_ms/demo.py); a run with `data.generate: digits` writes the digits
folder itself (`generate_if_missing`).
"""
import colorsys
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from PIL import Image

from ..errors import DataError

MARKER = ".vit_ms_demo.json"  # in <root>; written last, so its presence means the folder is complete


def _read_marker(root: Path) -> Optional[Dict]:
    """The marker of a complete digits folder (None: none, or unreadable)."""
    try:
        return json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _digits_split(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Stratified: per class, a seeded shuffle, the first round(n * val_fraction) go to val. -> (N,) bool."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        is_val[members[: int(round(len(members) * val_fraction))]] = True
    return is_val


def write_digits_folder(root: Path, image_size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write `<root>/{train,val}/<digit>/<n>.png`; returns root. Does nothing if the same folder is complete."""
    from sklearn.datasets import load_digits  # imported here: only the digits demo needs scikit-learn (a second)

    if image_size < 8:
        raise DataError(f"--image-size {image_size} must be at least 8 (the digits are 8x8)")
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction {val_fraction} must be between 0 and 1, e.g. 0.2")
    root = Path(root)
    params = dict(kind="digits", image_size=image_size, val_fraction=val_fraction, seed=seed)
    found = _read_marker(root)
    if found is not None and found.get("params") == params:
        return root
    if root.exists() and found is None:
        raise DataError(f"'{root}' already exists and is not a folder written by python -m vit_ms.demo "
                        f"(no {MARKER}); remove it or choose another --out")

    digits = load_digits()
    images = np.round(digits.images / 16.0 * 255).astype(np.uint8)  # (1797, 8, 8), values 0..16 -> 0..255
    labels = digits.target
    is_val = _digits_split(labels, val_fraction, seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for i, (image, label, val) in enumerate(zip(images, labels, is_val)):
            folder = tmp / ("val" if val else "train") / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            big = Image.fromarray(image).resize((image_size, image_size), Image.BICUBIC)  # 8x8 L -> S x S
            big.save(folder / f"{i:04d}.png")
        counts = {"train": int((~is_val).sum()), "val": int(is_val.sum())}
        (tmp / MARKER).write_text(json.dumps({"params": params, "counts": counts, "classes": 10}), encoding="utf-8")
        _move_into_place(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


GENERATORS = {"digits": write_digits_folder}  # data.generate -> writer(root)


def generate_if_missing(data) -> bool:
    """Write the dataset `data.generate` names into `data.root` when that folder does not exist (the one-command
    demo); an existing folder is never touched. Returns whether it wrote one. Safe on several ranks at once:
    each writes into its own temporary folder and the first rename wins."""
    if not data.generate or Path(data.root).exists():
        return False
    GENERATORS[data.generate](Path(data.root))
    return True


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename the finished temp folder to root, replacing an older demo folder there."""
    old = None
    if root.exists():  # ours (it has a marker) but written with other parameters
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / "data")
    try:
        os.replace(tmp, root)
    except OSError:
        if _read_marker(root) is None:  # not another process that finished first
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _synthetic_image(rng: np.random.Generator, label: int, num_classes: int, size: int) -> np.ndarray:
    """Class colour (hue) with stripes whose direction and period depend on the class, plus noise. -> (S, S, 3)."""
    rgb = np.array(colorsys.hsv_to_rgb(label / num_classes, 0.75, 0.9)) * 255  # (3,)
    period = 4 + 2 * (label % 3)
    coords = np.arange(size)[:, None] if label % 2 == 0 else np.arange(size)[None, :]
    stripes = ((coords + rng.integers(period)) // (period // 2)) % 2  # (S, 1) or (1, S)
    shade = 0.65 + 0.35 * np.broadcast_to(stripes, (size, size))  # (S, S)
    image = rgb * shade[:, :, None] * rng.uniform(0.85, 1.15) + rng.normal(0, 8, (size, size, 3))
    return image.clip(0, 255).astype(np.uint8)


def write_synthetic_folder(root: Path, num_classes: int = 3, train_per_class: int = 8, val_per_class: int = 4,
                           image_size: int = 32, seed: int = 0) -> Path:
    """Write `<root>/{train,val}/class_<c>/<n>.{jpg,png}` (alternating formats); returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label in range(num_classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(per_class):
                image = Image.fromarray(_synthetic_image(rng, label, num_classes, image_size))
                if n % 2 == 0:
                    image.save(folder / f"{n:04d}.jpg", quality=90)
                else:
                    image.save(folder / f"{n:04d}.png")
    return root


def digits_counts(root: Path) -> Dict[str, int]:
    """{"train": n, "val": m}: the images of the complete digits folder `root` (its marker's counts)."""
    return _read_marker(root)["counts"]
