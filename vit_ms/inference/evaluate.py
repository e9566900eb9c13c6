"""Scoring weights on a validation split: top-1, top-5, loss, image count and throughput.

    metrics = run_evaluation("runs/demo/best.ckpt", config_path=None, overrides=["data.root=/data/digits"])

Labels follow the class names the checkpoint recorded, matched by folder name: the same classes in another
folder order score correctly, and a folder the checkpoint does not know stops the run with its name.
"""
import json
import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..data import create_dataset
from ..errors import DataError
from ..train.engine import mindspore_model
from ..train.trainer import setup_logging
from .loader import load_for_inference

log = logging.getLogger("vit_ms")


def check_head_fits_classes(weights: str, head_classes: int, class_names: List[str], label_dir: Path,
                            recorded: bool) -> None:
    """The weights' head must have one output per label; DataError describing the real mismatch otherwise.

    The head's size is fixed by the weights (loaded strictly), so the fix is never another model.num_classes.
    """
    if head_classes == len(class_names):
        return
    labels = (f"the {len(class_names)} class names it records" if recorded else
              f"the {len(class_names)} class folders of '{label_dir}' (it records no class names to match by)")
    raise DataError(f"'{weights}' has a {head_classes}-class head but its labels would come from {labels}, so "
                    f"class numbers cannot be matched: these weights were trained on other classes. Evaluate them "
                    f"on the dataset they were trained on (data.root), or fine-tune them on this one first: "
                    f"python train.py --config <yaml> --set model.pretrained={weights} --set model.num_classes="
                    f"{len(class_names)}")


def run_evaluation(weights: str, config_path: Optional[str] = None, overrides: Sequence[str] = ()) -> dict:
    """Score `weights` (a checkpoint, or published weights) on cfg.data's validation split, all ranks' shards."""
    loaded = load_for_inference(weights, config_path, overrides)
    source, cfg, plan = loaded.source, loaded.cfg, loaded.plan
    setup_logging(None, plan.rank)
    source_name = f"the checkpoint '{weights}' (its recorded class list)"
    val_ds, info = create_dataset(cfg, "val", False, batch_size=plan.eval_batch_size, num_shards=plan.world_size,
                                  shard_id=plan.rank, classes=source.class_names,
                                  classes_source=source_name if source.class_names else "")
    label_dir = Path(cfg.data.root) / (cfg.data.val_split if source.class_names else cfg.data.train_split)
    check_head_fits_classes(weights, plan.arch.num_classes, info.class_names, label_dir, bool(source.class_names))
    start = time.time()
    metrics = mindspore_model(None, loaded.network, plan.world_size).eval(val_ds, dataset_sink_mode=False)["cls"]
    metrics["images_per_sec"] = round(metrics["num_images"] / max(time.time() - start, 1e-9), 2)
    log.info("evaluated %s on %d images: %s", weights, metrics["num_images"], json.dumps(metrics))
    return metrics
