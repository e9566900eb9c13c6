"""Reading a MindRecord conversion (vit_ms.data.mindrecord) as the source of the pipeline: `data.format: mindrecord`.

`open_split` checks the conversion (finished; every shard and its .db index present with the sizes recorded when
it was written, so a truncated, replaced or missing file is named before MindDataset meets it) and its classes
(matched by name against a checkpoint's list, as the folder mode does); `mindrecord_dataset` reads it with
MindDataset:

- training: DistributedSampler over this rank's shard, shuffled every epoch from train.seed (the order depends
  on (seed, epoch) only, so a resumed run sees the same epochs), `per_shard` samples an epoch (equal shards,
  capped by train.steps_per_epoch); create_dataset moves it to the resume step with MindSpore's own
  `set_init_step`.
- evaluation: shard r reads samples r, r + num_shards, ... in recorded order (no padding, as the folder mode).

Rows: `image` (encoded bytes, decoded by the same C++ ops as the folder mode) and `label` int32.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import mindspore.dataset as ds
import numpy as np

from ..errors import DataError
from .folder import check_classes


@dataclass
class SplitData:
    """What create_dataset needs from either source."""
    where: str  # the split folder, for messages
    classes: List[str]  # label i is classes[i]
    num_samples: int
    bad: List[Tuple[str, str]]  # (path, reason) left out
    samples: List[Tuple[str, int]] = field(default_factory=list)  # folder mode: (path, label)
    fingerprints: Optional[np.ndarray] = None  # folder mode: (N, 3) what the scan saw of each sample
    files: List[str] = field(default_factory=list)  # MindRecord mode: shard files in order
    label_table: Optional[np.ndarray] = None  # MindRecord mode: recorded label -> label in `classes`


def read_progress(path: Path) -> dict:
    """progress.json, or DataError naming it when it cannot be read as the converter writes it."""
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(progress, dict) or not isinstance(progress.get("shards"), dict):
            raise ValueError("not a conversion record")
        return progress
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the MindRecord conversion record '{path}' ({err}); it is written by "
                        f"python -m vit_ms.mindrecord: remove the folder '{path.parent}' and convert again"
                        ) from err


def _progress(folder: Path, root: Path) -> dict:
    progress_file = folder / "progress.json"
    hint = f"convert the image folder first: python -m vit_ms.mindrecord --root <image folder> --out {root}"
    if not progress_file.is_file():
        raise DataError(f"'{folder}' is not a MindRecord conversion (no progress.json) but data.format=mindrecord; "
                        f"{hint} (or set data.format=folder)")
    progress = read_progress(progress_file)
    if not progress.get("complete"):
        raise DataError(f"the MindRecord conversion in '{folder}' is not finished ({len(progress['shards'])} "
                        f"shards written); run the same converter command again to finish it")
    return progress


def _check_shard(folder: Path, shard: dict) -> str:
    """The shard's file, checked against the sizes recorded when it was written; DataError naming the file."""
    file = folder / shard["file"]
    rerun = (f"rewrite it with the converter (python -m vit_ms.mindrecord with the same --root and --out, "
             f"after removing '{folder / 'progress.json'}')")
    for path, key, what in ((file, "bytes", "shard"), (Path(f"{file}.db"), "db_bytes", "shard's index")):
        try:
            size = path.stat().st_size
        except OSError as err:
            raise DataError(f"MindRecord {what} '{path}' is missing or unreadable ({err.strerror}); {rerun}") from err
        if key in shard and size != shard[key]:
            raise DataError(f"MindRecord {what} '{path}' has {size} bytes but {shard[key]} were written: it is "
                            f"truncated, damaged or from another conversion; {rerun}")
    return str(file)


def open_split(root: Path, split: str, classes: Optional[Sequence[str]], classes_source: str,
               exact: bool) -> SplitData:
    """The finished conversion `<root>/<split>`; labels follow `classes` by name when given (see check_classes)."""
    folder = Path(root) / split
    progress = _progress(folder, Path(root))
    shards = [progress["shards"][k] for k in sorted(progress["shards"], key=int)]
    files = [_check_shard(folder, shard) for shard in shards]
    recorded = list(progress["classes"])  # as JSON: exactly the folder names (classes.txt is for people)
    labels = list(classes) if classes is not None else recorded
    table = None
    if labels != recorded:
        check_classes(folder, recorded, labels, classes_source, exact=exact)
        position = {name: i for i, name in enumerate(labels)}
        table = np.array([position[name] for name in recorded], dtype=np.int32)  # (len(recorded),)
    bad = [tuple(e) for e in progress["scan_bad"]] + [tuple(e) for s in shards for e in s["left_out"]]
    return SplitData(str(folder), labels, sum(s["count"] for s in shards), bad, files=files, label_table=table)


def mindrecord_dataset(split: SplitData, *, training: bool, shuffle: bool, seed: int, num_shards: int,
                       shard_id: int, per_shard: int, workers: int):
    """MindDataset of (image bytes (N,) uint8, label int32) for one shard; see the module docstring."""
    if training:
        sampler = ds.DistributedSampler(num_shards, shard_id, shuffle=shuffle, num_samples=per_shard)
        sampler.seed = seed  # MindDataset reshuffles every epoch from this seed (not the process-wide one)
    else:
        sampler = ds.SubsetSampler(list(range(shard_id, split.num_samples, num_shards)))
    dataset = ds.MindDataset(split.files, columns_list=["image", "label"], sampler=sampler,
                             num_parallel_workers=workers)
    if split.label_table is not None:
        table = split.label_table
        dataset = dataset.map(operations=lambda label: table[label], input_columns="label", num_parallel_workers=1)
    return dataset
