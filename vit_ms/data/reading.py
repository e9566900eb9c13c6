"""Reading one sample for the pipeline: bytes the C++ decoder can take, or a replacement, never a short epoch.

`SampleReader` is the folder format's source: `GeneratorDataset` over it reads index -> the file's bytes in
worker threads (the C++ decode op after it releases the GIL). The bytes are compared with the fingerprint the
folder scan recorded (`decode.matches`: a CRC-32, 0.03 ms for 100 KB). Bytes the scan did not see (the file was
changed or replaced since) are decoded by PIL before the C++ decoder may see them (`decode.encoded_for_cpp`): a
damaged JPEG can kill the process in that decoder with a signal. A file that is unusable or gone now is replaced
by the next usable sample and named in a warning (data.on_bad_image=skip), or stops the run naming it (error),
so every epoch has its planned number of steps.
"""
import logging
import re
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError
from .decode import Fingerprint, read_encoded
from .images import BadImage, bad_image_error

logger = logging.getLogger("vit_ms")

MAX_REPLACEMENTS = 16  # consecutive unusable files tolerated before giving up


class SampleReader:
    """Random access over a scanned split: index -> (encoded image (N,) uint8, label int32), see above.

    samples: (path, label) in scan order; fingerprints: (N, 3) int64 rows of decode.Fingerprint, or None (no
    scan record: every file is verified as it is read).
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], fingerprints: Optional[np.ndarray], on_bad_image: str,
                 max_pixels: int):
        self.samples = list(samples)
        self.fingerprints = fingerprints
        self.on_bad_image = on_bad_image
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def fingerprint(self, index: int) -> Optional[Fingerprint]:
        return None if self.fingerprints is None else Fingerprint(*(int(v) for v in self.fingerprints[index]))

    def __getitem__(self, index: int):
        """Sample `index`: (encoded image (N,) uint8, label int32), or the next usable sample in its place."""
        index = int(index)
        for offset in range(MAX_REPLACEMENTS):
            position = (index + offset) % len(self.samples)
            path, label = self.samples[position]
            try:
                return read_encoded(path, self.max_pixels, self.fingerprint(position)), np.int32(label)
            except BadImage as err:
                if self.on_bad_image == "error":
                    raise bad_image_error(path, f"{err} (it changed after the split was scanned)") from err
                logger.warning("image file '%s' is unusable (%s; it changed after the split was scanned); using the "
                               "next sample in its place", path, err)
        raise DataError(f"{MAX_REPLACEMENTS} consecutive images from '{self.samples[index][0]}' on could not be "
                        f"decoded; check the dataset files")


# The reader's own message (images.bad_image_error, data.on_bad_image=error), as MindSpore passes it on
_UNUSABLE = re.compile(r"(image file '.+?' is unusable: .+?\. Remove or replace the file, or set "
                       r"data\.on_bad_image=skip to leave such files out)")


def reader_error(err: RuntimeError) -> Optional[DataError]:
    """The DataError to show for a pipeline failure over an unusable file with data.on_bad_image=error (MindSpore
    wraps the reader's message in its own traceback); None for any other failure."""
    unusable = _UNUSABLE.search(str(err))
    return None if unusable is None else DataError(unusable.group(1))
