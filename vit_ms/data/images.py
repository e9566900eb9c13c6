"""Reading one image file: decode to (H, W, 3) uint8 RGB, or say exactly why the file is unusable.

- `load_image_rgb` / `decode_image` decode the whole file to RGB (the PIL path of the pipeline, `infer.py`).
- `verify_image` is the check every file gets before MindSpore's C++ decoder may see its bytes (the folder scan,
  a file changed since the scan): size, PIL header, pixel count, then every byte of the compressed data decoded.
  A damaged JPEG can kill the process inside that C++ decoder (SIGFPE, SIGSEGV: no exception to catch), so
  only bytes PIL decoded completely reach it. JPEGs are decoded in PIL's draft mode at 1/8 scale: libjpeg still
  parses every marker and entropy-decodes every block (where damage shows), but skips most of the inverse DCT,
  colour conversion and upsampling (docs/troubleshooting.md, Bad images: 2.7x the files per CPU-second).
"""
import io
import os
import struct
from typing import Union

import numpy as np
from PIL import Image

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# What Pillow raises for malformed files (its own fuzzing tests hit all of these). Anything else is a bug here
# and should propagate. UnidentifiedImageError and "image file is truncated" are OSErrors.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError,
               ZeroDivisionError, Image.DecompressionBombError)

_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class BadImage(Exception):
    """Internal: why one file cannot be used. Callers turn it into a DataError or a (path, reason) entry."""


class UnusableImage(DataError):
    """An image file that cannot be used, for a caller that stops on it (data.on_bad_image=error); `reason` alone
    is what a caller that skips the file reports, without the advice to skip it. Constructed from one message
    like every exception (MindSpore's dataset workers re-raise errors as `type(err)(message)`)."""
    path: str = ""
    reason: str = ""


def bad_image_error(path: str, reason: str) -> UnusableImage:
    err = UnusableImage(f"image file '{path}' is unusable: {reason}. Remove or replace the file, "
                        f"or set data.on_bad_image=skip to leave such files out")
    err.path, err.reason = path, reason
    return err


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _open(source: Union[str, bytes], max_pixels: int) -> Image.Image:
    """Open a path or a file's bytes lazily (header only) and check the pixel count; raises BadImage."""
    try:
        if (len(source) if isinstance(source, bytes) else os.path.getsize(source)) == 0:
            raise BadImage("zero bytes (empty file)")
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Image.DecompressionBombError as err:
        raise BadImage(f"larger than Pillow's decompression-bomb limit ({err})") from err
    except Image.UnidentifiedImageError as err:
        raise BadImage("not a readable image (Pillow cannot identify it: not an image, or a damaged "
                       "header)") from err
    except _PIL_ERRORS as err:  # also OSError of the path (vanished, permissions)
        raise BadImage(f"cannot be read ({type(err).__name__}: {err})") from err
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise BadImage(f"{width}x{height} = {width * height} pixels is over data.max_image_pixels={max_pixels} "
                       f"(decompression-bomb guard; raise the limit if the image is genuine)")
    return img


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Decoded PIL image of any mode -> (H, W, 3) uint8 RGB."""
    if img.mode in _SIXTEEN_BIT_GRAY:  # 16-bit grayscale (also "I"): keep the high byte; convert() would clip
        gray = (np.asarray(img).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)  # (H, W)
        return np.repeat(gray[:, :, None], 3, axis=2)  # (H, W, 3)
    if img.mode == "F":  # float images: assume the 0-255 range
        gray = np.asarray(img).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("P", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")  # palette / transparency goes through RGBA, as Pillow asks
    # RGBA, LA: alpha is dropped (as timm and torchvision do); CMYK, YCbCr, L, 1: converted by Pillow.
    return np.array(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3), a writable copy


def decode_image(source: Union[str, bytes], max_pixels: int) -> np.ndarray:
    """Open a path or a file's bytes, check and fully decode to (H, W, 3) uint8 RGB; raises BadImage."""
    with _open(source, max_pixels) as img:
        try:
            img.load()  # full decode; truncated data raises here
            return _to_rgb(img)
        except _PIL_ERRORS as err:
            raise BadImage(f"truncated or corrupt ({type(err).__name__}: {err})") from err


def load_image_rgb(path, max_pixels: int) -> np.ndarray:
    """Decode one file to an (H, W, 3) uint8 RGB array.

    Grayscale, RGBA (alpha dropped), CMYK, 16-bit, palette and other modes are converted. Raises DataError
    naming the file and why: zero bytes, not an image, truncated or corrupt, or more than `max_pixels` pixels
    (checked from the header before decoding, as a decompression-bomb guard).
    """
    try:
        return decode_image(str(path), max_pixels)
    except BadImage as err:
        raise bad_image_error(str(path), str(err)) from err


def verify_image(data: bytes, max_pixels: int) -> str:
    """Decode all of a file's bytes (JPEG: in draft mode, see the module docstring); returns PIL's format name
    ("JPEG", "PNG", ...). Raises BadImage for anything PIL cannot decode completely."""
    with _open(data, max_pixels) as img:
        try:
            if img.format == "JPEG":
                img.draft(None, (1, 1))  # smallest DCT scale (1/8); every block is still entropy-decoded
            img.load()
            return img.format
        except _PIL_ERRORS as err:
            raise BadImage(f"truncated or corrupt ({type(err).__name__}: {err})") from err


def decode_image_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an image held in memory (an upload, never written to disk) to (H, W, 3) uint8 RGB; raises BadImage
    with the reason, as for a file."""
    return decode_image(data, max_pixels)
