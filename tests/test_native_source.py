"""vit_ms.data.native_source: the folder read by MindSpore's C++ reader gives what the Python reader gives."""
import json
import logging
import os

import numpy as np
import pytest

import vit_ms.data.native_source as native_source
import vit_ms.data.index_cache as index_cache
from test_data import (N_VAL, SIZE, batches, encoded, make_cfg, no_random_aug, noise_image, small_jpeg,
                       zero_middle)
from vit_ms.data import Feed, create_dataset, scan_split
from vit_ms.data.native_source import removed_file_error, write_manifest
from vit_ms.data.reading import SampleReader
from vit_ms.data.setup import prepare_data
from vit_ms.errors import DataError


def epoch_of(cfg, split: str, batch_size: int = 4, **kwargs):
    dataset, info = create_dataset(cfg.data, split, Feed.of(cfg, batch_size, **kwargs))
    (epoch,) = batches(dataset)
    return np.concatenate([b[0] for b in epoch]), np.concatenate([b[1] for b in epoch]), info


def reader_used(caplog) -> str:
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("reading the"))
    return "native" if "C++ reader" in line else "python"


@pytest.mark.parametrize("training", [False, True])
def test_native_and_python_readers_give_the_same_batches(tiny_imagenet, caplog, training):
    """tiny_imagenet alternates JPEG and PNG files: the JPEGs are read as they are, the PNGs from BMP copies."""
    out = {}
    for reader in ("native", "python"):
        cfg = make_cfg(tiny_imagenet, reader=reader, auto_augment="", re_prob=0.5, mixup=0.8, cutmix=1.0)
        no_random_aug(cfg)  # whole-image crops, no flips: each image is a fixed function of its file
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="vit_ms"):
            out[reader] = epoch_of(cfg, "train" if training else "val")
        assert reader_used(caplog) == reader
    (images, labels, info), (py_images, py_labels, _) = out["native"], out["python"]
    np.testing.assert_array_equal(images, py_images)  # same order, pixels, erasing and mixing
    np.testing.assert_array_equal(labels, py_labels)
    assert len(images) == (info.steps_per_epoch * 4 if training else N_VAL)


def test_native_shards_read_disjoint_samples_that_cover_the_split(tiny_imagenet):
    cfg = make_cfg(tiny_imagenet, reader="native")
    whole, whole_labels, _ = epoch_of(cfg, "val")
    shards = [epoch_of(cfg, "val", num_shards=2, shard_id=r) for r in range(2)]
    sig = lambda images: {img.tobytes() for img in images}  # noqa: E731
    assert not sig(shards[0][0]) & sig(shards[1][0])
    assert sig(shards[0][0]) | sig(shards[1][0]) == sig(whole)
    np.testing.assert_array_equal(shards[1][0], whole[1::2])  # shard r reads samples r, r + 2, ...
    np.testing.assert_array_equal(shards[1][1], whole_labels[1::2])


def test_auto_reads_with_python_when_many_files_need_pil(tiny_imagenet, caplog, monkeypatch):
    monkeypatch.setattr(native_source, "MIN_PIL_COPIES", 2)  # tiny_imagenet's 6 val PNGs are then too many
    for reader, expected in (("auto", "python"), ("native", "native")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="vit_ms"):
            cfg = make_cfg(tiny_imagenet, reader=reader)
            create_dataset(cfg.data, "val", Feed.of(cfg, 4))
        assert reader_used(caplog) == expected
        if reader == "auto":
            assert "6 of 12 images need PIL" in caplog.text and "python -m vit_ms.mindrecord" in caplog.text


def test_manifest_lines_name_each_file_and_label(tmp_path):
    paths = [str(tmp_path / "a b.jpg"), str(tmp_path / 'q"uote.png')]
    out = write_manifest(paths, [3, 0], tmp_path / "m.json")
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(line["source"], line["annotation"][0]["name"]) for line in lines] == [(paths[0], "3"), (paths[1], "0")]
    assert all(line["usage"] == "train" for line in lines)


def damage(path, how: str) -> None:
    if how == "zeroed":  # would kill the process in MindSpore's C++ decoder (SIGFPE)
        path.write_bytes(zero_middle(small_jpeg()))
    elif how == "text":  # ManifestDataset would leave it out: the epoch one sample short
        path.write_text("not an image any more")
    else:  # "empty": ManifestDataset would stop the run
        path.write_bytes(b"")


def test_files_damaged_before_the_reader_starts_are_replaced_and_named(tiny_imagenet, caplog):
    """Overwritten in place after a scan kept in the index cache (the folder's mtime need not change): each damaged
    file is read as the next usable sample, named in a warning, and the epoch keeps its size."""
    folder = tiny_imagenet / "val" / "class_0"
    files = {how: folder / f"{how}.jpg" for how in ("zeroed", "text", "empty")}
    for n, path in enumerate(files.values()):
        path.write_bytes(small_jpeg(seed=n))
    scan_split(tiny_imagenet, "val", cache_dir=index_cache.default_cache_dir())
    for how, path in files.items():
        damage(path, how)
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        cfg = make_cfg(tiny_imagenet, reader="native")
        dataset, info = create_dataset(cfg.data, "val", Feed.of(cfg, 3))
        (epoch,) = batches(dataset)
    assert info.num_samples == N_VAL + 3 and sum(len(labels) for _, labels in epoch) == N_VAL + 3
    for path in files.values():
        assert f"image file '{path}' changed after the split was scanned" in caplog.text
    labels = np.concatenate([labels for _, labels in epoch])  # each read as the next usable file: class_1's first
    np.testing.assert_array_equal(labels, [0] * 4 + [1] * (3 + 4) + [2] * 4)


def test_bytes_that_change_while_the_reader_runs_are_checked_and_replaced(tiny_imagenet, caplog):
    """The C++ reader's map op (`SampleReader.check_row`): bytes the scan saw pass as they are; other bytes are
    decoded by PIL first, and ones that no longer decode become the next sample, named."""
    index = scan_split(tiny_imagenet, "val")
    reader = SampleReader(index.samples, index.fingerprints, "skip", 10**6)
    first = np.fromfile(index.samples[0][0], np.uint8)
    out, label = reader.check_row(first, np.int32(0))
    assert out.tobytes() == first.tobytes() and label == 0
    redrawn = np.frombuffer(small_jpeg(seed=5), np.uint8)  # another usable JPEG: passes, checked
    assert reader.check_row(redrawn, np.int32(0))[0].tobytes() == redrawn.tobytes()
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        out, label = reader.check_row(np.frombuffer(zero_middle(small_jpeg()), np.uint8), np.int32(3))
    assert out.tobytes() == np.fromfile(index.samples[4][0], np.uint8).tobytes() or index.samples[4][0] in index.pil
    assert label == index.samples[4][1]
    assert f"image file '{index.samples[3][0]}' is unusable" in caplog.text and "next sample" in caplog.text
    strict = SampleReader(index.samples, index.fingerprints, "error", 10**6)
    with pytest.raises(DataError, match="changed after the split was scanned"):
        strict.check_row(np.frombuffer(b"text now", np.uint8), np.int32(0))


def test_on_bad_image_error_stops_at_a_file_damaged_after_the_scan(tiny_imagenet):
    zeroed = tiny_imagenet / "val" / "class_0" / "zeroed.jpg"
    zeroed.write_bytes(small_jpeg())
    cfg = make_cfg(tiny_imagenet, reader="native", on_bad_image="error")
    prepare_data(cfg.data)  # the run's setup: data.on_bad_image reaches the dataset engine
    dataset, _ = create_dataset(cfg.data, "val", Feed.of(cfg, 3))
    damage(zeroed, "zeroed")
    with pytest.raises(RuntimeError, match="zeroed.jpg' is unusable"):
        batches(dataset)
    with pytest.raises(DataError, match="zeroed.jpg' changed after the split was scanned"):  # the cached scan
        create_dataset(cfg.data, "val", Feed.of(cfg, 3))


def test_a_file_removed_while_the_reader_runs_stops_it_named(tiny_imagenet):
    vanished = tiny_imagenet / "val" / "class_0" / "vanished.jpg"
    vanished.write_bytes(small_jpeg())
    cfg = make_cfg(tiny_imagenet, reader="native")
    dataset, _ = create_dataset(cfg.data, "val", Feed.of(cfg, 3))
    os.unlink(vanished)
    with pytest.raises(RuntimeError, match="vanished.jpg") as failure:
        batches(dataset)
    error = removed_file_error(failure.value)  # what train.py shows instead of MindSpore's traceback
    assert isinstance(error, DataError) and f"'{vanished}' was removed after the reader started" in str(error)
    assert "--resume auto" in str(error) and removed_file_error(RuntimeError("other")) is None


def test_the_index_records_which_files_need_pil(tiny_imagenet):
    index = scan_split(tiny_imagenet, "val")
    assert index.pil == {p for p, _ in index.samples if p.endswith(".png")} and index.pil
    cmyk = tiny_imagenet / "val" / "class_2" / "cmyk.jpg"
    cmyk.write_bytes(encoded(noise_image(SIZE).convert("CMYK"), "JPEG"))
    assert str(cmyk) in scan_split(tiny_imagenet, "val").pil  # a changed folder is scanned again
