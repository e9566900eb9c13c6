"""ImageNet-style data: folder scan with bad-image handling, transforms, resumable sharded pipeline.

    prepare_data(cfg.data, cfg.train.seed, cfg.train.deterministic)     # vit_ms.data.setup: once, in the run's setup
    dataset, info = create_dataset(cfg.data, "train", Feed.of(cfg, 128, start_epoch=3, skip_steps=40))

Modules: `images` (decode one file, check one file), `folder` (list and check a split), `index_cache` (the scan
kept between starts), `decode` (what the C++ decoder gets; PIL fallback), `transforms` (per-image train / eval
ops), `augment` (timm's RandAugment), `batch_ops` (normalise, random erasing, mixup per batch), `sampler` (epoch
order from (seed, epoch), sharding, resume), `reading` (a file's bytes, or a replacement, in Python threads),
`mindrecord` (folder -> MindRecord converter), `mindrecord_source` (data.format: mindrecord), `pipeline`
(create_dataset, Feed), `setup` (prepare_data: what a run sets once; not loaded by this package), `demo` (the
offline digits and synthetic datasets; the command is python -m vit_ms.demo).
"""
from .folder import SplitIndex, scan_split
from .images import IMAGE_EXTENSIONS, load_image_rgb
from .pipeline import DatasetInfo, Feed, create_dataset
from .sampler import EpochSampler
from .batch_ops import build_mixup
from .transforms import build_augment, build_eval_transforms, build_train_transforms, preprocess_eval

__all__ = ["IMAGE_EXTENSIONS", "DatasetInfo", "EpochSampler", "Feed", "SplitIndex", "build_augment",
           "build_eval_transforms", "build_mixup", "build_train_transforms", "create_dataset", "load_image_rgb",
           "preprocess_eval", "scan_split"]
