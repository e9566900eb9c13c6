"""Per-class results from a confusion matrix: top-1 per class, the class each is most confused with, the CSV.

    results = per_class_results(confusion, class_names)      # confusion: (C, C) int, row = true, col = predicted
    write_per_class_csv(out_dir / "per_class.csv", results)
    for r in worst_classes(results, 5): print(describe(r))

Columns of per_class.csv: class, images, top1 (fraction; empty for a class without validation images),
most_confused_with (the class its images are most often predicted as, other than itself; empty when none).
"""
import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..errors import UserError
from ..fs import atomic_writer, prove_writable

CSV_COLUMNS = ("class", "images", "top1", "most_confused_with")


@dataclass(frozen=True)
class ClassResult:
    name: str
    images: int  # validation images of this class
    top1: float  # fraction predicted right; nan without images
    confused_with: str  # most frequent wrong prediction; "" when never wrong
    confused_images: int  # how many of its images went there


def per_class_results(confusion: np.ndarray, class_names: Sequence[str]) -> List[ClassResult]:
    confusion = np.asarray(confusion)
    if confusion.shape != (len(class_names),) * 2:
        raise ValueError(f"confusion matrix {confusion.shape} does not fit {len(class_names)} class names")
    results = []
    for i, name in enumerate(class_names):
        row = confusion[i]  # (C,) predictions for images of class i
        images = int(row.sum())
        wrong = row.copy()
        wrong[i] = 0
        j = int(wrong.argmax())
        results.append(ClassResult(name, images, float(row[i] / images) if images else math.nan,
                                   class_names[j] if wrong[j] > 0 else "", int(wrong[j])))
    return results


def worst_classes(results: Sequence[ClassResult], k: int = 5) -> List[ClassResult]:
    """The `k` classes with the lowest top-1 (ties: more images first), classes without images left out."""
    scored = [r for r in results if r.images > 0]
    return sorted(scored, key=lambda r: (r.top1, -r.images, r.name))[:k]


def describe(result: ClassResult) -> str:
    text = f"{result.name}: top-1 {result.top1 * 100:.1f}% of {result.images}"
    if result.confused_with:
        text += f", most confused with {result.confused_with} ({result.confused_images})"
    return text


def write_per_class_csv(path: os.PathLike, results: Sequence[ClassResult]) -> None:
    with atomic_writer(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in results:
            writer.writerow([r.name, r.images, "" if math.isnan(r.top1) else f"{r.top1:.6f}", r.confused_with])


def eval_output_dir(weights: str, out: Optional[str] = None) -> Path:
    """`out` when given; else `eval/<name>` beside a weights file (runs/x/eval/best for runs/x/best.ckpt),
    or under the current folder for published weights named or fetched by URL. Created, and proved writable."""
    name = re.sub(r"[^\w.-]+", "_", Path(weights).stem or weights)
    if not name.strip("."):  # "...ckpt" has the stem "..": eval/.. would be the run directory itself
        name = Path(weights).name.replace(".", "_")
    if out:
        folder = Path(out)
    elif Path(weights).is_file():
        folder = Path(weights).parent / "eval" / name
    else:
        folder = Path("eval") / name
    try:
        prove_writable(folder)
    except OSError as err:
        raise UserError(f"cannot write the per-class results to '{folder}' ({err.strerror}); pass a writable "
                        f"folder with --out DIR") from err
    return folder
