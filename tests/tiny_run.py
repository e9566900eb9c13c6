"""A tiny trained-looking run directory for the inference and export tests.

    run = write_tiny_run(tmp_path)   # run.config, run.ckpt_a, run.ckpt_b (other weights), run.images

<dir>/run/{config.yaml, a.ckpt, b.ckpt, classes.txt} as the trainer leaves them (ViT with depth 2, width 32,
32 px, 3 classes), and <dir>/images/ with four readable images of different sizes (PNG and JPEG, one in a
subfolder), a truncated JPEG and a text file.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List

import mindspore as ms
import numpy as np
from PIL import Image

from tiny import tiny_overrides
from vit_ms.config import Config, config_to_dict
from vit_ms.config_loader import load_config, save_config
from vit_ms.models import resolve_architecture, VisionTransformer
from vit_ms.train.checkpoint import TrainState, save_checkpoint
from vit_ms.weights.checkpoint import CheckpointMeta

CLASSES = ["cat", "dog", "bird"]
TINY = tiny_overrides(num_classes=len(CLASSES)) + ["data.interpolation=bilinear"]


@dataclass
class TinyRun:
    config_path: Path
    config: Config
    ckpt_a: Path
    ckpt_b: Path
    images: Path  # folder: good images, a corrupt JPEG and a text file
    good: List[Path]
    corrupt: Path
    text_file: Path


def save_weights(cfg: Config, path: Path, seed: int) -> None:
    """A checkpoint as train.py writes it (with the config and class names), weights from `seed`."""
    ms.set_seed(seed)
    model = VisionTransformer(resolve_architecture(cfg.model))
    for p in model.get_parameters():  # make the classes distinguishable: a random init is near uniform
        if p.name == "head.weight":
            p.set_data(ms.Tensor(np.random.default_rng(seed).normal(0, 1.0, p.shape).astype(np.float32)))
    save_checkpoint(model, path, TrainState(), CheckpointMeta(config_to_dict(cfg), None, CLASSES))


def write_tiny_run(root: Path) -> TinyRun:
    run_dir, images = root / "run", root / "images"
    (images / "sub").mkdir(parents=True)
    run_dir.mkdir()
    cfg = load_config(None, TINY)
    save_config(cfg, run_dir / "config.yaml")
    save_weights(cfg, run_dir / "a.ckpt", seed=1)
    save_weights(cfg, run_dir / "b.ckpt", seed=2)
    (run_dir / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")

    rng = np.random.default_rng(0)
    good = [images / "a.png", images / "b.jpg", images / "c.png", images / "sub" / "d.jpg"]
    for i, path in enumerate(good):
        pixels = rng.integers(0, 256, (36 + 7 * i, 48 - 3 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    corrupt = images / "e_corrupt.jpg"
    corrupt.write_bytes(good[1].read_bytes()[:200])  # a JPEG cut off after its header
    text_file = images / "notes.txt"
    text_file.write_text("not an image\n", encoding="utf-8")
    return TinyRun(run_dir / "config.yaml", cfg, run_dir / "a.ckpt", run_dir / "b.ckpt", images, good, corrupt,
                   text_file)


def reference_logits(cfg: Config, ckpt: Path, paths: List[Path]) -> np.ndarray:
    """Logits of the checkpoint's model on `paths`, computed directly (PyNative, no vit_ms.inference.predict)."""
    from vit_ms.data import load_image_rgb, preprocess_eval
    from vit_ms.train.checkpoint import load_model_weights

    model = VisionTransformer(resolve_architecture(cfg.model))
    load_model_weights(model, ckpt)
    model.set_train(False)
    x = np.stack([preprocess_eval(load_image_rgb(p, cfg.data.max_image_pixels), cfg.data, cfg.model.image_size)
                  for p in paths])
    return model(ms.Tensor(x)).asnumpy()
