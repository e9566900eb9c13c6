"""Reading a folder split's files in MindSpore's C++ reader (`data.reader: native`) instead of Python threads.

The scan's sample list becomes a MindSpore manifest (one JSON line per sample: path and label) read by
`ManifestDataset` with our `EpochSampler`, so order, sharding, resume and repeated augmentation stay as in the
Python reader, while the file reads and the hand-over of every row leave the GIL (the Python reader's rows
cost more CPU than the C++ decode of a photo-sized JPEG; docs/performance.md, data pipeline).

Each iterator's start opens every listed file's header (ManifestDataset checks the image type): 2.3 s per
100,000 files on a local disk; on network storage MindRecord is the better format.

Files MindSpore's C++ decoder cannot read as they are (`SplitIndex.pil`: PNG, CMYK JPEG ...) are decoded once
by PIL and read from lossless BMP copies, when they are few (ImageNet's training split has 23); with more, this
reader is not used (`native_dataset` returns None and says why).

A file that turns out unreadable after the scan (changed or removed since; the next start re-scans its folder
when the folder changed, `data.rescan: true` always): with data.on_bad_image=skip a file that no longer decodes
is replaced by an earlier healthy sample, and MindSpore's warning names it ("Detected an erroneous sample ...
The corresponding data file is: ..."; its decoder also copies the file to ./abnormal_image.jpg); with error it
stops the run. A removed file stops the run with an error naming it (`removed_file_error`; `--resume auto` goes
on). The Python reader (`data.reader: python`) replaces both as they come.
"""
import atexit
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import List, Sequence, Set, Tuple

import mindspore.dataset as ds

from ..errors import DataError
from .decode import rgb_to_bmp
from .images import BadImage, decode_image

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
            logger.warning("PIL cannot decode image file '%s' (%s); left to MindSpore's decoder, which replaces it "
                           "with another sample if it fails too (data.on_bad_image=skip)", path, err)
            continue
        copy = folder / f"{n}.bmp"
        copy.write_bytes(data)
        copies[path] = str(copy)
    return copies


def write_manifest(samples: Sequence[Tuple[str, int]], sources: dict, out: Path) -> Path:
    """One JSON line per sample, in sample order: {"source": file, "usage": "train", "annotation":
    [{"type": "modelarts/image_classification", "name": "<label>"}]}; `sources` replaces some files."""
    with open(out, "w", encoding="utf-8") as f:
        for path, label in samples:
            f.write(f'{{"source": {json.dumps(sources.get(path, path))}, "usage": "train", "annotation": '
                    f'[{{"type": "modelarts/image_classification", "name": "{int(label)}"}}]}}\n')
    return out


def native_dataset(samples: List[Tuple[str, int]], pil: Set[str], num_classes: int, sampler: ds.Sampler,
                   workers: int, max_pixels: int, forced: bool = False):
    """ManifestDataset of (encoded image (N,) uint8, label int32) over `samples` in `sampler` order, or None when
    too many files need PIL (see the module docstring) unless `forced` (data.reader=native)."""
    limit = max(MIN_PIL_COPIES, int(MAX_PIL_FRACTION * len(samples)))
    if len(pil) > limit and not forced:
        logger.info("data.reader=auto: %d of %d images need PIL to decode (e.g. '%s': not a baseline/progressive "
                    "8-bit RGB or grey JPEG), more than the %d the C++ reader copies; reading with Python threads. "
                    "For speed convert them to JPEG, or the split to MindRecord (python -m vit_ms.data.mindrecord)",
                    len(pil), len(samples), min(pil), limit)
        return None
    folder = _work_dir()
    copies = _bmp_copies(pil, max_pixels, folder)
    if copies:
        logger.info("decoded %d images the C++ decoder cannot read (e.g. '%s') into BMP copies in '%s'",
                    len(copies), min(copies), folder)
    manifest = write_manifest(samples, copies, folder / "manifest.json")
    return ds.ManifestDataset(str(manifest), usage="train", sampler=sampler, decode=False,
                              class_indexing={str(i): i for i in range(num_classes)}, num_parallel_workers=workers)


_REMOVED = re.compile(r"Invalid file path, (.+?) does not exist")  # ManifestDataset's message for a missing file


def removed_file_error(err: RuntimeError):
    """The DataError to show for a pipeline failure over a file removed after the scan, or None for any other."""
    found = _REMOVED.search(str(err))
    if found is None:
        return None
    return DataError(f"image file '{found.group(1)}' was removed after the split was scanned, and MindSpore's C++ "
                     f"reader cannot go on without it. Restore the file, or start again with --resume auto (the "
                     f"changed folder is scanned again); data.reader=python replaces such files as it meets them")
