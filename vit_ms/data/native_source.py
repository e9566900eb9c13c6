"""Reading a folder split's files in MindSpore's C++ reader (`data.reader: native`) instead of Python threads.

The scan's sample list becomes a MindSpore manifest (one JSON line per sample: its path, and its sample index as
the "label") read by `ManifestDataset` with our `EpochSampler`, so order, sharding, resume and repeated
augmentation stay as in the Python reader, while the file reads leave the GIL (the Python reader's rows cost more
CPU than the C++ decode of a photo-sized JPEG; docs/performance.md, data pipeline). A map op (`SampleReader.check_row`)
turns the index into the label and compares the bytes with the scan's fingerprint before the C++ decode op.

Each iterator's start opens every listed file's header (ManifestDataset checks the image type): 2.3 s per
100,000 files on a local disk; on network storage MindRecord is the better format.

Files MindSpore's C++ decoder cannot read as they are (`SplitIndex.pil`: PNG, CMYK JPEG ...) are decoded once
by PIL and read from lossless BMP copies, when they are few (ImageNet's training split has 23); with more, this
reader is not used (`native_dataset` returns None and says why).

A file changed after the scan (its folder's mtime may not change: the index cache may still hold it):
- before the reader starts, every file is stat'ed; one whose size or mtime differ from the scan's is checked
  again, and one that is unusable or gone now is read as the next usable sample (named in a warning), because
  ManifestDataset would silently drop a file that no longer looks like an image (an epoch one step short) or
  stop on an empty one;
- while it runs, `SampleReader.check_row` sees bytes that differ from the scan's, decodes them with PIL first
  and replaces them by the next usable sample if they no longer decode (data.on_bad_image=skip; error stops
  the run naming the file). A file removed while it runs stops the run with an error naming it
  (`removed_file_error`; `--resume auto` goes on, and replaces it). The Python reader replaces both as it meets
  them.
"""
import atexit
import json
import logging
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Dict, List, Sequence, Set

import mindspore.dataset as ds
import numpy as np

from ..errors import DataError
from .decode import check_file, rgb_to_bmp
from .images import BadImage, decode_image
from .reading import SampleReader

logger = logging.getLogger("vit_ms")

MAX_PIL_FRACTION = 0.01  # at most this share of a split is copied to BMP (and at least MIN_PIL_COPIES files)
MIN_PIL_COPIES = 64


def _work_dir() -> Path:
    """A folder for this process's manifests and BMP copies, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="vit_ms_reader_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _bmp_copies(paths: Sequence[str], max_pixels: int, folder: Path) -> dict:
    """path -> BMP copy of its RGB pixels (as the Python reader decodes it); unreadable files are left out."""
    copies = {}
    for n, path in enumerate(sorted(paths)):
        try:
            data = rgb_to_bmp(decode_image(path, max_pixels))
        except BadImage as err:
            logger.warning("PIL cannot decode image file '%s' any more (%s); the reader replaces it with the next "
                           "usable sample (data.on_bad_image=skip)", path, err)
            continue
        copy = folder / f"{n}.bmp"
        copy.write_bytes(data)
        copies[path] = str(copy)
    return copies


def write_manifest(sources: Sequence[str], names: Sequence[int], out: Path) -> Path:
    """One JSON line per sample, in sample order: {"source": file, "usage": "train", "annotation":
    [{"type": "modelarts/image_classification", "name": "<names[i]>"}]}."""
    with open(out, "w", encoding="utf-8") as f:
        for source, name in zip(sources, names):
            f.write(f'{{"source": {json.dumps(source)}, "usage": "train", "annotation": '
                    f'[{{"type": "modelarts/image_classification", "name": "{int(name)}"}}]}}\n')
    return out


def _changed_since_scan(reader: SampleReader) -> Dict[int, str]:
    """{sample index: why unusable} of the files that changed since the scan and are unusable now; a changed file
    that is still usable gets its new fingerprint. One stat per file."""
    unusable = {}
    for i, (path, _) in enumerate(reader.samples):
        size, mtime = reader.fingerprints[i, :2]
        try:
            info = os.stat(path)
            if info.st_size == size and info.st_mtime_ns == mtime:
                continue
        except OSError:
            pass
        check = check_file(path, reader.max_pixels)
        if check.reason is None:
            reader.fingerprints[i] = check.fingerprint
        else:
            unusable[i] = check.reason
    return unusable


def _stand_ins(reader: SampleReader, unusable: Dict[int, str]) -> List[int]:
    """For each sample, the sample read in its place: itself, or for an unusable one the next usable sample."""
    count = len(reader.samples)
    if len(unusable) == count:
        raise DataError(f"none of the {count} images scanned is usable any more (first: "
                        f"{reader.samples[0][0]}: {unusable[0]}); scan the split again with --set data.rescan=true")
    names = list(range(count))
    for i, reason in sorted(unusable.items()):
        if reader.on_bad_image == "error":
            raise DataError(f"image file '{reader.samples[i][0]}' changed after the split was scanned and is unusable "
                            f"now: {reason}. Restore or remove the file, or set data.on_bad_image=skip to read the next "
                            f"sample in its place")
        names[i] = next(j % count for j in range(i + 1, i + count) if j % count not in unusable)
        logger.warning("image file '%s' changed after the split was scanned and is unusable now (%s); reading '%s' "
                       "in its place", reader.samples[i][0], reason, reader.samples[names[i]][0])
    return names


def native_dataset(reader: SampleReader, pil: Set[str], sampler: ds.Sampler, workers: int, forced: bool = False):
    """ManifestDataset of (encoded image (N,) uint8, label int32) over `reader.samples` in `sampler` order, or None
    when too many files need PIL (see the module docstring) unless `forced` (data.reader=native)."""
    samples = reader.samples
    limit = max(MIN_PIL_COPIES, int(MAX_PIL_FRACTION * len(samples)))
    if len(pil) > limit and not forced:
        logger.info("data.reader=auto: %d of %d images need PIL to decode (e.g. '%s': not a baseline/progressive "
                    "8-bit RGB or grey JPEG), more than the %d the C++ reader copies; reading with Python threads. "
                    "For speed convert them to JPEG, or the split to MindRecord (python -m vit_ms.mindrecord)",
                    len(pil), len(samples), min(pil), limit)
        return None
    reader.fingerprints = np.array(reader.fingerprints, dtype=np.int64)  # updated below: this reader's own copy
    names = _stand_ins(reader, _changed_since_scan(reader))
    folder = _work_dir()
    copies = _bmp_copies(pil, reader.max_pixels, folder)
    if copies:
        logger.info("decoded %d images the C++ decoder cannot read (e.g. '%s') into BMP copies in '%s'",
                    len(copies), min(copies), folder)
    for i, (path, _) in enumerate(samples):
        if path in copies:  # the copy's bytes are the ones the reader sees
            data = Path(copies[path]).read_bytes()
            reader.fingerprints[i] = (len(data), 0, zlib.crc32(data))
    sources = [copies.get(samples[name][0], samples[name][0]) for name in names]
    manifest = write_manifest(sources, names, folder / "manifest.json")
    dataset = ds.ManifestDataset(str(manifest), usage="train", sampler=sampler, decode=False,
                                 class_indexing={str(i): i for i in range(len(samples))},
                                 num_parallel_workers=workers)
    return dataset.map(operations=reader.check_row, input_columns=["image", "label"], num_parallel_workers=workers)


_REMOVED = re.compile(r"Invalid file path, (.+?) does not exist")  # ManifestDataset's message for a missing file
# The reader's own message (images.bad_image_error, data.on_bad_image=error), as MindSpore passes it on
_UNUSABLE = re.compile(r"(image file '.+?' is unusable: .+?\. Remove or replace the file, or set "
                       r"data\.on_bad_image=skip to leave such files out)")


def removed_file_error(err: RuntimeError):
    """The DataError to show for a pipeline failure over a file removed after the scan, or over an unusable one
    with data.on_bad_image=error (either reader); None for any other failure."""
    unusable = _UNUSABLE.search(str(err))
    if unusable is not None:
        return DataError(unusable.group(1))
    found = _REMOVED.search(str(err))
    if found is None:
        return None
    return DataError(f"image file '{found.group(1)}' was removed after the reader started, and MindSpore's C++ "
                     f"reader cannot go on without it. Restore the file, or start again with --resume auto (the "
                     f"reader then reads the next sample in its place); data.reader=python replaces such files as "
                     f"it meets them")
