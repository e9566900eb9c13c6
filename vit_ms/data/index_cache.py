"""The folder scan's result kept on disk, so that later starts and every resume skip re-checking every file.

One JSON file per split folder, in `data.index_cache_dir` (default `~/.cache/vit_ms/index`), named by a hash
of the split folder's absolute path. It holds, per class folder, the modification time of that folder and of
every sub-folder under it, the files found (relative paths) with the scan's verdict (None, or why a file is
unusable), each file's fingerprint (`prints`: size, mtime in ns, CRC-32 of its bytes; see vit_ms.data.decode),
the usable files MindSpore's C++ decoder cannot read as they are (`pil`: PNG, CMYK JPEG, ...) and the count of
ignored non-image files:

    {"version": 3, "split_dir": "/data/imagenet/train", "max_pixels": 178956970,
     "classes": {"n01440764": {"dirs": {"": 1712345678901234567}, "files": ["a.JPEG", ...],
                               "prints": [[110592, 1712345678901234567, 2857362364], ...],
                               "bad": {"b.JPEG": "zero bytes (empty file)"}, "pil": ["c.JPEG"], "ignored": 0},
                 ...}}

Adding, removing or renaming a file changes the mtime of the folder holding it, so a class whose recorded
folders all keep their mtimes is reused as it is and any other class is scanned again (only that class).
A file overwritten in place under the same name keeps its folder's mtime; the readers see it by its fingerprint
and check it again when they read it (`data.rescan: true` checks every file again at the next start). Writes go to a temporary file renamed into place, so a reader
never sees half a file and concurrent writers (ranks starting together) leave one complete file.
"""
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

logger = logging.getLogger("vit_ms")

VERSION = 3  # bump when the scan's verdicts or the file layout change: older files are then ignored
OFF = "off"  # data.index_cache_dir value that disables the cache


@dataclass
class ClassScan:
    """One class folder's scan: what the cache stores, and what is checked before it is reused."""
    dirs: Dict[str, int]  # folder relative to the class folder ("" for itself) -> st_mtime_ns
    files: List[str]  # image paths relative to the class folder, sorted as the scan lists them
    bad: Dict[str, str]  # those of `files` that are unusable -> why
    ignored: int  # files without an image extension
    pil: List[str] = field(default_factory=list)  # usable `files` only PIL decodes (vit_ms.data.decode)
    prints: List[List[int]] = field(default_factory=list)  # per file of `files`: [size, mtime_ns, crc32]

    def is_current(self, class_dir: Path) -> bool:
        """True when every recorded folder still exists with the recorded mtime (one stat per folder)."""
        for rel, mtime in self.dirs.items():
            try:
                if os.stat(os.path.join(class_dir, rel) if rel else class_dir).st_mtime_ns != mtime:
                    return False
            except OSError:
                return False
        return True


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "vit_ms" / "index"


def resolve_cache_dir(setting: str) -> Optional[Path]:
    """data.index_cache_dir -> the folder to use: "" the default, "off" none (always scan)."""
    if setting == OFF:
        return None
    return Path(setting).expanduser() if setting else default_cache_dir()


def cache_file(cache_dir: Path, split_dir: Path) -> Path:
    absolute = os.path.abspath(split_dir)
    digest = hashlib.sha1(absolute.encode("utf-8")).hexdigest()[:20]
    return Path(cache_dir) / f"{Path(absolute).name}-{digest}.json"


def load_index(cache_dir: Path, split_dir: Path, max_pixels: int) -> Dict[str, ClassScan]:
    """The recorded class scans of `split_dir`, or {} when there is no usable file (missing, unreadable, another
    version, another split folder or another max_pixels)."""
    path = cache_file(cache_dir, split_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning("ignoring the unreadable index cache '%s' (%s); scanning the folder", path, err)
        return {}
    if (not isinstance(data, dict) or data.get("version") != VERSION
            or data.get("split_dir") != os.path.abspath(split_dir) or data.get("max_pixels") != max_pixels):
        return {}
    try:
        return {name: ClassScan(dirs={k: int(v) for k, v in entry["dirs"].items()},
                                files=[str(rel) for rel in entry["files"]],
                                bad={str(k): str(v) for k, v in entry["bad"].items()},
                                ignored=int(entry["ignored"]), pil=[str(rel) for rel in entry["pil"]],
                                prints=_prints(entry["prints"], len(entry["files"])))
                for name, entry in data["classes"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        logger.warning("ignoring the malformed index cache '%s' (%s: %s); scanning the folder", path,
                       type(err).__name__, err)
        return {}


def _prints(rows, count: int) -> List[List[int]]:
    prints = [[int(size), int(mtime), int(crc)] for size, mtime, crc in rows]
    if len(prints) != count:
        raise ValueError(f"{len(prints)} fingerprints for {count} files")
    return prints


def save_index(cache_dir: Path, split_dir: Path, max_pixels: int, classes: Dict[str, ClassScan]) -> Optional[Path]:
    """Write the class scans atomically; returns the file, or None (with a warning) when it cannot be written."""
    path = cache_file(cache_dir, split_dir)
    data = {"version": VERSION, "split_dir": os.path.abspath(split_dir), "max_pixels": max_pixels,
            "classes": {name: {"dirs": scan.dirs, "files": scan.files, "bad": scan.bad, "pil": scan.pil,
                                 "prints": scan.prints, "ignored": scan.ignored}
                        for name, scan in classes.items()}}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
        return path
    except OSError as err:
        logger.warning("could not write the index cache '%s' (%s); the next start scans '%s' again; set "
                       "data.index_cache_dir to a writable folder, or 'off'", path, err, split_dir)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return None
