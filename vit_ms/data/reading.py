"""Reading one sample for the pipeline: bytes the C++ decoder can take, or a replacement, never a short epoch.

`SampleReader` serves both folder readers:

- the Python reader (`GeneratorDataset` over it): index -> the file's bytes, read in a worker thread;
- MindSpore's C++ reader (`native_source`): ManifestDataset reads the bytes, and `SampleReader.check_row` runs
  as a map op on (bytes, sample index) before the decode op.

Either way the bytes are compared with the fingerprint the folder scan recorded (`decode.matches`: a CRC-32,
0.03 ms for 100 KB). Bytes the scan did not see (the file was changed or replaced since) are decoded by PIL
before the C++ decoder may see them (`decode.encoded_for_cpp`): a damaged JPEG can kill the process in that
decoder with a signal. A file that is unusable now is replaced by the next usable sample and named in a warning
(data.on_bad_image=skip), or stops the run naming it (error), so every epoch has its planned number of steps.
"""
import logging
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError
from .decode import Fingerprint, encoded_for_cpp, read_encoded
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
        return self._first_usable(int(index), None)

    def check_row(self, data: np.ndarray, index: np.ndarray):
        """Map op of the C++ reader: (file bytes (N,) uint8, sample index) -> (bytes for the decoder, label)."""
        return self._first_usable(int(index), data.tobytes())

    def _first_usable(self, index: int, data: Optional[bytes]):
        """Sample `index` (its bytes `data` when already read), or the next usable sample in its place."""
        for offset in range(MAX_REPLACEMENTS):
            position = (index + offset) % len(self.samples)
            path, label = self.samples[position]
            try:
                if offset == 0 and data is not None:
                    encoded = encoded_for_cpp(data, self.max_pixels, self.fingerprint(position))
                else:
                    encoded = read_encoded(path, self.max_pixels, self.fingerprint(position))
                return encoded, np.int32(label)
            except BadImage as err:
                if self.on_bad_image == "error":
                    raise bad_image_error(path, f"{err} (it changed after the split was scanned)") from err
                logger.warning("image file '%s' is unusable (%s; it changed after the split was scanned); using the "
                               "next sample in its place", path, err)
        raise DataError(f"{MAX_REPLACEMENTS} consecutive images from '{self.samples[index][0]}' on could not be "
                        f"decoded; check the dataset files")
