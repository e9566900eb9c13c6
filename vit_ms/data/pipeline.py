"""`create_dataset`: folder scan -> sampler -> decode -> per-image transforms -> batch + finish, for one shard.

Columns out: `image` float32 (B, 3, S, S); `label` int32 (B,), or float32 (B, num_classes) soft labels when
training with mixup / cutmix. The source reads each file's bytes in Python threads (`reading.SampleReader`: PIL
decodes only what the C++ decoder cannot read, see `decode`); the first
map op decodes in C++: RandomCropDecodeResize for training, Decode for evaluation (then timm's resize and crop,
`transforms.EvalCrop`). The per-image ops end in uint8 (S, S, 3); the batch op's `BatchFinish` normalises,
erases and mixes whole batches (`batch_ops`). A file that turns out bad after the scan is replaced by another
sample when data.on_bad_image=skip (by the next usable one, named in a warning: `reading`), so the number of
batches per epoch never changes.
"""
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import mindspore.dataset as ds

from ..config import DataConfig
from ..errors import DataError
from .folder import list_classes, read_class_names, scan_split
from .index_cache import resolve_cache_dir
from .mindrecord_source import SplitData, mindrecord_dataset, open_split
from .reading import SampleReader
from .sampler import EpochSampler
from .batch_ops import BatchFinish, Normalizer, build_mixup
from .transforms import SeededCrop, build_augment, build_eval_transforms, build_train_transforms, train_crop_in_cpp

logger = logging.getLogger("vit_ms")


@dataclass
class DatasetInfo:
    class_names: List[str]
    num_samples: int  # usable samples in the whole split (all shards)
    bad_files: List[Tuple[str, str]]  # (path, reason) left out by the scan
    steps_per_epoch: int  # batches per full epoch for this shard (after the steps_per_epoch cap, before skip)
    shard_samples: int = 0  # samples this shard reads per full epoch (before the cap)


@dataclass(frozen=True)
class Feed:
    """What this process reads of a split and how it is cut: batch, shards and accumulation as the run plan
    resolved them, the resume position, and the few training settings the batches depend on.

    In a run: `Feed.from_plan(cfg, plan, training, ...)`; without a plan (tools, tests): `Feed.of(cfg, batch)`.
    """
    image_size: int  # S: the model's input side
    batch_size: int  # images per batch on this device (one micro-batch when accumulating)
    num_shards: int = 1  # data-parallel ranks reading the split
    shard_id: int = 0
    accum_steps: int = 1  # training: batches stacked into one optimizer step, (k, B, ...)
    steps_per_epoch: int = 0  # > 0: at most this many steps per epoch
    start_epoch: int = 0  # resume: the first epoch the dataset yields,
    skip_steps: int = 0  # and how many of its steps to leave out
    seed: int = 0  # train.seed: sample order, augmentation and mixup draws
    deterministic: bool = False  # train.deterministic: crops and flips drawn per batch (transforms.SeededCrop)
    label_smoothing: float = 0.0  # loss.label_smoothing, folded into mixup's soft labels

    @classmethod
    def of(cls, cfg, batch_size: int, **resolved) -> "Feed":
        """The config's image size, seed, determinism and label smoothing; `resolved` gives the other fields."""
        fields = dict(image_size=cfg.model.image_size, seed=cfg.train.seed, deterministic=cfg.train.deterministic,
                      label_smoothing=cfg.loss.label_smoothing)
        return cls(batch_size=batch_size, **{**fields, **resolved})

    @classmethod
    def from_plan(cls, cfg, plan, training: bool, start_epoch: int = 0, skip_steps: int = 0) -> "Feed":
        """A run's feed (`plan`: vit_ms.plan.RunPlan): this rank's shard; training takes the plan's batch and
        accumulation, the train.steps_per_epoch cap and the resume position, evaluation the eval batch."""
        if not training:
            return cls.of(cfg, plan.eval_batch_size, num_shards=plan.world_size, shard_id=plan.rank,
                          image_size=plan.arch.image_size)
        return cls.of(cfg, plan.batch_size, num_shards=plan.world_size, shard_id=plan.rank,
                      accum_steps=plan.accum_steps, steps_per_epoch=cfg.train.steps_per_epoch,
                      start_epoch=start_epoch, skip_steps=skip_steps, image_size=plan.arch.image_size)


def _folder_reader(split_data: SplitData, sampler: EpochSampler, data, workers: int):
    """The folder mode's source: `reading.SampleReader` in `workers` Python threads."""
    reader = SampleReader(split_data.samples, split_data.fingerprints, data.on_bad_image, data.max_image_pixels)
    # `workers` reader threads: one thread hands rows over with less CPU, but several overlap the reads with the
    # hand-over (docs/performance.md, data pipeline).
    return ds.GeneratorDataset(reader, column_names=["image", "label"], sampler=sampler,
                               num_parallel_workers=workers, python_multiprocessing=False)


def _check_feed(split: str, feed: Feed) -> None:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if feed.batch_size <= 0:
        raise ValueError(f"batch_size={feed.batch_size} must be positive")
    if not 0 <= feed.shard_id < feed.num_shards:
        raise ValueError(f"shard_id={feed.shard_id} must be in [0, num_shards={feed.num_shards})")
    if feed.start_epoch < 0 or feed.skip_steps < 0 or feed.steps_per_epoch < 0:
        raise ValueError(f"start_epoch={feed.start_epoch}, skip_steps={feed.skip_steps} and steps_per_epoch="
                         f"{feed.steps_per_epoch} must be >= 0")


def _split_classes(data: DataConfig, split: str) -> List[str]:
    """The label list: the training split's classes, also for validation so that label numbers agree."""
    train_dir = Path(data.root) / data.train_split
    if split != "val" or not train_dir.is_dir():
        return []
    if data.format == "mindrecord":
        names = train_dir / "classes.txt"
        return read_class_names(names) if names.is_file() else []
    return list_classes(train_dir)


def create_dataset(data: DataConfig, split: str, feed: Feed, classes: Optional[Sequence[str]] = None,
                   classes_source: str = "") -> Tuple[ds.Dataset, DatasetInfo]:
    """Build the batched pipeline of one split for one shard; returns (dataset, DatasetInfo).

    split: "train" (data.train_split under data.root: random augmentation, shuffling when data.shuffle, equal
    shards, the last partial batch dropped, mixup) or "val" (data.val_split: fixed order, shard r reads samples
    r::num_shards with no padding, the last partial batch kept). `feed` says how the split is cut (`Feed`):
    feed.start_epoch / skip_steps resume in the middle of an epoch; feed.accum_steps > 1 (training) stacks that
    many batches into each step, images (k, B, 3, S, S) and labels (k, B[, classes]), and steps, skip_steps and
    steps_per_epoch count these stacks.
    classes: the label list a checkpoint recorded (`classes_source` names it); the split's folders are labelled
    by name against it and must all be in it (training: exactly it). None: the training split's folders.
    The run's setup calls `vit_ms.data.setup.prepare_data` once before (demo data, engine settings).
    """
    _check_feed(split, feed)
    training = split == "train"
    if not data.root:
        raise DataError("data.root is empty; set it to a folder laid out as <root>/train/<class>/*.jpg, e.g. "
                        "--set data.root=/data/imagenet (or write the demo set: python -m vit_ms.demo "
                        "--out data/digits)")
    folder = data.train_split if training else data.val_split
    if classes is None:
        classes, classes_source = _split_classes(data, split) or None, "the training split"
    if data.format == "mindrecord":
        split_data = open_split(Path(data.root), folder, classes, classes_source, exact=training)
    else:
        index = scan_split(Path(data.root), folder, data.on_bad_image, data.max_image_pixels, classes=classes,
                           classes_source=classes_source, exact_classes=training,
                           cache_dir=resolve_cache_dir(data.index_cache_dir), rescan=data.rescan)
        split_data = SplitData(str(index.root), index.classes, len(index.samples), index.bad, samples=index.samples,
                               fingerprints=index.fingerprints)
    if training and len(split_data.classes) < 2:
        raise DataError(f"'{split_data.where}' has only one class folder ('{split_data.classes[0]}'): a classifier "
                        f"needs at least 2 classes to train (with one, every prediction is right and the loss is 0 "
                        f"from the start). Add one sub-folder per class, e.g. {split_data.where}/<class>/*.jpg")
    f = feed
    total = split_data.num_samples
    shard_samples = total // f.num_shards if training else len(range(f.shard_id, total, f.num_shards))
    step_size = f.batch_size * f.accum_steps if training else f.batch_size  # images per optimizer step
    full_steps = shard_samples // step_size if training else math.ceil(shard_samples / f.batch_size)
    if full_steps == 0:
        raise DataError(f"'{split_data.where}' has {total} usable images, {shard_samples} for shard {f.shard_id} of "
                        f"{f.num_shards}: fewer than one batch of {step_size}; lower the batch size or add images")
    steps = min(full_steps, f.steps_per_epoch) if f.steps_per_epoch > 0 else full_steps
    if f.skip_steps >= steps:
        raise ValueError(f"skip_steps={f.skip_steps} must be less than the {steps} steps of an epoch; to resume at "
                         f"an epoch boundary pass start_epoch={f.start_epoch + 1}, skip_steps=0")

    # Threads, not processes: the C++ decode and ops release the GIL, and python_multiprocessing was slower in
    # measurements (docs/performance.md, data pipeline).
    workers = min(data.num_parallel_workers, os.cpu_count() or 1)  # MindSpore rejects more workers than CPUs
    if data.format == "mindrecord":
        dataset = mindrecord_dataset(split_data, training=training, shuffle=training and data.shuffle,
                                     seed=f.seed, num_shards=f.num_shards, shard_id=f.shard_id,
                                     per_shard=steps * step_size, workers=workers)
    else:
        sampler = EpochSampler(total, shuffle=training and data.shuffle, seed=f.seed, num_shards=f.num_shards,
                               shard_id=f.shard_id, equal_shards=training, start_epoch=f.start_epoch,
                               skip=f.skip_steps * step_size,
                               max_per_epoch=steps * step_size if f.steps_per_epoch else 0,
                               repeats=data.aug_repeats if training else 1)
        dataset = _folder_reader(split_data, sampler, data, workers)
    # train.deterministic: the crop and flip draw from each batch's generator too (SeededCrop), so a run resumed
    # in the middle of an epoch crops as one never stopped; MindSpore's random C++ ops draw from one stream each.
    # SeededCrop also crops for the filters MindSpore has no C++ twin of PIL's for (bilinear, nearest).
    python_crop = f.deterministic or not train_crop_in_cpp(data)
    seeded = SeededCrop(data, f.image_size) if training and python_crop else None
    if seeded is None:
        ops = (build_train_transforms if training else build_eval_transforms)(data, f.image_size, encoded=True)
        dataset = dataset.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    mixup = build_mixup(data, len(split_data.classes), f.label_smoothing) if training else None
    finish = BatchFinish(Normalizer(data.mean, data.std), augment=build_augment(data, f.image_size)
                         if training else None, re_prob=data.re_prob if training else 0.0, mixup=mixup,
                         re_mode=data.re_mode, re_count=data.re_count,
                         seed=(f.seed, f.shard_id), start_epoch=f.start_epoch,
                         skip_batches=f.skip_steps * f.accum_steps if training else 0,
                         epoch_base=0 if data.format == "mindrecord" and training else f.start_epoch, crop=seeded)
    # Each batch draws from its own generator (BatchFinish.rng), so several workers give the same batches.
    # RandAugment here, one call per batch, instead of a per-image Python map: 1.3x the images per CPU-second.
    dataset = dataset.batch(f.batch_size, drop_remainder=training, per_batch_map=finish,
                            input_columns=["image", "label"], num_parallel_workers=workers)
    if training and f.accum_steps > 1:  # (k, B, ...): the micro-batches of one optimizer step
        dataset = dataset.batch(f.accum_steps, drop_remainder=True)
    if data.format == "mindrecord" and training and (f.start_epoch or f.skip_steps):
        # MindDataset's order depends on (seed, epoch) only; MindSpore's own recovery fast-forwards the sampler
        # to this global step: epoch start_epoch, batch skip_steps (Model.train's iterator counts epochs from 0).
        dataset.set_init_step(f.start_epoch * steps + f.skip_steps)
    info = DatasetInfo(class_names=list(split_data.classes), num_samples=total, bad_files=list(split_data.bad),
                       steps_per_epoch=steps, shard_samples=shard_samples)
    return dataset, info
