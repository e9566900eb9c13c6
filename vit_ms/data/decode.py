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

Bytes reach the C++ decoder only after PIL decoded them completely (`images.verify_image`): a damaged JPEG can
kill the process inside that decoder. The folder scan does this once per file (`check_file`) and records the
file's `Fingerprint`; reading a file later (`read_encoded`, `encoded_for_cpp`) trusts its bytes when they still
match the fingerprint (a CRC-32, 0.03 ms for 100 KB) and verifies them again when they do not.
"""
import io
import os
import zlib
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

from .images import BadImage, decode_image, verify_image

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_TAIL_BYTES = 1024  # where a complete JPEG's end marker must be
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


class Fingerprint(NamedTuple):
    """What the scan saw of a file: enough to tell, from its bytes alone, whether they are the bytes it checked."""
    size: int  # bytes
    mtime_ns: int
    crc: int  # zlib.crc32 of the whole file


class FileCheck(NamedTuple):
    reason: Optional[str]  # None: usable; else why not
    fingerprint: Fingerprint
    cpp: bool  # usable and read by the C++ decoder as it is (`cpp_frame`); False: decoded by PIL


def matches(fingerprint: Optional[Fingerprint], data: bytes) -> bool:
    """Whether `data` are the bytes `fingerprint` was taken of."""
    return fingerprint is not None and len(data) == fingerprint.size and zlib.crc32(data) == fingerprint.crc


def check_file(path: str, max_pixels: int) -> FileCheck:
    """The folder scan's check of one file: read it once, fingerprint it, decode all of it (`verify_image`)."""
    try:
        with open(path, "rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime_ns
            data = f.read()
    except OSError as err:  # vanished, permissions, a folder named like an image
        return FileCheck(f"cannot be read ({type(err).__name__}: {err.strerror or err})", Fingerprint(0, 0, 0),
                         False)
    fingerprint = Fingerprint(len(data), mtime, zlib.crc32(data))
    try:
        verify_image(data, max_pixels)
    except BadImage as err:
        return FileCheck(str(err), fingerprint, False)
    return FileCheck(None, fingerprint, cpp_frame(data) is not None)


def rgb_to_bmp(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> an uncompressed 24-bit BMP file's bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "BMP")
    return buf.getvalue()


def encoded_for_cpp(data: bytes, max_pixels: int, fingerprint: Optional[Fingerprint] = None) -> np.ndarray:
    """The bytes the pipeline's C++ decode op gets for a file's bytes `data`: (N,) uint8. Unless they match the
    scan's `fingerprint`, they are decoded by PIL first (`verify_image`). Raises BadImage."""
    if not data:
        raise BadImage("zero bytes (empty file)")
    frame = cpp_frame(data)
    if frame is not None and frame.width * frame.height > max_pixels:
        raise BadImage(f"{frame.width}x{frame.height} = {frame.width * frame.height} pixels is over "
                       f"data.max_image_pixels={max_pixels} (decompression-bomb guard; raise the limit if the "
                       f"image is genuine)")
    if frame is not None:
        if not matches(fingerprint, data):
            verify_image(data, max_pixels)
        return np.frombuffer(data, dtype=np.uint8)
    return np.frombuffer(rgb_to_bmp(decode_image(data, max_pixels)), dtype=np.uint8)


def read_encoded(path: str, max_pixels: int, fingerprint: Optional[Fingerprint] = None) -> np.ndarray:
    """`encoded_for_cpp` of the file `path`. Raises BadImage, also when the file cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise BadImage(f"cannot be read ({type(err).__name__}: {err.strerror or err})") from err
    return encoded_for_cpp(data, max_pixels, fingerprint)
