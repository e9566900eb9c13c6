"""Which decoder reads a file: MindSpore's C++ ops for ordinary JPEGs, PIL for everything else.

The pipeline's source yields encoded bytes, and its first map op decodes them in C++: `RandomCropDecodeResize`
when training (a JPEG is decoded only inside the random crop), `Decode` for evaluation. That op cannot
skip a sample, so the source hands it only bytes it reads:

- An ordinary JPEG (8-bit baseline / extended / progressive, 1 or 3 components, end marker present): the
  file's bytes as they are. MindSpore's libjpeg-turbo and PIL's decode such files to the same pixels.
- Anything else (PNG, GIF, WebP, BMP, TIFF, CMYK or 12-bit JPEG, a JPEG missing its end marker ...):
  decoded by PIL exactly as before (`images.decode_image`: every mode converted to RGB, bad files raise
  BadImage), then handed on as an uncompressed 24-bit BMP, which the C++ decoder reads back losslessly.

So every file PIL accepted is still accepted with the same RGB pixels, and a file PIL rejects raises
BadImage in the source, where the pipeline replaces and reports it.
"""
import io
import os
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

from .images import BadImage, decode_image

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_TAIL_BYTES = 1024  # as images.check_image: where a complete JPEG's end marker must be
_HEAD_BYTES = 1 << 17  # a JPEG's frame header follows its APPn segments (at most 64 KiB each, EXIF usually one)
_CPP_SOF = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive (Huffman)
# Markers without a length field (RST0-7, TEM); every other marker before SOF is followed by a 2-byte length.
_STANDALONE = set(range(0xD0, 0xD8)) | {0x01}


class JpegFrame(NamedTuple):
    marker: int  # SOFn marker byte, 0xC0..0xCF
    precision: int  # bits per sample
    height: int
    width: int
    components: int


def jpeg_frame(data: bytes) -> Optional[JpegFrame]:
    """The frame header (SOFn) of a JPEG, read by walking the marker segments; None if `data` is not a JPEG
    whose header can be walked up to its frame header."""
    if not data.startswith(_SOI):
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            if length < 8 or pos + 10 > end:
                return None
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return JpegFrame(marker, data[pos + 4], height, width, data[pos + 9])
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or start of scan before any frame header
            return None
        pos += 2 + length
    return None


def cpp_frame(data: bytes) -> Optional[JpegFrame]:
    """The frame header of an ordinary JPEG, which MindSpore's C++ decoder reads with the same result as PIL;
    None for anything else."""
    frame = jpeg_frame(data)
    ordinary = (frame is not None and frame.marker in _CPP_SOF and frame.precision == 8
                and frame.components in (1, 3) and frame.height > 0 and frame.width > 0
                and data.rfind(_EOI, max(0, len(data) - _TAIL_BYTES)) >= 0)
    return frame if ordinary else None


def cpp_readable_file(path: str) -> bool:
    """Whether the C++ decoder reads the file `path` as is (`cpp_frame` of its head and tail); False for anything
    else, also when it cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
            if len(head) == _HEAD_BYTES:
                f.seek(max(_HEAD_BYTES, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
                head += f.read()
    except OSError:
        return False
    return cpp_frame(head) is not None


def rgb_to_bmp(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> an uncompressed 24-bit BMP file's bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "BMP")
    return buf.getvalue()


def read_encoded(path: str, max_pixels: int) -> np.ndarray:
    """The bytes the pipeline's C++ decode op gets for `path`: (N,) uint8. Raises BadImage (as decode_image)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise BadImage(f"cannot be read ({type(err).__name__}: {err})") from err
    if not data:
        raise BadImage("zero bytes (empty file)")
    frame = cpp_frame(data)
    if frame is not None:
        if frame.width * frame.height > max_pixels:
            raise BadImage(f"{frame.width}x{frame.height} = {frame.width * frame.height} pixels is over "
                           f"data.max_image_pixels={max_pixels} (decompression-bomb guard; raise the limit if the "
                           f"image is genuine)")
        return np.frombuffer(data, dtype=np.uint8)
    return np.frombuffer(rgb_to_bmp(decode_image(path, max_pixels)), dtype=np.uint8)
