"""vit_ms.data: decoding and bad images, folder scan, transforms, order / resume / sharding, the pipeline."""
import hashlib
import io
import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mindspore.dataset import transforms, vision
from PIL import Image

from vit_ms.config import Config, DataConfig
from vit_ms.data import (EpochSampler, build_augment, build_eval_transforms, build_mixup, build_train_transforms,
                         Feed, create_dataset, load_image_rgb, preprocess_eval, scan_split)
import vit_ms.data.folder as folder_module
from vit_ms.data.folder import read_class_names
from vit_ms.data.reading import reader_error
from vit_ms.data.setup import prepare_data
from vit_ms.data.transforms import EvalCrop, SeededCrop, crop_box
from vit_ms.errors import ConfigError, DataError
from vit_ms.plan import resolve_plan
from vit_ms.runtime import Runtime

REPO = Path(__file__).resolve().parent.parent
SIZE = 32
N_TRAIN, N_VAL = 24, 12  # tiny_imagenet: 3 classes x 8 train / 4 val


# ----------------------------------------------------------------------------------------------------------
# Helpers


def make_cfg(root: Path, **data) -> Config:
    cfg = Config()
    cfg.data.root = str(root)
    cfg.data.num_parallel_workers = 2
    cfg.model.image_size = SIZE
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def no_random_aug(cfg: Config) -> Config:
    """Train transforms that are a fixed function of the file: a whole-image crop, nothing random."""
    cfg.data.scale, cfg.data.ratio = [1.0, 1.0], [1.0, 1.0]
    cfg.data.hflip, cfg.data.auto_augment, cfg.data.re_prob = 0.0, "", 0.0
    cfg.data.mixup, cfg.data.cutmix = 0.0, 0.0
    return cfg


def batches(dataset, num_epochs: int = 1):
    it = dataset.create_dict_iterator(num_epochs=num_epochs, output_numpy=True)
    return [[(b["image"], b["label"]) for b in it] for _ in range(num_epochs)]


def signatures(epoch_batches) -> list:
    """One fingerprint per image, in order: identifies the sample when transforms are not random."""
    return [hashlib.md5(img.tobytes()).hexdigest()[:12] for images, _ in epoch_batches for img in images]


def noise_image(size: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def small_jpeg(seed: int = 0) -> bytes:
    """A 32x32 JPEG at quality 90, as the demo set writes them."""
    return encoded(noise_image(32, seed), "JPEG", quality=90)


def zero_middle(data: bytes) -> bytes:
    """The middle third of a file zeroed, its start and end marker kept. MindSpore's C++ decoder dies on a
    `small_jpeg` damaged so with SIGFPE (the zeros hit its Huffman tables); PIL reports it."""
    n = len(data)
    return data[:n // 3] + bytes(2 * n // 3 - n // 3) + data[2 * n // 3:]


def write_bad(folder: Path, kind: str) -> Path:
    """One unusable file of the given kind; with max_pixels=10_000 'huge' is over the limit."""
    jpeg = encoded(noise_image(96), "JPEG", quality=90)
    png = bytearray(encoded(noise_image(64), "PNG"))
    if kind == "corrupt_header":
        png[20] ^= 0xFF  # inside IHDR: its checksum no longer matches
    if kind == "corrupt_data":
        png[len(png) // 2:len(png) // 2 + 200] = bytes(200)  # inside IDAT: header and end marker intact
    content = {
        "corrupt_header": bytes(png),
        "corrupt_data": bytes(png),
        "truncated": jpeg[: int(len(jpeg) * 0.7)],
        "zero_byte": b"",
        "non_image": b"this is a text file, not a JPEG\n" * 10,
        "huge": encoded(noise_image(128), "PNG"),  # 16384 pixels
        "zeroed_middle": zero_middle(small_jpeg()),
    }[kind]
    jpg = kind in ("truncated", "zero_byte", "non_image", "zeroed_middle")
    path = folder / f"bad_{kind}.{'jpg' if jpg else 'png'}"
    path.write_bytes(content)
    return path


# Found by the folder scan (every file decoded in full): kind -> words in the reason.
BAD_KINDS = {"corrupt_header": "damaged header", "truncated": "truncated", "zero_byte": "zero bytes",
             "non_image": "not a readable image", "huge": "max_image_pixels", "corrupt_data": "corrupt",
             "zeroed_middle": "corrupt"}


def write_odd_modes(folder: Path) -> dict:
    """Usable images in unusual modes -> their expected RGB value at pixel (0, 0)."""
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    palette_t = palette.copy()
    palette_t.info["transparency"] = 0
    images = {
        "gray.jpg": (Image.new("L", (16, 16), 77), (77, 77, 77)),
        "cmyk.jpg": (Image.new("CMYK", (16, 16), (0, 255, 255, 0)), (255, 0, 0)),
        "rgba.png": (Image.new("RGBA", (16, 16), (10, 120, 230, 0)), (10, 120, 230)),
        "gray16.png": (Image.fromarray(np.full((16, 16), 0x8040, np.uint16)), (0x80, 0x80, 0x80)),
        "palette.png": (palette, (200, 30, 40)),
        "palette_transparent.gif": (palette_t, (200, 30, 40)),
        "bilevel.bmp": (Image.new("1", (16, 16), 1), (255, 255, 255)),
    }
    expected = {}
    for name, (image, rgb) in images.items():
        image.save(folder / name)
        expected[str(folder / name)] = rgb
    return expected


# ----------------------------------------------------------------------------------------------------------
# load_image_rgb


def test_load_image_converts_every_mode_to_rgb_uint8(tmp_path):
    expected = write_odd_modes(tmp_path)
    for path, rgb in expected.items():
        image = load_image_rgb(path, max_pixels=10_000)
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8, path
        tolerance = 3 if path.endswith(".jpg") else 0
        assert np.abs(image[0, 0].astype(int) - rgb).max() <= tolerance, (path, image[0, 0], rgb)
        assert image.flags.writeable


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_load_image_raises_data_error_naming_file_and_reason(tmp_path, kind):
    path = write_bad(tmp_path, kind)
    with pytest.raises(DataError) as err:
        load_image_rgb(path, max_pixels=10_000)
    assert str(path) in str(err.value) and BAD_KINDS.get(kind, "corrupt") in str(err.value)
    assert "on_bad_image" in str(err.value)  # says how to carry on


# ----------------------------------------------------------------------------------------------------------
# scan_split: bad files, empty classes, layout errors


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_scan_skips_or_raises_for_each_bad_kind(tiny_imagenet, kind):
    bad = write_bad(tiny_imagenet / "train" / "class_1", kind)
    index = scan_split(tiny_imagenet, "train", "skip", max_pixels=10_000)
    assert len(index.samples) == N_TRAIN and index.classes == ["class_0", "class_1", "class_2"]
    assert [p for p, _ in index.bad] == [str(bad)] and BAD_KINDS[kind] in index.bad[0][1]
    with pytest.raises(DataError, match=BAD_KINDS[kind]) as err:
        scan_split(tiny_imagenet, "train", "error", max_pixels=10_000)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "   "])
def test_class_names_that_cannot_come_back_from_classes_txt_are_refused(tiny_imagenet, name):
    (tiny_imagenet / "train" / name).mkdir()
    with pytest.raises(DataError, match=r"class folder .* has a name with .*classes\.txt.* Rename the folder"):
        scan_split(tiny_imagenet, "train")


def test_a_trailing_space_is_part_of_the_class_name(tiny_imagenet, tmp_path):
    os.rename(tiny_imagenet / "train" / "class_1", tiny_imagenet / "train" / "class_1 ")
    index = scan_split(tiny_imagenet, "train")
    names = tmp_path / "classes.txt"
    names.write_text("".join(f"{c}\n" for c in index.classes), encoding="utf-8")
    assert read_class_names(names) == index.classes == ["class_0", "class_1 ", "class_2"]


def test_link_loops_unreadable_and_vanishing_folders_are_skipped_with_a_warning(tiny_imagenet, caplog, monkeypatch):
    folder = tiny_imagenet / "train" / "class_0"
    (folder / "loop").symlink_to(folder)  # class_0/loop/loop/... would list class_0 again and again
    (folder / "dangling").symlink_to(tiny_imagenet / "nowhere")
    (tiny_imagenet / "train" / "self").symlink_to("self")  # a link to itself: not a folder
    real_scandir = folder_module.os.scandir

    def vanishing(path):
        if str(path).endswith("class_2"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_scandir(path)

    monkeypatch.setattr(folder_module.os, "scandir", vanishing)
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        index = scan_split(tiny_imagenet, "train")
    assert len(index.samples) == N_TRAIN - 8 and index.classes == ["class_0", "class_1", "class_2"]
    assert f"'{folder / 'loop'}' is a folder already listed" in caplog.text
    assert f"cannot list '{tiny_imagenet / 'train' / 'class_2'}'" in caplog.text
    monkeypatch.setattr(folder_module.os, "scandir", lambda path: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", str(path))))
    with pytest.raises(DataError, match=r"cannot list the folder .*Permission denied"):
        scan_split(tiny_imagenet, "train")


def test_scan_keeps_odd_modes_ignores_other_extensions_and_lists_sorted(tiny_imagenet):
    odd = write_odd_modes(tiny_imagenet / "train" / "class_2")
    (tiny_imagenet / "train" / "class_0" / "notes.txt").write_text("not listed")
    (tiny_imagenet / "train" / "class_0" / "UPPER.JPEG").write_bytes((tiny_imagenet / "train" / "class_0" /
                                                                      "0000.jpg").read_bytes())
    index = scan_split(tiny_imagenet, "train", "error", max_pixels=10_000)
    paths = [p for p, _ in index.samples]
    assert set(odd) <= set(paths) and not index.bad
    assert not any(p.endswith(".txt") for p in paths) and any(p.endswith("UPPER.JPEG") for p in paths)
    assert len(paths) == N_TRAIN + len(odd) + 1
    assert [label for _, label in index.samples] == sorted(label for _, label in index.samples)


def test_empty_class_folder_is_kept_and_warned_about(tiny_imagenet, caplog):
    (tiny_imagenet / "train" / "class_3").mkdir()
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        index = scan_split(tiny_imagenet, "train")
    assert index.classes[-1] == "class_3" and len(index.samples) == N_TRAIN
    assert any("class_3" in r.getMessage() and "no usable images" in r.getMessage() for r in caplog.records)


def test_layout_errors_name_the_folder(tmp_path, tiny_imagenet):
    with pytest.raises(DataError, match="does not exist") as err:
        scan_split(tmp_path / "nowhere", "train")
    assert "nowhere" in str(err.value) and "<root>/train/<class>/*.jpg" in str(err.value)
    with pytest.raises(DataError, match="does not exist") as err:
        scan_split(tiny_imagenet, "validation")
    assert str(tiny_imagenet / "validation") in str(err.value)
    flat = tmp_path / "flat" / "train"
    flat.mkdir(parents=True)
    (flat / "a.jpg").write_bytes((tiny_imagenet / "train" / "class_0" / "0000.jpg").read_bytes())
    with pytest.raises(DataError, match="no class folders") as err:
        scan_split(tmp_path / "flat", "train")
    assert str(flat) in str(err.value) and "<root>/train/<class>/*.jpg" in str(err.value)


def test_split_with_only_bad_files_raises(tiny_imagenet):
    for path in (tiny_imagenet / "val").rglob("*.*"):
        path.write_text("not an image")
    with pytest.raises(DataError, match="no usable images") as err:
        scan_split(tiny_imagenet, "val")
    assert str(tiny_imagenet / "val") in str(err.value)


def test_a_runs_feed_is_what_its_plan_resolved():
    """Rank 1 of 4, a global batch of 64 with at most 8 per device: 2 micro-batches of 8 per step; the val split
    is read with the eval batch, no cap and no resume position."""
    cfg = Config()
    cfg.train.global_batch_size, cfg.train.batch_size, cfg.train.steps_per_epoch, cfg.eval.batch_size = 64, 8, 5, 12
    plan = resolve_plan(cfg, Runtime("CPU", rank=1, world_size=4))
    train = Feed.from_plan(cfg, plan, training=True, start_epoch=2, skip_steps=3)
    assert (train.batch_size, train.accum_steps, train.num_shards, train.shard_id) == (8, 2, 4, 1)
    assert (train.steps_per_epoch, train.start_epoch, train.skip_steps) == (5, 2, 3)
    assert (train.image_size, train.seed, train.label_smoothing) == (224, cfg.train.seed, cfg.loss.label_smoothing)
    val = Feed.from_plan(cfg, plan, training=False)
    assert (val.batch_size, val.accum_steps, val.num_shards, val.shard_id) == (12, 1, 4, 1)
    assert (val.steps_per_epoch, val.start_epoch, val.skip_steps) == (0, 0, 0)


def test_only_the_run_setup_changes_the_dataset_engine(tiny_imagenet):
    """create_dataset leaves MindSpore's process-wide dataset settings alone; prepare_data makes them."""
    import mindspore.dataset as ds

    cfg = make_cfg(tiny_imagenet, on_bad_image="skip")
    cfg.train.deterministic, cfg.train.seed = True, 1234
    before = ds.config.get_seed(), ds.config.get_error_samples_mode()
    try:
        ds.config.set_error_samples_mode(ds.config.ErrorSamplesMode.RETURN)
        create_dataset(cfg.data, "train", Feed.of(cfg, 4))
        assert ds.config.get_error_samples_mode() == ds.config.ErrorSamplesMode.RETURN
        assert ds.config.get_seed() == before[0]
        prepare_data(cfg.data, cfg.train.seed, cfg.train.deterministic)
        assert ds.config.get_error_samples_mode() == ds.config.ErrorSamplesMode.REPLACE
        assert ds.config.get_seed() == 1234
    finally:
        ds.config.set_seed(before[0])
        ds.config.set_error_samples_mode(before[1])


def test_create_dataset_config_errors(tiny_imagenet):
    cfg = make_cfg(tiny_imagenet)
    with pytest.raises(DataError, match="data.root is empty"):
        create_dataset(make_cfg("").data, "train", Feed.of(cfg, 4))
    (tiny_imagenet / "val" / "extra_class").mkdir()
    with pytest.raises(DataError, match="extra_class"):
        create_dataset(cfg.data, "val", Feed.of(cfg, 4))
    with pytest.raises(ConfigError, match="data.auto_augment"):
        build_augment(DataConfig(auto_augment="randaug-m9-bogus1"), SIZE)
    with pytest.raises(DataError, match="fewer than one batch"):
        create_dataset(cfg.data, "train", Feed.of(cfg, 64))
    with pytest.raises(ValueError, match="start_epoch=3, skip_steps=0"):
        create_dataset(cfg.data, "train", Feed.of(cfg, 4, start_epoch=2, skip_steps=6))


# ----------------------------------------------------------------------------------------------------------
# The pipeline: shapes, bad files at scan and at decode time


def test_train_batches_with_mixup_have_soft_labels(tiny_imagenet):
    cfg = make_cfg(tiny_imagenet)  # defaults: RandAugment, random erasing, mixup 0.8 / cutmix 1.0
    dataset, info = create_dataset(cfg.data, "train", Feed.of(cfg, 4))
    assert info.steps_per_epoch == dataset.get_dataset_size() == N_TRAIN // 4
    assert info.class_names == ["class_0", "class_1", "class_2"] and info.num_samples == N_TRAIN
    (epoch,) = batches(dataset)
    assert len(epoch) == 6
    for images, labels in epoch:
        assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == np.float32
        assert labels.shape == (4, 3) and labels.dtype == np.float32
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
        assert labels.min() >= 0.1 / 3 - 1e-6  # label smoothing folded in: off value = smoothing / classes


def test_train_without_mixup_has_int_labels_and_drops_remainder(tiny_imagenet):
    cfg = make_cfg(tiny_imagenet, mixup=0.0, cutmix=0.0, auto_augment="", color_jitter=0.4)
    dataset, info = create_dataset(cfg.data, "train", Feed.of(cfg, 5))
    (epoch,) = batches(dataset)
    assert info.steps_per_epoch == len(epoch) == N_TRAIN // 5
    for images, labels in epoch:
        assert images.shape == (5, 3, SIZE, SIZE) and images.dtype == np.float32
        assert labels.shape == (5,) and labels.dtype == np.int32 and set(labels) <= {0, 1, 2}


def test_val_batches_keep_order_and_remainder(tiny_imagenet):
    cfg = make_cfg(tiny_imagenet)
    dataset, info = create_dataset(cfg.data, "val", Feed.of(cfg, 5))
    (epoch,) = batches(dataset)
    assert info.steps_per_epoch == len(epoch) == 3
    assert [len(labels) for _, labels in epoch] == [5, 5, 2]
    assert np.concatenate([labels for _, labels in epoch]).tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert all(images.dtype == np.float32 and images.shape[1:] == (3, SIZE, SIZE) for images, _ in epoch)


def test_bad_files_are_skipped_counted_and_warned(tiny_imagenet, caplog):
    folder = tiny_imagenet / "train" / "class_0"
    bad = sorted(str(write_bad(folder, kind)) for kind in BAD_KINDS)
    odd = write_odd_modes(tiny_imagenet / "train" / "class_1")
    cfg = make_cfg(tiny_imagenet, max_image_pixels=10_000)
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        dataset, info = create_dataset(cfg.data, "train", Feed.of(cfg, 4))
    assert sorted(p for p, _ in info.bad_files) == bad
    assert info.num_samples == N_TRAIN + len(odd)
    warning = next(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert f"skipped {len(bad)} unusable" in warning and bad[0] in warning
    (epoch,) = batches(dataset)
    assert len(epoch) == (N_TRAIN + len(odd)) // 4
    cfg.data.on_bad_image = "error"
    with pytest.raises(DataError, match=str(folder)):
        create_dataset(cfg.data, "train", Feed.of(cfg, 4))


def test_files_damaged_after_the_scan_are_replaced_or_stop(tiny_imagenet, caplog):
    """Files can change after the scan: the reader replaces each with the next sample and names it, or
    raises, and train.py shows the reader's message instead of MindSpore's traceback."""
    corrupt = tiny_imagenet / "val" / "class_0" / "bad_corrupt_data.png"
    corrupt.write_bytes(encoded(noise_image(64), "PNG"))
    cfg = make_cfg(tiny_imagenet)
    dataset, info = create_dataset(cfg.data, "val", Feed.of(cfg, 4))
    assert info.num_samples == N_VAL + 1 and not info.bad_files
    write_bad(corrupt.parent, "corrupt_data")  # same name, damaged since the scan
    changed = tiny_imagenet / "val" / "class_1" / "0001.png"
    original = changed.read_bytes()
    changed.write_text("overwritten after the scan")
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        (epoch,) = batches(dataset)
    assert sum(len(labels) for _, labels in epoch) == N_VAL + 1  # each replaced by the next sample
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert str(corrupt) in messages and str(changed) in messages
    changed.write_bytes(original)
    corrupt.write_bytes(encoded(noise_image(64), "PNG"))
    cfg.data.on_bad_image = "error"
    dataset, _ = create_dataset(cfg.data, "val", Feed.of(cfg, 4))
    write_bad(corrupt.parent, "corrupt_data")
    with pytest.raises(RuntimeError, match="bad_corrupt_data.png") as failure:
        batches(dataset)
    error = reader_error(failure.value)  # what train.py shows instead of MindSpore's traceback
    assert isinstance(error, DataError) and str(error).startswith(f"image file '{corrupt}' is unusable: ")
    assert reader_error(RuntimeError("other")) is None


def test_the_index_records_which_files_need_pil(tiny_imagenet):
    index = scan_split(tiny_imagenet, "val")
    assert index.pil == {p for p, _ in index.samples if p.endswith(".png")} and index.pil
    cmyk = tiny_imagenet / "val" / "class_2" / "cmyk.jpg"
    cmyk.write_bytes(encoded(noise_image(SIZE).convert("CMYK"), "JPEG"))
    assert str(cmyk) in scan_split(tiny_imagenet, "val").pil  # a changed folder is scanned again


# ----------------------------------------------------------------------------------------------------------
# Eval preprocessing


@pytest.mark.parametrize("interpolation, pil_filter", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
@pytest.mark.parametrize("height, width", [(40, 48), (57, 41)])
def test_eval_transform_matches_pil_resize_center_crop_normalise(interpolation, pil_filter, height, width):
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 5, yy * 4, (xx + yy) * 3], axis=-1).clip(0, 255).astype(np.uint8)  # smooth ramps
    cfg = DataConfig(interpolation=interpolation, crop_pct=0.875)
    out = preprocess_eval(image, cfg, SIZE)
    short = int(SIZE / 0.875)  # 36
    new_h, new_w = (short, int(width * short / height)) if height <= width else (int(height * short / width), short)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), pil_filter), dtype=np.float32)
    top, left = int(round((new_h - SIZE) / 2.0)), int(round((new_w - SIZE) / 2.0))  # torchvision's CenterCrop
    crop = resized[top:top + SIZE, left:left + SIZE]
    expected = ((crop - np.array(cfg.mean)) / np.array(cfg.std)).transpose(2, 0, 1)  # (3, S, S)
    assert out.shape == (3, SIZE, SIZE) and out.dtype == np.float32
    assert np.abs(out - expected).max() < 1e-5  # PIL's resize itself: the pixels timm's eval transform gives


@pytest.fixture(scope="module")
def sample_photos():
    """scikit-learn's two sample photos (china.jpg, flower.jpg; 427 x 640), (H, W, 3) uint8."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


@pytest.mark.parametrize("interpolation, pil_filter", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
def test_eval_crop_on_photos_is_timms_eval_transform(sample_photos, interpolation, pil_filter):
    """timm's transforms_imagenet_eval at 224, crop_pct 0.875, 0.9, 1.0: shorter side 256 / 248 / 224 (torchvision),
    center crop; offsets in both rounding directions (odd margins) are exercised."""
    for crop_pct in (0.875, 0.9, 1.0):
        cfg = DataConfig(interpolation=interpolation, crop_pct=crop_pct)
        for image in sample_photos + [sample_photos[0][:, :601], sample_photos[1][:423, :603]]:
            h, w = image.shape[:2]
            short = math.floor(224 / crop_pct)
            new_h, new_w = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
            resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), pil_filter))
            top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
            np.testing.assert_array_equal(EvalCrop(cfg, 224)(image), resized[top:top + 224, left:left + 224])
            ops = build_eval_transforms(cfg, 224)  # bicubic: C++ Resize with PIL's filter first
            np.testing.assert_array_equal(transforms.Compose(ops)(image), resized[top:top + 224, left:left + 224])


def test_cpp_resize_of_the_shorter_side_gives_torchvisions_sizes():
    """The eval list resizes in C++ (Resize(short)) and EvalCrop then only crops: the longer side must be
    torchvision's int(short * long / shorter) for every shape."""
    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(200, 900, 2))
        out = np.asarray(vision.Resize(256, vision.Inter.PILCUBIC)(np.zeros((h, w, 3), np.uint8)))
        assert out.shape[:2] == ((256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)), (h, w)


def test_training_crop_resize_is_pils_and_opencvs_is_not(sample_photos):
    """RandomCropDecodeResize with the C++ filter chosen for bicubic (Inter.PILCUBIC) gives PIL's pixels, decoding
    while cropping; MindSpore's own BICUBIC (OpenCV's, not antialiased) is off by several grey levels at this
    0.35 downscale. SeededCrop's crop + PIL resize is PIL's for every filter."""
    image = sample_photos[0]
    h, w = image.shape[:2]
    data = np.frombuffer(encoded(Image.fromarray(image), "JPEG", quality=95), np.uint8)
    decoded = np.asarray(vision.Decode()(data))
    whole = dict(scale=(1.0, 1.0), ratio=(w / h, w / h))
    (crop,) = build_train_transforms(DataConfig(hflip=0.0, auto_augment="", **whole), 224, encoded=True)
    pil = np.asarray(Image.fromarray(decoded).resize((224, 224), Image.BICUBIC)).astype(int)
    assert np.abs(np.asarray(crop(data)).astype(int) - pil).max() == 0
    opencv = vision.RandomCropDecodeResize(224, interpolation=vision.Inter.BICUBIC, **whole)
    assert np.abs(np.asarray(opencv(data)).astype(int) - pil).mean() > 2
    for interpolation, pil_filter in (("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)):
        seeded = SeededCrop(DataConfig(interpolation=interpolation, hflip=0.0, auto_augment=""), 224)
        rng = np.random.default_rng(5)
        top, left, ch, cw = crop_box(np.random.default_rng(5), h, w, (0.08, 1.0), (0.75, 1.333))
        out = seeded(data, rng)
        box = Image.fromarray(np.ascontiguousarray(decoded[top:top + ch, left:left + cw]))
        np.testing.assert_array_equal(out, np.asarray(box.resize((224, 224), pil_filter)))


def test_preprocess_eval_equals_the_val_pipeline(tiny_imagenet):
    cfg = make_cfg(tiny_imagenet)
    (epoch,) = batches(create_dataset(cfg.data, "val", Feed.of(cfg, N_VAL))[0])
    index = scan_split(tiny_imagenet, "val")
    eager = np.stack([preprocess_eval(load_image_rgb(p, 10**6), cfg.data, SIZE) for p, _ in index.samples])
    np.testing.assert_array_equal(epoch[0][0], eager)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_eval(eager[0], cfg.data, SIZE)


def test_transform_lists():
    cfg = DataConfig(auto_augment="randaug-m9-mstd1.0-inc1")
    names = [type(op).__name__ for op in build_train_transforms(cfg, SIZE)]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip"]  # then batch_ops.BatchFinish: the policy, ...
    rand_augment = build_augment(cfg, SIZE)
    assert type(rand_augment).__name__ == "RandAugment" and rand_augment.magnitude_std == 1.0  # mstd honoured
    assert build_augment(DataConfig(auto_augment=""), SIZE) is None
    assert [type(op).__name__ for op in build_eval_transforms(cfg, SIZE)] == ["Resize", "EvalCrop"]  # PILCUBIC
    assert [type(op).__name__ for op in build_eval_transforms(cfg, SIZE, encoded=True)] == ["Decode", "Resize",
                                                                                             "EvalCrop"]
    bilinear = DataConfig(interpolation="bilinear")  # PIL resizes in EvalCrop
    assert [type(op).__name__ for op in build_eval_transforms(bilinear, SIZE)] == ["EvalCrop"]
    with pytest.raises(ValueError, match="SeededCrop"):  # bilinear crops in Python, with PIL's filter
        build_train_transforms(DataConfig(interpolation="bilinear"), SIZE)
    jitter = DataConfig(auto_augment="", color_jitter=0.4)
    assert [type(op).__name__ for op in build_train_transforms(jitter, SIZE, encoded=True)] == [
        "RandomCropDecodeResize", "RandomHorizontalFlip", "RandomColorAdjust"]


# ----------------------------------------------------------------------------------------------------------
# Order: reproducible from (seed, epoch), resumable, sharded


def test_epoch_order_is_reproducible_and_resumable(tiny_imagenet):
    cfg = no_random_aug(make_cfg(tiny_imagenet))
    cfg.data.shuffle = False
    (in_file_order,) = [signatures(e) for e in batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4))[0])]
    assert len(set(in_file_order)) == N_TRAIN
    cfg.data.shuffle = True

    def epochs(num_epochs, **kwargs):
        dataset, _ = create_dataset(cfg.data, "train", Feed.of(cfg, 4, **kwargs))
        return [signatures(e) for e in batches(dataset, num_epochs)]

    from_zero = epochs(3)
    for epoch, order in enumerate(from_zero):  # the order is a function of (seed, epoch) only
        permutation = np.random.default_rng((cfg.train.seed, epoch)).permutation(N_TRAIN)
        assert order == [in_file_order[i] for i in permutation]
    assert from_zero[1] != from_zero[2]
    assert epochs(1, start_epoch=2) == [from_zero[2]]
    resumed = epochs(2, start_epoch=1, skip_steps=2)
    assert resumed[0] == from_zero[1][2 * 4:]  # exactly the tail of the same epoch
    assert resumed[1] == from_zero[2]  # then whole epochs again
    capped = epochs(2, steps_per_epoch=2)
    assert capped == [from_zero[0][:8], from_zero[1][:8]]


def test_a_pipeline_resumed_mid_epoch_erases_and_mixes_as_the_uninterrupted_one(tiny_imagenet):
    cfg = no_random_aug(make_cfg(tiny_imagenet))
    cfg.data.re_prob, cfg.data.mixup, cfg.data.cutmix = 0.5, 0.8, 1.0  # per batch: seeded by (seed, epoch, batch)
    full = batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4))[0], num_epochs=2)
    resumed = batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4, start_epoch=0, skip_steps=2))[0], num_epochs=2)
    assert_resumed_equal(resumed[0] + resumed[1], full[0][2:] + full[1])
    soft_labels = resumed[0][0][1]
    assert soft_labels.shape == (4, 3) and not np.array_equal(full[0][0][1], full[1][0][1])  # soft, new draws


def real_augmentation(cfg: Config) -> Config:
    """The configs' training augmentation (vit_b16.yaml's): random resized crop, flip, RandAugment, erasing, mixup /
    cutmix, in deterministic mode."""
    cfg.data.scale, cfg.data.ratio, cfg.data.hflip = [0.08, 1.0], [0.75, 1.333], 0.5
    cfg.data.auto_augment, cfg.data.re_prob = "randaug-m9-mstd0.5-inc1", 0.25
    cfg.data.mixup, cfg.data.cutmix = 0.8, 1.0
    cfg.train.deterministic = True
    return cfg


def assert_resumed_equal(resumed, full) -> None:
    assert len(resumed) == len(full)
    for (images, labels), (expected_images, expected_labels) in zip(resumed, full):
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)


def test_deterministic_resume_mid_epoch_crops_flips_and_mixes_as_the_uninterrupted_run(tiny_imagenet):
    cfg = real_augmentation(make_cfg(tiny_imagenet))
    full = batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4))[0], num_epochs=2)
    resumed = batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4, start_epoch=0, skip_steps=2))[0], num_epochs=2)
    assert_resumed_equal(resumed[0] + resumed[1], full[0][2:] + full[1])
    again = batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4, start_epoch=1))[0])
    assert_resumed_equal(again[0], full[1])
    cfg.train.seed += 1  # the crops are random: another seed, other crops of the same images
    assert not np.array_equal(batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4))[0])[0][0][0], full[0][0][0])


def test_train_shards_are_equal_and_disjoint(tiny_imagenet):
    cfg = no_random_aug(make_cfg(tiny_imagenet))
    for num_shards in (2, 5):
        shards = []
        for shard_id in range(num_shards):
            dataset, info = create_dataset(cfg.data, "train", Feed.of(cfg, 2, num_shards=num_shards, shard_id=shard_id))
            shards.append(signatures(batches(dataset)[0]))
            assert info.shard_samples == N_TRAIN // num_shards
        assert {len(s) for s in shards} == {N_TRAIN // num_shards // 2 * 2}
        assert len(set().union(*shards)) == sum(len(s) for s in shards)


def test_val_shards_cover_every_sample_exactly_once(tiny_imagenet):
    cfg = make_cfg(tiny_imagenet)
    full = sorted(signatures(batches(create_dataset(cfg.data, "val", Feed.of(cfg, 4))[0])[0]))
    sharded, counts = [], []
    for shard_id in range(5):
        dataset, info = create_dataset(cfg.data, "val", Feed.of(cfg, 2, num_shards=5, shard_id=shard_id))
        (epoch,) = batches(dataset)
        sharded += signatures(epoch)
        counts.append(sum(len(labels) for _, labels in epoch))
        assert info.steps_per_epoch == len(epoch)
    assert counts == [3, 3, 2, 2, 2]
    assert sorted(sharded) == full


def test_sampler_shards_partition_every_epoch():
    for shuffle in (True, False):
        samplers = [EpochSampler(11, shuffle=shuffle, seed=3, num_shards=3, shard_id=r, equal_shards=False)
                    for r in range(3)]
        for epoch in range(3):
            parts = [s.epoch_indices(epoch) for s in samplers]
            assert sorted(np.concatenate(parts).tolist()) == list(range(11))
    equal = [EpochSampler(11, shuffle=True, seed=3, num_shards=3, shard_id=r).epoch_indices(0) for r in range(3)]
    assert [len(p) for p in equal] == [3, 3, 3] and len(set(np.concatenate(equal).tolist())) == 9


def test_deterministic_augmentation_from_a_fresh_process(tiny_imagenet):
    script = textwrap.dedent(f"""
        import hashlib
        from vit_ms.config import Config
        from vit_ms.data import Feed, create_dataset
        from vit_ms.data.setup import prepare_data
        cfg = Config()
        cfg.data.root, cfg.model.image_size, cfg.train.deterministic = {str(tiny_imagenet)!r}, {SIZE}, True
        prepare_data(cfg.data, cfg.train.seed, cfg.train.deterministic)  # as a run's setup does
        dataset, _ = create_dataset(cfg.data, "train", Feed.of(cfg, 4))
        digest = hashlib.md5()
        for batch in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
            digest.update(batch[0].tobytes()); digest.update(batch[1].tobytes())
        print("DIGEST", digest.hexdigest())
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), GLOG_v="3")
    runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    digests = [next((line for line in out.splitlines() if line.startswith("DIGEST")), err[-2000:])
               for out, err in outputs]
    assert digests[0].startswith("DIGEST") and digests[0] == digests[1], digests


# ----------------------------------------------------------------------------------------------------------
# Batch mixing


def reference_mix(images, labels, seed, mixup_alpha, cutmix_alpha, prob, switch_prob, smoothing, classes):
    """timm's batch-mode Mixup / CutMix written out with numpy, drawing from the same RNG in the same order."""
    rng = np.random.default_rng(seed)
    out, lam = images.astype(np.float64), 1.0
    if rng.random() < prob:
        cut = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
        alpha = cutmix_alpha if cut else mixup_alpha
        lam = rng.beta(alpha, alpha)
        if cut:
            h, w = images.shape[-2:]
            ratio = np.sqrt(1 - lam)
            cy, cx = rng.integers(h), rng.integers(w)
            y0, y1 = max(cy - int(h * ratio) // 2, 0), min(cy + int(h * ratio) // 2, h)
            x0, x1 = max(cx - int(w * ratio) // 2, 0), min(cx + int(w * ratio) // 2, w)
            out[:, :, y0:y1, x0:x1] = images[::-1, :, y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            out = lam * images + (1 - lam) * images[::-1]
    off, on = smoothing / classes, 1 - smoothing + smoothing / classes
    onehot = np.full((len(labels), classes), off)
    onehot[np.arange(len(labels)), labels] = on
    return out, lam * onehot + (1 - lam) * onehot[::-1]


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
@pytest.mark.parametrize("seed", range(6))
def test_batch_mixup_matches_a_numpy_reference(mixup_alpha, cutmix_alpha, seed):
    images = np.random.default_rng(100 + seed).normal(size=(5, 3, 8, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1], dtype=np.int32)
    cfg = DataConfig(mixup=mixup_alpha, cutmix=cutmix_alpha, mixup_prob=0.9, mixup_switch_prob=0.5)
    mix = build_mixup(cfg, num_classes=4, label_smoothing=0.1)
    before = images.copy()
    mixed, soft = mix(images, labels, np.random.default_rng([seed]))
    expected, expected_soft = reference_mix(before, labels, [seed], mixup_alpha, cutmix_alpha, 0.9, 0.5, 0.1, 4)
    np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(soft, expected_soft, rtol=1e-5, atol=1e-6)
    assert mixed.dtype == np.float32 and soft.dtype == np.float32
    np.testing.assert_array_equal(images, before)  # the input batch is never written to
