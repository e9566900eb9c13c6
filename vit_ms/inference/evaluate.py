"""Scoring weights on a validation split: top-1, top-5, loss, image count and throughput.

    metrics = run_evaluation("runs/demo/best.ckpt", config_path=None, overrides=["data.root=/data/digits"])

Labels follow the class names the checkpoint recorded, matched by folder name: the same classes in another
folder order score correctly, and a folder the checkpoint does not know stops the run with its name.
"""
import json
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from ..data import create_dataset
from ..train.engine import mindspore_model
from ..train.trainer import check_num_classes, setup_logging
from .loader import load_for_inference

log = logging.getLogger("vit_ms")


def run_evaluation(weights: str, config_path: Optional[str] = None, overrides: Sequence[str] = (),
                   which: Optional[str] = None) -> dict:
    """Score `weights` (a checkpoint, or published weights) on cfg.data's validation split, all ranks' shards;
    `which`: a checkpoint's "raw" or "ema" weights (None: the ones it records as best)."""
    loaded = load_for_inference(weights, config_path, overrides, weights=which)
    source, cfg, plan = loaded.source, loaded.cfg, loaded.plan
    setup_logging(None, plan.rank)
    source_name = f"the checkpoint '{weights}' (its recorded class list)"
    val_ds, info = create_dataset(cfg, "val", False, batch_size=plan.eval_batch_size, num_shards=plan.world_size,
                                  shard_id=plan.rank, classes=source.class_names,
                                  classes_source=source_name if source.class_names else "")
    label_dir = Path(cfg.data.root) / (cfg.data.val_split if source.class_names else cfg.data.train_split)
    check_num_classes(plan.arch.num_classes, info.class_names, label_dir)
    start = time.time()
    metrics = mindspore_model(None, loaded.network, plan.world_size).eval(val_ds, dataset_sink_mode=False)["cls"]
    metrics["images_per_sec"] = round(metrics["num_images"] / max(time.time() - start, 1e-9), 2)
    log.info("evaluated %s on %d images: %s", weights, metrics["num_images"], json.dumps(metrics))
    return metrics
