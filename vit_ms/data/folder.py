"""Listing an ImageNet-style split folder: `<root>/<split>/<class>/**/<image>`, one sub-folder per class.

Classes are the sorted names of the split's sub-folders (hidden ones, starting with ".", are ignored); files
are found recursively under each class folder and sorted. Only files with an image extension (.jpg .jpeg
.png .bmp .gif .tif .tiff .webp, any case) are listed; other files are ignored and counted in a log line.
Every listed file is read once and decoded in full (`decode.check_file`: a damaged JPEG must never reach
MindSpore's C++ decoder, which can die on it with a signal), fingerprinted, and marked when that decoder cannot
read it as it is. The files are checked in parallel threads (PIL decodes without holding the GIL). The result is
kept in an index cache outside the dataset (`index_cache`), so later starts only stat the folders; nothing is
written inside the dataset folder.
"""
import json
import logging
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..config import DataConfig
from ..errors import DataError, suggest
from .decode import check_file
from .images import IMAGE_EXTENSIONS, bad_image_error, is_image_file
from .index_cache import ClassScan, load_index, save_index

logger = logging.getLogger("vit_ms")

LAYOUT_HINT = "<root>/{split}/<class>/*.jpg (one sub-folder per class, e.g. <root>/{split}/n01440764/x.JPEG)"
_SHOWN = 5  # how many example paths a warning or error lists
_CHUNK = 64  # files a scan thread checks per task
SCAN_THREADS = max(8, os.cpu_count() or 1)  # every core decodes; at least 8 reads in flight on network storage


@dataclass
class SplitIndex:
    root: Path  # the split folder, <data.root>/<split>
    classes: List[str]  # label i is classes[i]
    samples: List[Tuple[str, int]] = field(default_factory=list)  # (path, label) of usable files, sorted
    bad: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason) of files left out
    pil: Set[str] = field(default_factory=set)  # paths of samples MindSpore's C++ decoder cannot read as they are
    fingerprints: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # (N, 3): size, mtime_ns,
    # crc32 of samples[i] when scanned (decode.Fingerprint)


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether an entry is a folder, following links; False for a broken link, a link loop or an unreadable one."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def list_classes(split_dir: Path) -> List[str]:
    """Sorted class folder names of a split (no file is opened); DataError when the folder cannot be listed."""
    try:
        return sorted(e.name for e in os.scandir(split_dir) if _is_dir(e) and not e.name.startswith("."))
    except OSError as err:
        raise DataError(f"cannot list the folder '{split_dir}' ({err.strerror or err}); check that it exists and "
                        f"that this user may read it (e.g. ls -ld '{split_dir}')") from err


def _walk(folder: str, rel: str, scan: ClassScan, paths: List[str], seen: Set[Tuple[int, int]]) -> None:
    """Append the image files under `folder` (sorted, files before sub-folders, as os.walk top-down) to `paths`
    and record every folder's mtime in `scan.dirs` (taken before listing, so a later change is seen). A folder
    that cannot be listed, or vanishes meanwhile, is left out with a warning; a folder reached again through a
    link (`seen`: (device, inode) of the folders walked) is skipped, so a link loop lists nothing twice."""
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            logger.warning("'%s' is a folder already listed (a link loop or a second link to it); skipped", folder)
            return
        seen.add((info.st_dev, info.st_ino))
        scan.dirs[rel] = info.st_mtime_ns
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:  # unreadable folder: nothing listed from it (os.walk skipped these silently)
        logger.warning("cannot list '%s' (%s); its files are left out", folder, err.strerror or err)
        return
    folders = {e.name for e in entries if _is_dir(e)}  # follows links, as before
    for entry in entries:
        if entry.name in folders:
            continue
        if is_image_file(entry.name):
            paths.append(os.path.join(folder, entry.name))
        elif not entry.name.startswith("."):
            scan.ignored += 1
    for entry in entries:
        if entry.name in folders and not entry.name.startswith("."):
            _walk(os.path.join(folder, entry.name), os.path.join(rel, entry.name) if rel else entry.name, scan,
                  paths, seen)


def _list_class(class_dir: Path) -> Tuple[ClassScan, List[str]]:
    """List one class folder (recursive): its scan without verdicts yet, and the image files' full paths."""
    scan, paths = ClassScan(dirs={}, files=[], bad={}, ignored=0), []
    _walk(str(class_dir), "", scan, paths, set())
    start = len(str(class_dir)) + 1
    scan.files = [p[start:] for p in paths]
    return scan, paths


def _scan_classes(split_dir: Path, names: Sequence[str], max_pixels: int, num_threads: int) -> Dict[str, ClassScan]:
    """List the class folders `names` and check every image file in them, all in `num_threads` threads."""
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        listed = list(pool.map(lambda name: _list_class(split_dir / name), names))
        paths = [path for _, class_paths in listed for path in class_paths]
        chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
        checks = (check for chunk in pool.map(lambda chunk: [check_file(p, max_pixels) for p in chunk], chunks)
                  for check in chunk)
    scans = {}
    for name, (scan, _) in zip(names, listed):
        for rel in scan.files:
            check = next(checks)
            scan.prints.append(list(check.fingerprint))
            if check.reason is not None:
                scan.bad[rel] = check.reason
            elif not check.cpp:
                scan.pil.append(rel)
        scans[name] = scan
    return scans


def _find_split(root: Path, split: str) -> Path:
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root '{root}' is a file, not a folder; set data.root to the dataset folder laid out "
                        f"as {LAYOUT_HINT.format(split=split)} (for an archive, extract it first)")
    if not root.is_dir():
        raise DataError(f"dataset folder '{root}' does not exist (data.root); expected the layout "
                        f"{LAYOUT_HINT.format(split=split)}. Point data.root at your dataset, e.g. --set "
                        f"data.root=/data/imagenet; for the offline digits demo write it with python -m "
                        f"vit_ms.demo --out {root}, or let the run write it with --set data.generate=digits")
    split_dir = root / split
    if split_dir.exists() and not split_dir.is_dir():
        raise DataError(f"'{split_dir}' is a file, but the split must be a folder laid out as "
                        f"{LAYOUT_HINT.format(split=split)}; check data.root, data.train_split and data.val_split")
    if not split_dir.is_dir():
        present = ", ".join(sorted(list_classes(root))) or "nothing"
        raise DataError(f"split folder '{split_dir}' does not exist (found {present} in '{root}'); expected the "
                        f"layout {LAYOUT_HINT.format(split=split)}; check data.root, data.train_split and "
                        f"data.val_split")
    return split_dir


def check_class_names(split_dir: Path, found: Sequence[str]) -> None:
    """Refuse class folder names that cannot be written and read back unchanged: not valid UTF-8 (on Linux,
    undecodable bytes arrive as surrogates), or holding a line break or other control character, or blank.

    Class names are written to checkpoints and to classes.txt (one a line, UTF-8) and compared by name across
    machines, so such a name stops the run here, with the folder named, rather than labelling images wrongly later.
    """
    for name in found:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(name)
            shown = raw.decode("utf-8", "backslashreplace")
            raise DataError(f"class folder '{shown}' in '{split_dir}' has a name that is not valid UTF-8 (bytes "
                            f"{raw!r}); class names are recorded as UTF-8 text in checkpoints and classes.txt. "
                            f"Rename the folder to a UTF-8 name, e.g. convmv -f latin1 -t utf8 --notest -r "
                            f"'{split_dir}' (if the names are Latin-1), or mv it to an ASCII name") from None
        control = [c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
        if control or not name.strip():
            what = f"a control character ({control[0]!r})" if control else "only blanks"
            raise DataError(f"class folder {name!r} in '{split_dir}' has a name with {what}; class names are "
                            f"written one a line to classes.txt and read back by name, so this one would not come "
                            f"back the same (a line break splits it in two, which labels images wrongly). Rename "
                            f"the folder, e.g. mv {json.dumps(os.path.join(str(split_dir), name))} "
                            f"'{split_dir}/<new name>'")


def check_classes(split_dir: Path, found: Sequence[str], labels: Sequence[str], source: str, exact: bool) -> None:
    """The split's class folders `found` must be among `labels` (all of them when `exact`); DataError naming the
    first class that differs and the fix otherwise."""
    unknown = [name for name in found if name not in set(labels)]
    missing = [name for name in labels if name not in set(found)] if exact else []
    if not unknown and not missing:
        return
    if unknown:
        absent = [name for name in labels if name not in set(found)]  # a renamed folder's old name is among these
        what = (f"class folder '{unknown[0]}' of '{split_dir}' is not among the {len(labels)} classes of {source}"
                + (f" ({len(unknown)} such folders)" if len(unknown) > 1 else "") + suggest(unknown[0], absent))
    else:
        what = (f"'{split_dir}' has no folder for class '{missing[0]}' of {source}"
                + (f" ({len(missing)} classes missing)" if len(missing) > 1 else ""))
    end = "" if what.endswith("?") else "."
    raise DataError(f"{what}{end} Labels are class indices, so scoring or training on other class names would give "
                    f"wrong numbers silently. Rename the folder back, or use the dataset the weights were trained "
                    f"on (the recorded classes are in the run's classes.txt)")


def scan_split(root: Path, split: str, on_bad_image: str = "skip", max_pixels: int = DataConfig.max_image_pixels, *,
               classes: Optional[Sequence[str]] = None, classes_source: str = "the training split",
               exact_classes: bool = False, num_threads: int = SCAN_THREADS, cache_dir: Optional[Path] = None,
               rescan: bool = False) -> SplitIndex:
    """List and check the images of `<root>/<split>`.

    `classes`: the label list to use (the training split's, so validation labels match, or a checkpoint's);
    the split's folders must be among them, all of them with `exact_classes`, else DataError naming the first
    class that differs and `classes_source`. Folders are labelled by name, so another order maps correctly.
    `on_bad_image`: "skip" leaves unusable files out and lists them in `SplitIndex.bad`; "error" raises
    DataError for the first one (in sorted order). Raises DataError for a missing folder, a split with no class
    folders, or a split whose image files are all unusable.
    `cache_dir`: reuse and update the index cache there (vit_ms.data.index_cache): unchanged class folders are
    not checked again; `rescan` checks every folder anyway. None: no cache.
    Folders are listed and files checked in `num_threads` parallel threads.
    """
    if on_bad_image not in ("skip", "error"):
        raise ValueError(f"on_bad_image must be 'skip' or 'error', got {on_bad_image!r}")
    try:
        split_dir = _find_split(Path(root), split)
    except OSError as err:  # a parent folder this user may not enter, a link loop in data.root ...
        raise DataError(f"cannot look into data.root '{root}' ({err.strerror or err}: '{err.filename}'); check "
                        f"that the path exists and that this user may read it") from err
    found = list_classes(split_dir)
    if not found:
        raise DataError(f"split folder '{split_dir}' has no class folders; expected the layout "
                        f"{LAYOUT_HINT.format(split=split)}")
    check_class_names(split_dir, found)
    labels = list(classes) if classes is not None else found
    check_classes(split_dir, found, labels, classes_source, exact=exact_classes)
    cached = load_index(cache_dir, split_dir, max_pixels) if cache_dir is not None and not rescan else {}
    current = {name for name in found if name in cached and cached[name].is_current(split_dir / name)}
    stale = [name for name in found if name not in current]
    fresh = _scan_classes(split_dir, stale, max_pixels, num_threads) if stale else {}
    scans = {name: cached[name] if name in current else fresh[name] for name in found}
    if cache_dir is not None and (stale or set(cached) != set(found)):
        written = save_index(cache_dir, split_dir, max_pixels, scans)
        logger.info("index of '%s': %d class folders checked, %d reused; saved to '%s'", split_dir, len(stale),
                    len(current), written)
    elif cache_dir is not None:
        logger.info("index of '%s': all %d class folders unchanged, reused from the index cache", split_dir,
                    len(found))
    return _build_index(split_dir, labels, scans, on_bad_image)


def _build_index(split_dir: Path, labels: List[str], scans: Dict[str, ClassScan], on_bad_image: str) -> SplitIndex:
    """Samples and bad files in sorted class / file order, labelled by class name; warnings as _report says."""
    label_of = {name: i for i, name in enumerate(labels)}
    index = SplitIndex(root=split_dir, classes=labels)
    empty, ignored, prints = [], 0, []
    for name, scan in scans.items():
        prefix = os.path.join(split_dir, name, "")  # "<split_dir>/<name>/": paths as os.path.join gives them
        ignored += scan.ignored
        label = label_of[name]
        if scan.bad and on_bad_image == "error":
            first = next(rel for rel in scan.files if rel in scan.bad)
            raise bad_image_error(prefix + first, scan.bad[first])
        index.samples.extend((prefix + rel, label) for rel in scan.files if rel not in scan.bad)
        prints.extend(fp for rel, fp in zip(scan.files, scan.prints) if rel not in scan.bad)
        index.bad.extend((prefix + rel, scan.bad[rel]) for rel in scan.files if rel in scan.bad)
        index.pil.update(prefix + rel for rel in scan.pil)
        if len(scan.bad) == len(scan.files):
            empty.append(name)
    index.fingerprints = np.array(prints, dtype=np.int64).reshape(-1, 3)  # (N, 3)
    _report(split_dir, index, empty, ignored)
    return index


def _report(split_dir: Path, index: SplitIndex, empty: List[str], ignored: int) -> None:
    if not index.samples:
        first = f" (first: {index.bad[0][0]}: {index.bad[0][1]})" if index.bad else ""
        raise DataError(f"no usable images under '{split_dir}': {len(index.bad)} unusable files{first}; "
                        f"expected image files ({' '.join(IMAGE_EXTENSIONS)}) in the layout "
                        f"{LAYOUT_HINT.format(split=split_dir.name)}")
    if index.bad:
        shown = "; ".join(f"{p}: {r}" for p, r in index.bad[:_SHOWN])
        logger.warning("skipped %d unusable image files under '%s' (data.on_bad_image=skip): %s%s",
                       len(index.bad), split_dir, shown, " ..." if len(index.bad) > _SHOWN else "")
    if empty:
        logger.warning("%d class folders under '%s' have no usable images (kept as classes so label numbers "
                       "stay the same): %s%s", len(empty), split_dir, ", ".join(empty[:_SHOWN]),
                       " ..." if len(empty) > _SHOWN else "")
    if ignored:
        logger.info("ignored %d files without an image extension under '%s'", ignored, split_dir)


def read_class_names(path: os.PathLike) -> List[str]:
    """One class name a line (blank lines ignored), as the trainer writes `<run_dir>/classes.txt`. Spaces around a
    name are part of it (a folder may end in one); a Windows line end is not."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read class names from '{path}' ({getattr(err, 'strerror', None) or err}); "
                        f"expected a UTF-8 text file with one class name a line") from err
    return [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
