"""The decoded-pixel bounds (vit_ms.serve.pixels): the per-upload limit from the model's input, the header-only
plan (a large JPEG drafted, a large PNG refused), the reduced-scale decode."""
import io

import numpy as np
import pytest
from PIL import Image

from vit_ms.data.images import BadImage
from vit_ms.serve.pixels import DecodePlan, decode_planned, image_pixel_limit, plan_decode

DATA_LIMIT = 178956970  # data.max_image_pixels' default


def encoded(width: int, height: int, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(out, format=fmt)
    return out.getvalue()


def test_limit_is_sized_from_the_model_input():
    assert image_pixel_limit(224) == 3584 ** 2
    assert image_pixel_limit(32) == 512 ** 2


def test_within_the_limit_decodes_in_full_as_evaluation_does():
    data = encoded(300, 200, "JPEG")
    plan = plan_decode(data, limit=300 * 200, side=36, data_limit=DATA_LIMIT)
    assert plan == DecodePlan(60000)
    assert decode_planned(data, plan, DATA_LIMIT).shape == (200, 300, 3)


def test_a_large_png_is_refused_from_its_header():
    data = encoded(1200, 1200, "PNG")  # 1.44 M pixels, a few KB
    with pytest.raises(BadImage, match=r"1200x1200 = 1440000 pixels is over this server's limit of 262144"):
        plan_decode(data, limit=512 ** 2, side=36, data_limit=DATA_LIMIT)


def test_a_large_jpeg_is_decoded_at_reduced_scale():
    data = encoded(2000, 1000, "JPEG")
    plan = plan_decode(data, limit=512 ** 2, side=36, data_limit=DATA_LIMIT)
    assert plan.draft == (36, 36) and plan.pixels == 250 * 125  # 1/8 scale: still covers the 36 px eval resize
    image = decode_planned(data, plan, DATA_LIMIT)
    assert image.shape == (125, 250, 3) and image.dtype == np.uint8
    assert abs(int(image.mean()) - 90) <= 2
    with pytest.raises(BadImage, match="over this server's limit of 20000"):  # 1/8 scale is not enough
        plan_decode(data, limit=20000, side=36, data_limit=DATA_LIMIT)


def test_an_unreadable_or_bomb_header_plans_nothing_and_the_decode_says_why():
    plan = plan_decode(b"not an image", limit=512 ** 2, side=36, data_limit=DATA_LIMIT)
    assert plan == DecodePlan(0)
    with pytest.raises(BadImage, match="not a readable image"):
        decode_planned(b"not an image", plan, DATA_LIMIT)
    data = encoded(2000, 1000, "JPEG")  # a JPEG over data.max_image_pixels is not drafted: refused as for a file
    plan = plan_decode(data, limit=512 ** 2, side=36, data_limit=1_000_000)
    assert plan == DecodePlan(0)
    with pytest.raises(BadImage, match="over data.max_image_pixels=1000000"):
        decode_planned(data, plan, 1_000_000)
