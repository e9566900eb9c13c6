"""Listing an ImageNet-style split folder: `<root>/<split>/<class>/**/<image>`, one sub-folder per class.

Classes are the sorted names of the split's sub-folders (hidden ones, starting with ".", are ignored); files
are found recursively under each class folder and sorted. Only files with an image extension (.jpg .jpeg
.png .bmp .gif .tif .tiff .webp, any case) are listed; other files are ignored and counted in a log line.
Every listed file gets the cheap `check_image` (header, size, end marker), never a full decode unless its
end looks wrong; nothing is cached, and nothing is written inside the dataset folder.
"""
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..config import DataConfig
from ..errors import DataError, suggest
from .images import IMAGE_EXTENSIONS, bad_image_error, check_image, is_image_file

logger = logging.getLogger("vit_ms")

LAYOUT_HINT = "<root>/{split}/<class>/*.jpg (one sub-folder per class, e.g. <root>/{split}/n01440764/x.JPEG)"
_SHOWN = 5  # how many example paths a warning or error lists


@dataclass
class SplitIndex:
    root: Path  # the split folder, <data.root>/<split>
    classes: List[str]  # label i is classes[i]
    samples: List[Tuple[str, int]] = field(default_factory=list)  # (path, label) of usable files, sorted
    bad: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason) of files left out


def list_classes(split_dir: Path) -> List[str]:
    """Sorted class folder names of a split (no file is opened)."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _list_files(class_dir: Path) -> Tuple[List[str], int]:
    """Sorted image paths under one class folder (recursive), and the number of other files ignored."""
    images, ignored = [], 0
    for folder, dirs, names in os.walk(class_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if is_image_file(name):
                images.append(os.path.join(folder, name))
            elif not name.startswith("."):
                ignored += 1
    return images, ignored


def _check_class(class_dir: Path, max_pixels: int) -> Tuple[List[Tuple[str, Optional[str]]], int]:
    paths, ignored = _list_files(class_dir)
    return [(p, check_image(p, max_pixels)) for p in paths], ignored


def _find_split(root: Path, split: str) -> Path:
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root '{root}' is a file, not a folder; set data.root to the dataset folder laid out "
                        f"as {LAYOUT_HINT.format(split=split)} (for an archive, extract it first)")
    if not root.is_dir():
        raise DataError(f"dataset folder '{root}' does not exist (data.root); expected the layout "
                        f"{LAYOUT_HINT.format(split=split)}. Point data.root at your dataset, e.g. --set "
                        f"data.root=/data/imagenet; for the offline digits demo write it with python -m "
                        f"vit_ms.data.demo --out {root}, or let the run write it with --set data.generate=digits")
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


def check_utf8_names(split_dir: Path, found: Sequence[str]) -> None:
    """Refuse class folder names that are not valid UTF-8 (on Linux, undecodable bytes arrive as surrogates).

    Class names are written to checkpoints and classes.txt as UTF-8 and compared by name across machines, so a
    name that cannot be written as UTF-8 stops the run here, with the folder named, rather than after training.
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
               exact_classes: bool = False, num_threads: int = 8) -> SplitIndex:
    """List and check the images of `<root>/<split>`.

    `classes`: the label list to use (the training split's, so validation labels match, or a checkpoint's);
    the split's folders must be among them, all of them with `exact_classes`, else DataError naming the first
    class that differs and `classes_source`. Folders are labelled by name, so another order maps correctly.
    `on_bad_image`: "skip" leaves unusable files out and lists them in
    `SplitIndex.bad`; "error" raises DataError for the first one (in sorted order). Raises DataError for a
    missing folder, a split with no class folders, or a split whose image files are all unusable.
    Class folders are checked in parallel threads (`num_threads`), which helps most on network storage.
    """
    if on_bad_image not in ("skip", "error"):
        raise ValueError(f"on_bad_image must be 'skip' or 'error', got {on_bad_image!r}")
    split_dir = _find_split(Path(root), split)
    found = list_classes(split_dir)
    if not found:
        raise DataError(f"split folder '{split_dir}' has no class folders; expected the layout "
                        f"{LAYOUT_HINT.format(split=split)}")
    check_utf8_names(split_dir, found)
    labels = list(classes) if classes is not None else found
    check_classes(split_dir, found, labels, classes_source, exact=exact_classes)
    label_of = {name: i for i, name in enumerate(labels)}
    index = SplitIndex(root=split_dir, classes=labels)
    empty, ignored = [], 0
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        results = pool.map(lambda name: _check_class(split_dir / name, max_pixels), found)
        for name, (checked, n_ignored) in zip(found, results):
            ignored += n_ignored
            for path, reason in checked:
                if reason is None:
                    index.samples.append((path, label_of[name]))
                elif on_bad_image == "error":
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise bad_image_error(path, reason)
                else:
                    index.bad.append((path, reason))
            if not any(reason is None for _, reason in checked):
                empty.append(name)
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
    """One class name a line (blank lines ignored), as the trainer writes `<run_dir>/classes.txt`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read class names from '{path}' ({getattr(err, 'strerror', None) or err}); "
                        f"expected a UTF-8 text file with one class name a line") from err
    return [line.strip() for line in text.splitlines() if line.strip()]
