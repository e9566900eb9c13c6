"""Decoded pixels: a bound on one upload and on all uploads decoding at once, sized from the model's input.

    limit = image_pixel_limit(image_size=224)            # 3584**2 = 12,845,056 (or the server's --max-image-pixels)
    plan = plan_decode(upload_bytes, limit, side=256, data_limit=cfg.data.max_image_pixels)   # header only
    async with pixels.hold(plan.pixels):                 # Budget(decode_threads * limit), vit_ms.serve.budget
        image = decode_planned(upload_bytes, plan, data_limit)   # (H, W, 3) uint8, at most `limit` pixels

The model sees `image_size` pixels a side, so an upload of many thousand pixels a side is mostly decoded to be
thrown away, and a small compressed file can claim a huge canvas (a 140 KB PNG of 12000x12000 decodes to 432 MB
of RGB, and more in Pillow's and numpy's copies). An upload within `limit` decodes exactly as evaluation decodes a
file. A larger JPEG is decoded in Pillow's draft mode (libjpeg's DCT scaling, down to 1/8 a side) at the smallest
scale that still covers the eval resize (`side`: image_size / crop_pct), so it is answered without holding its
full size; a larger image of another format is refused (BadImage: the client is told the bound and to resize).
`data.max_image_pixels` (the decompression-bomb guard of every decode) still refuses what is over it, as for files.
Every decode holds its pixels of a `Budget` (vit_ms.serve.budget) while it runs, so memory stays bounded under any
mix of uploads: about `total` pixels x 10 bytes (Pillow's 4-byte RGBX, the RGB array, the resize: a 3584x3584 PNG decoded and
preprocessed for 224 px raised the peak RSS by 121 MB).
"""
import io
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from ..data.images import _PIL_ERRORS, BadImage, decode_image_bytes

SIDE_FACTOR = 16  # an upload may have up to 16x the model's input side: 3584 px a side at 224, 512 at 32


def image_pixel_limit(image_size: int) -> int:
    """The most pixels one upload decodes to, by default: (SIDE_FACTOR * image_size)**2."""
    return (SIDE_FACTOR * image_size) ** 2


@dataclass(frozen=True)
class DecodePlan:
    pixels: int  # what decoding will hold: the header's width x height, or the drafted size for a large JPEG
    draft: Optional[Tuple[int, int]] = None  # the size asked of Pillow's JPEG draft mode; None: a full decode


def too_many_pixels(width: int, height: int, limit: int) -> BadImage:
    return BadImage(f"{width}x{height} = {width * height} pixels is over this server's limit of {limit} pixels for "
                    f"one image (by default 16x the model's input side, squared); send it resized, or as a JPEG "
                    f"(decoded at reduced scale), or start the server with a larger --max-image-pixels")


def plan_decode(data: bytes, limit: int, side: int, data_limit: int) -> DecodePlan:
    """Read the header only: how many pixels decoding `data` will hold, within `limit`; raises BadImage above it.

    A header Pillow cannot read, or one over `data_limit` (data.max_image_pixels), plans a full decode of 0 pixels:
    the decode refuses it from the header with the reason, as evaluation refuses such a file."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > data_limit:
                return DecodePlan(0)
            if width * height <= limit:
                return DecodePlan(width * height)
            if img.format != "JPEG":
                raise too_many_pixels(width, height, limit)
            img.draft("RGB", (side, side))  # picks the DCT scale; sets img.size without decoding
            drafted = img.size[0] * img.size[1]
    except (Image.DecompressionBombError, *_PIL_ERRORS):
        return DecodePlan(0)
    if drafted > limit:
        raise too_many_pixels(width, height, limit)
    return DecodePlan(drafted, (side, side))


def decode_planned(data: bytes, plan: DecodePlan, data_limit: int) -> np.ndarray:
    """Decode as planned -> (H, W, 3) uint8 RGB; raises BadImage with the reason, as evaluation does for a file."""
    if plan.draft is None:
        return decode_image_bytes(data, data_limit)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", plan.draft)
            img.load()
            return np.array(img.convert("RGB"), dtype=np.uint8)  # (H', W', 3), JPEG modes L/RGB/CMYK/YCbCr
    except _PIL_ERRORS as err:
        raise BadImage(f"truncated or corrupt ({type(err).__name__}: {err})") from err
