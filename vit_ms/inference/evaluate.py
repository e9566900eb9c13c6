"""Scoring weights on a validation split: top-1, top-5, loss, image count, throughput, and per class.

    report = run_evaluation("runs/demo/best.ckpt", config_path=None, overrides=["data.root=/data/digits"])
    report.metrics      # {"top1", "top5", "loss", "num_images", "images_per_sec"}
    report.per_class    # [ClassResult(name, images, top1, confused_with, ...)], from the all-ranks confusion matrix

Labels follow the class names the checkpoint recorded, matched by folder name: the same classes in another
folder order score correctly, and a folder the checkpoint does not know stops the run with its name.
The main rank writes `per_class.csv` and `confusion.png` into `eval/<checkpoint name>/` beside the checkpoint
(or `out`).
"""
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from ..data import Feed, create_dataset
from ..data.setup import prepare_data
from ..errors import DataError, UserError
from ..figures.confusion import plot_confusion
from ..loader.opener import open_model
from ..logs import setup_logging
from ..train.metrics import mindspore_model
from .per_class import ClassResult, eval_output_dir, per_class_results, write_per_class_csv

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


@dataclass
class EvalReport:
    metrics: dict  # top1, top5, loss, num_images, images_per_sec
    per_class: List[ClassResult]
    out_dir: Optional[Path]  # where per_class.csv / confusion.png went; None on ranks other than 0
    confusion_png: Optional[Path]  # None when it could not be drawn (the reason is logged)


def write_per_class_files(out_dir: Path, confusion, class_names, results, title: str) -> Optional[Path]:
    """per_class.csv always; confusion.png unless drawing fails (logged: the numbers are in the CSV)."""
    write_per_class_csv(out_dir / "per_class.csv", results)
    try:
        plot_confusion(confusion, class_names, out_dir / "confusion.png", title)
    except (UserError, OSError, ValueError, RuntimeError) as err:
        log.warning("confusion.png not written: %s", err)
        return None
    return out_dir / "confusion.png"


def run_evaluation(weights: str, config_path: Optional[str] = None, overrides: Sequence[str] = (),
                   out: Optional[str] = None, which: Optional[str] = None, *,
                   cache_dir: Optional[Path] = None) -> EvalReport:
    """Score `weights` (a checkpoint, or published weights downloaded into `cache_dir`) on cfg.data's validation
    split, all ranks' shards; `which`: a checkpoint's "raw" or "ema" weights (None: the ones it records as best)."""
    loaded = open_model(weights, cache_dir, config_path=config_path, overrides=overrides, weights=which)
    source, cfg, plan = loaded.source, loaded.cfg, loaded.plan
    setup_logging(None, plan.rank)
    out_dir = eval_output_dir(weights, out) if plan.is_main else None  # before the long part: fail early
    source_name = f"the checkpoint '{weights}' (its recorded class list)"
    prepare_data(cfg.data, cfg.train.seed, cfg.train.deterministic)
    val_ds, info = create_dataset(cfg.data, "val", Feed.from_plan(cfg, plan, training=False), source.class_names,
                                  source_name if source.class_names else "")
    label_dir = Path(cfg.data.root) / (cfg.data.val_split if source.class_names else cfg.data.train_split)
    check_head_fits_classes(weights, plan.arch.num_classes, info.class_names, label_dir, bool(source.class_names))
    start = time.time()
    model = mindspore_model(None, loaded.network, plan.world_size, num_classes=plan.arch.num_classes)
    metrics = model.eval(val_ds, dataset_sink_mode=False)["cls"]
    metrics["images_per_sec"] = round(metrics["num_images"] / max(time.time() - start, 1e-9), 2)
    confusion = metrics.pop("confusion")  # (C, C), all ranks
    log.info("evaluated %s on %d images: %s", weights, metrics["num_images"], json.dumps(metrics))
    results = per_class_results(confusion, info.class_names)
    png = None
    if out_dir is not None:
        png = write_per_class_files(out_dir, confusion, info.class_names, results,
                                    f"{Path(weights).name}: top-1 {metrics['top1'] * 100:.2f}% "
                                    f"({metrics['num_images']} images)")
    return EvalReport(metrics, results, out_dir, png)
