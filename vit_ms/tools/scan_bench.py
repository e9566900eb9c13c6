"""The folder scan's cost: the first, checked scan of a split and a later start on the unchanged split.

    python -m vit_ms.benchmark --scan --scan-files 100000 --scan-distinct 500 [--scan-dir <folder>] [--scan-keep]

Writes `--scan-distinct` photo-sized JPEGs (500x375, `data_bench.photo`, quality 90) once and hard-links them into a
split of `--scan-files` files (100 class folders), so the disk holds only the distinct ones: the page cache holds them
too, so this measures the scan's CPU cost, not the storage's read rate. Then, side by side, in one process:

- reference: the same JPEGs decoded in one thread by PIL in full (`Image.open().load()`, no draft mode), and by
  the scan's per-file check (`decode.check_file`: read, CRC-32, PIL draft-mode decode), files/s and files per
  CPU-second (what one busy core delivers; a machine shared with other work disturbs it less than wall time);
- the first scan (`scan_split` with an empty index cache, every file read and decoded, in `SCAN_THREADS`
  threads): files/s, files/s per core, files per CPU-second;
- a later start (`scan_split` again, every class folder unchanged): seconds, and its share of the first scan.
"""
import os
import resource
import shutil
import time
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image

from ..data.decode import check_file
from ..data.folder import SCAN_THREADS, scan_split
from .data_bench import photo

CLASSES = 100


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_split(work: Path, files: int, distinct: int) -> Path:
    """`<work>/data/train/class_XX/NNNNNN.jpg`: `files` hard links to `distinct` JPEGs in `<work>/distinct`."""
    source = work / "distinct"
    source.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    originals = []
    for i in range(distinct):
        path = source / f"{i:05d}.jpg"
        if not path.exists():
            Image.fromarray(photo(rng, 500, 375, i)).save(path, quality=90)
        originals.append(path)
    split = work / "data" / "train"
    for n in range(files):
        folder = split / f"class_{n % CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"{n:06d}.jpg"
        if not link.exists():
            os.link(originals[n % distinct], link)
    return split.parent


def _timed(fn) -> tuple:
    wall, cpu = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - wall, _cpu() - cpu


def scan_benchmark(work: Path, files: int, distinct: int, keep: bool = False) -> List[str]:
    """The report's lines: the reference decode rates, the first scan and a later start (see the module
    docstring), over a split of `files` links to `distinct` JPEGs in `work`, removed afterwards unless `keep`."""
    root = write_split(work, files, distinct)
    cores = len(os.sched_getaffinity(0))
    originals = sorted((work / "distinct").iterdir())
    _, full, full_cpu = _timed(lambda: [Image.open(p).load() for p in originals])
    _, checked, checked_cpu = _timed(lambda: [check_file(str(p), 10**9) for p in originals])
    size = sum(p.stat().st_size for p in originals) / len(originals) / 1e3
    lines = [f"reference, one thread, {len(originals)} JPEGs 500x375 ({size:.0f} KB "
             f"average): PIL full decode {len(originals) / full:.0f} files/s ({len(originals) / full_cpu:.0f} per "
             f"CPU-second); the scan's check (read, CRC-32, draft decode) {len(originals) / checked:.0f} files/s "
             f"({len(originals) / checked_cpu:.0f} per CPU-second)"]
    cache = work / "index"
    shutil.rmtree(cache, ignore_errors=True)
    index, wall, cpu = _timed(lambda: scan_split(root, "train", cache_dir=cache))
    n = len(index.samples)
    lines.append(f"first scan: {n} files in {wall:.1f} s with {SCAN_THREADS} threads on {cores} cores: "
                 f"{n / wall:.0f} files/s, {n / wall / cores:.0f} files/s per core, {n / cpu:.0f} files per CPU-second")
    _, later, _ = _timed(lambda: scan_split(root, "train", cache_dir=cache))
    lines.append(f"later start, split unchanged: {later:.2f} s = {100 * later / wall:.1f}% of the first scan")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return lines
