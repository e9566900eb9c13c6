"""vit_ms.data.decode: which files go to the C++ decoder, the PIL fallback, bad files in both, train crop statistics."""
import logging
import os

import mindspore.dataset as ds
import numpy as np
import pytest
from mindspore.dataset import vision
from PIL import Image

from test_data import (SIZE, batches, encoded, make_cfg, noise_image, small_jpeg, write_bad, write_odd_modes,
                       zero_middle)
from vit_ms.config import DataConfig
from vit_ms.data import Feed, build_eval_transforms, build_train_transforms, create_dataset, load_image_rgb
from vit_ms.data.decode import cpp_frame, jpeg_frame, read_encoded
from vit_ms.data.images import BadImage
from vit_ms.data.transforms import SeededCrop


def cpp_decodable(data: bytes) -> bool:
    """True when the pipeline hands these bytes to MindSpore's C++ decoder."""
    return cpp_frame(data) is not None


def photo(width: int = 120, height: int = 90, seed: int = 0) -> np.ndarray:
    """Smooth colour waves plus noise, like a photo's content: (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    waves = np.stack([np.sin(x / 9.0), np.cos(y / 7.0), np.sin((x + y) / 11.0)], axis=-1)  # (H, W, 3)
    return (127 + 100 * waves + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)


def cpp_decode(data: bytes) -> np.ndarray:
    return np.asarray(vision.Decode()(np.frombuffer(data, np.uint8)))


JPEGS = {"baseline q90": dict(quality=90), "4:4:4 q100": dict(quality=100, subsampling=0),
         "progressive q75": dict(quality=75, progressive=True)}


def test_ordinary_jpegs_go_to_cpp_and_the_rest_to_pil(tmp_path):
    rgb = Image.fromarray(photo())
    for kwargs in JPEGS.values():
        data = encoded(rgb, "JPEG", **kwargs)
        assert cpp_decodable(data) and jpeg_frame(data)[1:] == (8, 90, 120, 3)
    assert cpp_decodable(encoded(rgb.convert("L"), "JPEG"))
    cmyk = encoded(rgb.convert("CMYK"), "JPEG")
    assert jpeg_frame(cmyk).components == 4 and not cpp_decodable(cmyk)
    jpeg = encoded(rgb, "JPEG")
    assert not cpp_decodable(jpeg[:-2])  # no end marker: PIL judges it (truncated -> BadImage)
    assert not cpp_decodable(encoded(rgb, "PNG")) and not cpp_decodable(b"\xff\xd8 not a jpeg")
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg)
    assert read_encoded(str(path), 10**6).tobytes() == jpeg  # the file itself, untouched
    with pytest.raises(BadImage, match="over data.max_image_pixels=100"):
        read_encoded(str(path), 100)


@pytest.mark.parametrize("name", sorted(JPEGS))
def test_cpp_and_pil_decode_jpegs_to_the_same_eval_tensors(tmp_path, name):
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo(150, 110)).save(path, **JPEGS[name])
    cfg = DataConfig()
    cpp = vision.Decode()(read_encoded(str(path), 10**6))  # (H, W, 3)
    pil = load_image_rgb(path, 10**6)
    assert np.abs(cpp.astype(int) - pil).max() <= 1  # both libjpeg-turbo: identical in practice
    out_cpp = read_encoded(str(path), 10**6)
    for op in build_eval_transforms(cfg, SIZE, encoded=True):  # Decode, resize, center crop
        out_cpp = op(out_cpp)
    out_pil = pil
    for op in build_eval_transforms(cfg, SIZE):
        out_pil = op(out_pil)
    assert out_cpp.shape == (SIZE, SIZE, 3) and np.abs(out_cpp.astype(int) - out_pil).max() <= 1


def test_pil_fallback_gives_pils_rgb_exactly(tmp_path):
    """Odd modes and formats reach the C++ decoder as BMP: the pixels are PIL's conversion to RGB, bit for bit."""
    expected = write_odd_modes(tmp_path)
    (tmp_path / "photo.webp").write_bytes(encoded(Image.fromarray(photo()), "WEBP", quality=80))
    (tmp_path / "cmyk_photo.jpg").write_bytes(encoded(Image.fromarray(photo()).convert("CMYK"), "JPEG"))
    for path in sorted(expected) + [str(tmp_path / "photo.webp"), str(tmp_path / "cmyk_photo.jpg")]:
        data = read_encoded(path, 10**6).tobytes()
        if not path.endswith("gray.jpg"):
            assert data.startswith(b"BM"), path
        np.testing.assert_array_equal(cpp_decode(data), load_image_rgb(path, 10**6), err_msg=path)


@pytest.mark.parametrize("training", [True, False])
def test_files_that_fail_after_the_scan_are_replaced_and_reported_in_both_paths(tiny_imagenet, caplog, training):
    split = "train" if training else "val"
    folder = tiny_imagenet / split / "class_0"
    corrupt_png = folder / "bad_corrupt_data.png"  # PIL path
    corrupt_png.write_bytes(encoded(noise_image(64), "PNG"))
    zeroed = folder / "zeroed.jpg"  # C++ path: would kill the process in MindSpore's decoder (SIGFPE)
    zeroed.write_bytes(small_jpeg())
    broken_jpeg = folder / "broken.jpg"
    broken_jpeg.write_bytes(encoded(noise_image(40), "JPEG"))
    vanished = folder / "vanished.jpg"
    vanished.write_bytes(encoded(noise_image(40, seed=1), "JPEG"))
    cfg = make_cfg(tiny_imagenet)
    dataset, info = create_dataset(cfg.data, split, Feed.of(cfg, 3))
    assert not info.bad_files
    data = bytearray(broken_jpeg.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 4:sof + 40] = bytes(36)  # C++ path until now: frame header zeroed after the scan
    broken_jpeg.write_bytes(bytes(data))
    write_bad(folder, "corrupt_data")
    zeroed.write_bytes(zero_middle(zeroed.read_bytes()))
    os.unlink(vanished)  # C++ path: gone after the scan
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        (epoch,) = batches(dataset)
    total = info.num_samples - (info.num_samples % 3 if training else 0)
    assert sum(len(labels) for _, labels in epoch) == total  # every one replaced by the next sample
    messages = " ".join(r.getMessage() for r in caplog.records)
    for path in (corrupt_png, broken_jpeg, vanished, zeroed):
        assert f"image file '{path}' is unusable" in messages and "next sample in its place" in messages


def crop_geometry(images: np.ndarray, side: int) -> tuple:
    """From crops of the ramp image (R = x, G = y): (area fraction, aspect ratio w/h, flipped) per crop."""
    r, g = images[:, 0].astype(float), images[:, 1].astype(float)  # (N, S, S)
    s = images.shape[-1]
    dx = r[:, :, -1].mean(1) - r[:, :, 0].mean(1)  # right column minus left column: negative when flipped
    dy = g[:, -1, :].mean(1) - g[:, 0, :].mean(1)
    w, h = np.abs(dx) * s / (s - 1), dy * s / (s - 1)  # centre-to-centre -> edge-to-edge
    return w * h / side ** 2, w / h, dx < 0


def run_crops(data, op_list, n: int) -> np.ndarray:
    dataset = ds.GeneratorDataset([(data,)] * n, ["image"], shuffle=False)
    dataset = dataset.map(operations=op_list + [vision.HWC2CHW()], input_columns="image")
    return np.stack([row[0] for row in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)])


@pytest.fixture
def dataset_seed():
    """A fixed pipeline seed for statistical tests (so they cannot flake), restored afterwards."""
    before = ds.config.get_seed()
    ds.config.set_seed(7)
    yield
    ds.config.set_seed(before)


def test_train_crop_statistics_match_random_resized_crop(dataset_seed):
    side = 250
    y, x = np.mgrid[0:side, 0:side]
    ramp = np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)  # R = column, G = row
    data = np.frombuffer(encoded(Image.fromarray(ramp), "JPEG", quality=100, subsampling=0), np.uint8)
    assert cpp_decodable(data.tobytes())  # the crop-while-decoding path of RandomCropDecodeResize
    cfg = DataConfig()  # scale [0.08, 1], ratio [0.75, 1.333], bicubic, hflip 0.5
    n = 400
    new = crop_geometry(run_crops(data, build_train_transforms(cfg, 48, encoded=True)[:2], n), side)
    old = crop_geometry(run_crops(vision.Decode()(data), build_train_transforms(cfg, 48)[:2], n), side)
    crop, rng = SeededCrop(cfg, 48), np.random.default_rng(0)  # train.deterministic: drawn from a given generator
    seeded = crop_geometry(np.stack([crop(data, rng).transpose(2, 0, 1) for _ in range(n)]), side)
    for scale, ratio, flipped in (new, old, seeded):
        assert scale.min() >= 0.08 - 0.02 and scale.max() <= 1.0 + 0.02
        assert ratio.min() >= 0.75 - 0.05 and ratio.max() <= 1.333 + 0.05
        assert 0.4 < flipped.mean() < 0.6
        assert scale.max() - scale.min() > 0.7 and ratio.max() - ratio.min() > 0.4  # the whole ranges are used
    assert abs(new[0].mean() - old[0].mean()) < 0.05 and abs(np.log(new[1]).mean() - np.log(old[1]).mean()) < 0.05
    assert abs(np.median(new[0]) - np.median(old[0])) < 0.07
    assert abs(seeded[0].mean() - old[0].mean()) < 0.05 and abs(np.log(seeded[1]).mean() - np.log(old[1]).mean()) < 0.05
    assert abs(np.median(seeded[0]) - np.median(old[0])) < 0.07
