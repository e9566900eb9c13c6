"""Reading one image file: decode to (H, W, 3) uint8 RGB, or say exactly why the file is unusable.

Two levels of checking:
- `load_image_rgb` decodes the whole file (used by the pipeline and by `infer.py`).
- `check_image` is the cheap check the folder scan runs on every file: size, PIL header, pixel count, and for
  JPEG / PNG whether the file ends the way a complete file does. Only files whose ending looks wrong are
  decoded in full, so scanning ImageNet reads headers and tails, not 1.28M images.
"""
import io
import os
import struct
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# What Pillow raises for malformed files (its own fuzzing tests hit all of these). Anything else is a bug here
# and should propagate. UnidentifiedImageError and "image file is truncated" are OSErrors.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError,
               ZeroDivisionError, Image.DecompressionBombError)

_TAIL_BYTES = 1024  # how much of the end of a JPEG / PNG to look at for its end marker
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
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


def _open(path, max_pixels: int) -> Image.Image:
    """Open a file path or an in-memory io.BytesIO lazily (header only) and check the pixel count; raises BadImage."""
    try:
        size = path.getbuffer().nbytes if isinstance(path, io.BytesIO) else os.path.getsize(path)
        if size == 0:
            raise BadImage("zero bytes (empty file)")
        img = Image.open(path)
    except Image.DecompressionBombError as err:
        raise BadImage(f"larger than Pillow's decompression-bomb limit ({err})") from err
    except Image.UnidentifiedImageError as err:
        raise BadImage("not a readable image (Pillow cannot identify it: not an image, or a damaged "
                       "header)") from err
    except _PIL_ERRORS as err:
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


def decode_image(path, max_pixels: int) -> np.ndarray:
    """Open, check and fully decode a file path or an io.BytesIO; raises BadImage."""
    with _open(path, max_pixels) as img:
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


def decode_image_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an image held in memory (an upload, never written to disk) to (H, W, 3) uint8 RGB; raises BadImage
    with the reason, as for a file."""
    return decode_image(io.BytesIO(data), max_pixels)


def _tail_looks_complete(path: str, fmt: Optional[str]) -> bool:
    marker = _END_MARKERS.get(fmt or "")
    if marker is None:
        return True  # no cheap end check for this format; the pipeline still skips it if decoding fails
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - _TAIL_BYTES))
        return marker in f.read()


def check_image(path: str, max_pixels: int) -> Optional[str]:
    """Cheap check for the folder scan: None if the file looks usable, else the reason it is not.

    Reads the header and the last 1 KiB; decodes in full only a JPEG / PNG whose end marker is missing
    (truncated, or trailing bytes after a complete image), so that such files are judged by a real decode.
    """
    try:
        with _open(path, max_pixels) as img:
            fmt = img.format
        if not _tail_looks_complete(path, fmt):
            decode_image(path, max_pixels)
        return None
    except BadImage as err:
        return str(err)
    except OSError as err:  # the tail read failed (file vanished, permissions)
        return f"cannot be read ({type(err).__name__}: {err})"
