"""An ImageNet-style folder converted to MindRecord, MindSpore's sharded record format, and read back.

    convert_folder(Path("/data/imagenet"), Path("/data/imagenet_mr"))   # {split: its progress.json}

The command is `python -m vit_ms.mindrecord` (vit_ms/mindrecord.py).

Layout written (one folder per split, named as the split folders are):

    <out>/<split>/classes.txt             one class name a line (val: the train split's list, as the folder mode)
    <out>/<split>/<split>-00000.mindrecord (+ .db index)   samples [0, S), then [S, 2S), ... in scan order
    <out>/<split>/progress.json           the source's fingerprint, shards done so far with their sizes (written
                                          after each shard: the run is resumable)
    <out>/<split>/bad_files.txt           files left out, "<path>\t<reason>" (scan and read failures)

Each record: `image` (bytes: the JPEG file itself; other formats decoded by PIL and stored as BMP, see
vit_ms.data.decode), `label` (int32) and `path` (the source file, relative to the split folder). A second
run with the same --out skips the shards already written, but only for the same source: progress.json records a
fingerprint of the split (class names, and each file's relative path, size and mtime), and a conversion of any
other folder, or of a changed one, into that --out is refused rather than mixed in. Reading checks that each
shard and its .db index are there with the recorded sizes (vit_ms.data.mindrecord_source). `data.format: mindrecord` with `data.root: <out>` trains and evaluates from it
(vit_ms.data.mindrecord_source): MindDataset sharded by rank, shuffled every epoch from train.seed, the same
transforms as the folder mode, and resumed mid-epoch at the recorded step.
"""
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from mindspore.mindrecord import FileWriter

from ..config import DataConfig
from ..errors import DataError
from ..fs import write_text_atomic
from .decode import Fingerprint, read_encoded
from .folder import list_classes, scan_split
from .images import BadImage
from .mindrecord_source import read_progress

VERSION = 2  # 2: the source's fingerprint and the shard sizes are recorded
SCHEMA = {"image": {"type": "bytes"}, "label": {"type": "int32"}, "path": {"type": "string"}}
MIN_PAGE, MAX_PAGE = 1 << 15, 1 << 26  # MindRecord pages: 32 KiB (its minimum) to 64 MiB (the largest record)
MIN_HEADER = 1 << 14  # 16 KiB, MindRecord's minimum; its default is 16 MiB, written in full into every shard


def shard_name(split: str, shard: int) -> str:
    return f"{split}-{shard:05d}.mindrecord"


def _read_one(path: str, max_pixels: int, fingerprint: Fingerprint) -> Tuple[Optional[bytes], Optional[str]]:
    """A file's bytes as stored (checked again when they differ from what the scan saw), or why it is left out."""
    try:
        return read_encoded(path, max_pixels, fingerprint).tobytes(), None
    except BadImage as err:
        return None, str(err)


def source_fingerprint(index) -> str:
    """sha256 of what a conversion is made of: the class names and each file's relative path, size and mtime
    (usable ones, with their labels, and the ones left out). Another folder or a changed file gives another."""
    digest = hashlib.sha256(json.dumps(index.classes).encode("utf-8"))
    start = len(str(index.root)) + 1
    for (path, label), (size, mtime, _) in zip(index.samples, index.fingerprints.tolist()):
        digest.update(f"\n{path[start:]}\t{label}\t{size}\t{mtime}".encode("utf-8", "surrogateescape"))
    for path, _ in index.bad:
        digest.update(f"\n{path[start:]}\tleft out".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def page_and_header_size(rows: List[dict]) -> Tuple[int, int]:
    """(page, header) bytes for a shard of `rows`: a page holds the largest record and is no larger than the shard
    needs (the next power of two above the shard's bytes, within [MIN_PAGE, MAX_PAGE]), and the header holds one
    entry (< 512 bytes) per page; so a small shard takes about its images' size on disk, not 16 MiB of header and
    two 64 MiB pages."""
    needed = sum(len(row["image"]) + len(row["path"]) + 64 for row in rows)
    page = min(MAX_PAGE, max(MIN_PAGE, 1 << max(needed, 1).bit_length()))
    pages = 2 * (needed // page + 2)  # raw and blob pages
    return page, max(MIN_HEADER, 1 << (4096 + 512 * pages).bit_length())


def _write_shard(file: Path, rows: List[dict]) -> None:
    for stale in (file, Path(f"{file}.db")):  # a shard interrupted before its commit
        if stale.exists():
            stale.unlink()
    writer = FileWriter(str(file), shard_num=1, overwrite=True)
    page, header = page_and_header_size(rows)
    writer.set_page_size(page)
    writer.set_header_size(header)
    writer.add_schema(SCHEMA, "vit_ms image folder")
    writer.write_raw_data(rows)
    writer.commit()


class _Progress:
    """One status line on stderr, rewritten at most every `interval` seconds."""

    def __init__(self, label: str, total: int, show: bool, interval: float = 2.0):
        self.label, self.total, self.show, self.interval = label, total, show, interval
        self.start, self.last = time.time(), 0.0

    def update(self, done: int, shard: int, shards: int, new: int, force: bool = False) -> None:
        now = time.time()
        if not self.show or (not force and now - self.last < self.interval):
            return
        self.last = now
        rate = new / max(now - self.start, 1e-9)
        left = (self.total - done) / rate if rate > 0 else float("inf")
        eta = f"{left / 60:.1f} min left" if left != float("inf") else "-"
        sys.stderr.write(f"\r{self.label}: {done}/{self.total} images, shard {shard + 1}/{shards}, "
                         f"{rate:.0f} images/s, {eta}   ")
        sys.stderr.flush()


def convert_split(root: Path, split: str, out: Path, classes: Optional[List[str]] = None,
                  samples_per_shard: int = 10000, max_pixels: int = DataConfig.max_image_pixels,
                  num_threads: int = 8, show_progress: bool = True, cache_dir: Optional[Path] = None) -> dict:
    """Convert `<root>/<split>` into `<out>/<split>/`; returns the finished progress record."""
    if samples_per_shard < 1:
        raise DataError(f"--samples-per-shard={samples_per_shard} must be at least 1")
    index = scan_split(root, split, "skip", max_pixels, classes=classes, cache_dir=cache_dir)
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    num_shards = -(-len(index.samples) // samples_per_shard)
    expected = {"version": VERSION, "num_samples": len(index.samples), "samples_per_shard": samples_per_shard,
                "classes": index.classes, "source": source_fingerprint(index)}
    progress_file = folder / "progress.json"
    progress = read_progress(progress_file) if progress_file.exists() else None
    if progress is not None and {k: progress.get(k) for k in expected} != expected:
        raise DataError(f"'{folder}' holds a conversion of other data than '{index.root}' now is: it was made from "
                        f"'{progress.get('split_dir')}' ({progress.get('num_samples')} images, "
                        f"{len(progress.get('classes') or [])} classes, {progress.get('samples_per_shard')} a shard), "
                        f"and this conversion's files, classes or --samples-per-shard differ (a folder is recognised "
                        f"by its class names and each file's path, size and mtime). Shards of both would be mixed: "
                        f"remove '{folder}' or choose another --out")
    progress = progress or dict(expected, split_dir=str(index.root), shards={},
                                scan_bad=[[p, r] for p, r in index.bad], complete=False)
    write_text_atomic(folder / "classes.txt", "".join(f"{name}\n" for name in index.classes))
    bar = _Progress(f"{split}", len(index.samples), show_progress)
    done = sum(s["count"] + len(s["left_out"]) for s in progress["shards"].values())
    new = 0
    split_dir = str(index.root)
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        for shard in range(num_shards):
            if str(shard) in progress["shards"] and (folder / shard_name(split, shard)).exists():
                continue
            first = shard * samples_per_shard
            samples = index.samples[first:first + samples_per_shard]
            prints = [Fingerprint(*(int(v) for v in row)) for row in index.fingerprints[first:first + len(samples)]]
            rows, left_out = [], []
            for (path, label), (data, reason) in zip(samples, pool.map(lambda s, f: _read_one(s[0], max_pixels, f),
                                                                         samples, prints)):
                if data is None:
                    left_out.append([path, reason])
                else:
                    rows.append({"image": data, "label": int(label), "path": os.path.relpath(path, split_dir)})
                done, new = done + 1, new + 1
                bar.update(done, shard, num_shards, new)
            file = folder / shard_name(split, shard)
            _write_shard(file, rows)
            progress["shards"][str(shard)] = {"file": file.name, "count": len(rows), "left_out": left_out,
                                              "bytes": file.stat().st_size,
                                              "db_bytes": Path(f"{file}.db").stat().st_size}
            write_text_atomic(progress_file, json.dumps(progress, indent=1))
    progress["complete"] = True
    write_text_atomic(progress_file, json.dumps(progress, indent=1))
    bad = progress["scan_bad"] + [entry for s in progress["shards"].values() for entry in s["left_out"]]
    write_text_atomic(folder / "bad_files.txt", "".join(f"{p}\t{r}\n" for p, r in bad))
    bar.update(done, num_shards - 1, num_shards, new, force=True)
    if show_progress:
        sys.stderr.write("\n")
    return progress


def convert_folder(root: Path, out: Path, splits: Sequence[str] = ("train", "val"), samples_per_shard: int = 10000,
                   max_pixels: int = DataConfig.max_image_pixels, show_progress: bool = True,
                   cache_dir: Optional[Path] = None) -> dict:
    """Convert each split; the first split's class list labels the others. Returns {split: progress}."""
    out.mkdir(parents=True, exist_ok=True)
    classes = list_classes(Path(root) / splits[0]) if (Path(root) / splits[0]).is_dir() else None
    return {split: convert_split(Path(root), split, out, classes if i else None, samples_per_shard, max_pixels,
                                 show_progress=show_progress, cache_dir=cache_dir)
            for i, split in enumerate(splits)}
