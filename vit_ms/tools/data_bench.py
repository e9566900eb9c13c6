"""The data side alone: our train and eval pipelines against mindcv's loader on the same photo-sized JPEGs.

    python -m vit_ms.benchmark --config vit_b16.yaml --data-only --compare mindcv

Writes a folder of photo-sized JPEGs (500x375 by default, like ImageNet's; smooth colour waves plus noise,
quality 90) to a temporary folder, builds every pipeline once with the config's transforms and workers:

- ours: `vit_ms.data.create_dataset` (train: RandomCropDecodeResize, flip, then per batch timm's RandAugment,
  normalise, random erasing, mixup / cutmix; eval: Decode, resize with PIL's filter, center crop, normalise), from the
  folder (format "folder") and from a MindRecord copy of it (`data.format: mindrecord`);
- mindcv (--compare mindcv): `mindcv.data.create_dataset` + `create_transforms` + `create_loader` with the same
  size, scale, ratio, interpolation, policy, erasing, mixup / cutmix and workers,

then times them in rounds, alternating (ours train, mindcv train, ours eval, mindcv eval, ...): each turn is
one epoch from a fresh iterator; its first batch (start-up) is not timed. Reported per pipeline, medians over
the rounds: images/s (wall clock; also the best round, the nearest to an idle machine when it is shared),
images/s per worker (wall clock / workers), images per CPU-second (images
over the process's user + system CPU time during the epoch: what one busy core delivers, which a shared
machine disturbs less than the wall clock), and the host cores one device needs at --device-rate images/s
(device rate / images per CPU-second).
"""
import copy
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
from mindcv.data import create_dataset as mindcv_dataset, create_loader, create_transforms
from PIL import Image

from ..config import Config
from ..errors import UserError
from ..data import Feed, create_dataset
from ..data.setup import prepare_data
from ..data.mindrecord import convert_folder


def photo(rng: np.random.Generator, width: int, height: int, label: int) -> np.ndarray:
    """Smooth colour waves plus noise (photo-like entropy for JPEG): (H, W, 3) uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    f = rng.uniform(15, 60, 3)
    waves = np.stack([np.sin(x / f[0] + label), np.cos(y / f[1]), np.sin((x + y) / f[2])], axis=-1)  # (H, W, 3)
    noise = rng.normal(0, 12, (height, width, 3)).astype(np.float32)
    return (127 + 100 * waves + noise).clip(0, 255).astype(np.uint8)


def write_photo_folder(root: Path, classes: int, train_per_class: int, val_per_class: int, width: int = 500,
                       height: int = 375, seed: int = 0) -> Path:
    """`<root>/{train,val}/class_<c>/<n>.jpg`, JPEG quality 90; returns root."""
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label in range(classes):
            folder = Path(root) / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(per_class):
                Image.fromarray(photo(rng, width, height, label)).save(folder / f"{n:05d}.jpg", quality=90)
    return Path(root)


def mindcv_pipeline(cfg: Config, root: str, split: str, training: bool, batch: int, workers: int, classes: int):
    """mindcv 0.3's loader with the config's augmentation (the same settings ours reads)."""
    d = cfg.data
    dataset = mindcv_dataset(name="imagenet", root=root, split=split, shuffle=training,
                             num_parallel_workers=workers)
    common = dict(dataset_name="imagenet", image_resize=cfg.model.image_size, is_training=training,
                  interpolation=d.interpolation, mean=d.mean, std=d.std)
    if training:  # mindcv spells timm's RandAugment policy 'randaug-...'
        policy = "randaug-" + d.auto_augment[len("rand-"):] if d.auto_augment.startswith("rand-") else d.auto_augment
        transform = create_transforms(**common, auto_augment=policy or None, scale=tuple(d.scale),
                                      ratio=tuple(d.ratio), hflip=d.hflip, re_prob=d.re_prob,
                                      color_jitter=d.color_jitter if d.color_jitter > 0 and not d.auto_augment
                                      else None)
    else:
        transform = create_transforms(**common, crop_pct=d.crop_pct)
    return create_loader(dataset, batch, drop_remainder=training, is_training=training,
                         mixup=d.mixup if training else 0.0, cutmix=d.cutmix if training else 0.0,
                         cutmix_prob=d.mixup_prob, num_classes=classes, transform=transform,
                         num_parallel_workers=workers)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def time_epoch(dataset) -> tuple:
    """(images/s, images per CPU-second) of one epoch from a fresh iterator, its first batch (start-up) untimed."""
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(iterator)
    count, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    for images, _ in iterator:
        count += len(images)
    return count / (time.perf_counter() - start), count / max(_cpu_seconds() - cpu, 1e-9)


def _mindrecord_copy(root: str, out: str) -> str:
    """Convert the folder to MindRecord; returns the output folder."""
    convert_folder(Path(root), Path(out), splits=("train", "val"), show_progress=False)
    return out


def build_pipelines(cfg: Config, root: str, batch: int, workers: int, classes: int, compare: Optional[str],
                    mindrecord: Optional[str]) -> Dict[tuple, Callable]:
    """(pipeline, split, format) -> a dataset to time, all built before any timing."""
    dcfg = copy.deepcopy(cfg)
    dcfg.data.root, dcfg.model.num_classes, dcfg.data.num_parallel_workers = root, classes, workers
    dcfg.data.index_cache_dir = "off"
    mcfg = copy.deepcopy(dcfg)
    mcfg.data.root, mcfg.data.format = mindrecord, "mindrecord"
    prepare_data(dcfg.data, cfg.train.seed, cfg.train.deterministic)  # the same settings for both formats
    feed = Feed.of(dcfg, batch)
    out = {}
    for split, training in (("train", True), ("val", False)):
        name = "train" if training else "eval"
        out[("ours", name, "folder")] = create_dataset(dcfg.data, split, feed)[0]
        if compare:
            out[(compare, name, "folder")] = mindcv_pipeline(dcfg, root, split, training, batch, workers, classes)
        if mindrecord:
            out[("ours", name, "mindrecord")] = create_dataset(mcfg.data, split, feed)[0]
    return out


def data_benchmark(cfg: Config, batch: int, images: int, rounds: int, compare: Optional[str], device_rate: float,
                   width: int = 500, height: int = 375, mindrecord: bool = True) -> List[dict]:
    """Records: one `data_pipeline` per (pipeline, split, format), then a `data_comparison` with the ratios."""
    classes = 4
    per_class = max(1, -(-images // classes))
    if per_class * classes < 2 * batch:  # the train pipeline drops a partial batch; the first is start-up, untimed
        raise UserError(f"--data-images {images} makes {per_class * classes} JPEGs a split, fewer than two batches "
                        f"of --batch {batch}: each epoch's first batch is start-up and not timed, so nothing would "
                        f"be measured. Use --data-images {2 * batch} or more, or a smaller --batch")
    workers = min(cfg.data.num_parallel_workers, os.cpu_count() or 1)
    records = []
    with tempfile.TemporaryDirectory(prefix="vit_ms_data_bench_") as tmp:
        root = str(write_photo_folder(Path(tmp) / "photos", classes, per_class, per_class, width, height))
        mr = _mindrecord_copy(root, str(Path(tmp) / "mindrecord")) if mindrecord else None
        pipelines = build_pipelines(cfg, root, batch, workers, classes, compare, mr)
        rates = {key: [] for key in pipelines}
        for _ in range(rounds):
            for key, dataset in pipelines.items():
                rates[key].append(time_epoch(dataset))
    for (name, split, fmt), values in rates.items():
        rate = statistics.median(v[0] for v in values)
        per_cpu = statistics.median(v[1] for v in values)
        records.append({"measurement": "data_pipeline", "pipeline": name, "split": split, "format": fmt,
                        "images_per_sec": rate, "images_per_sec_rounds": [v[0] for v in values],
                        "images_per_sec_best": max(v[0] for v in values),
                        "workers": workers, "images_per_sec_per_worker": rate / workers,
                        "images_per_cpu_second": per_cpu, "images_per_cpu_second_rounds": [v[1] for v in values],
                        "cores_per_device": device_rate / per_cpu, "device_rate": device_rate,
                        "batch": batch, "images": per_class * classes, "file_px": [width, height],
                        "crop_px": cfg.model.image_size, "auto_augment": cfg.data.auto_augment,
                        "re_prob": cfg.data.re_prob, "mixup": cfg.data.mixup, "cutmix": cfg.data.cutmix})
    if compare:
        by = {(r["pipeline"], r["split"], r["format"]): r for r in records}

        def ratio(split: str, key: str) -> float:
            return by[("ours", split, "folder")][key] / by[(compare, split, "folder")][key]

        records.append({"measurement": "data_comparison", "compare": compare,
                        "train_ratio": ratio("train", "images_per_sec"), "eval_ratio": ratio("eval", "images_per_sec"),
                        "train_cpu_ratio": ratio("train", "images_per_cpu_second"),
                        "eval_cpu_ratio": ratio("eval", "images_per_cpu_second")})
    return records


def format_data_table(records: List[dict], config_name: str) -> str:
    rows = [r for r in records if r["measurement"] == "data_pipeline"]
    first = rows[0]
    lines = [f"data pipelines, {config_name} transforms: {first['images']} JPEGs of {first['file_px'][0]}x"
             f"{first['file_px'][1]} -> {first['crop_px']} px, batch {first['batch']}, {first['workers']} workers, "
             f"median of {len(first['images_per_sec_rounds'])} alternating rounds",
             f"{'pipeline':10s}{'split':7s}{'format':15s}{'images/s':>10s}{'best':>8s}{'per worker':>12s}"
             f"{'per CPU-s':>11s}"
             f"{'cores/device':>14s}   (at {first['device_rate']:.0f} images/s per device)"]
    for r in rows:
        lines.append(f"{r['pipeline']:10s}{r['split']:7s}{r['format']:15s}{r['images_per_sec']:10.1f}"
                     f"{r['images_per_sec_best']:8.1f}{r['images_per_sec_per_worker']:12.1f}{r['images_per_cpu_second']:11.1f}"
                     f"{r['cores_per_device']:14.1f}")
    for r in records:
        if r["measurement"] == "data_comparison":
            lines.append(f"ours / {r['compare']}: train {r['train_ratio']:.2f}x, eval {r['eval_ratio']:.2f}x "
                         f"(images/s); per CPU-second: train {r['train_cpu_ratio']:.2f}x, eval "
                         f"{r['eval_cpu_ratio']:.2f}x")
    return "\n".join(lines)
