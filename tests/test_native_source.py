"""vit_ms.data.native_source: the folder read by MindSpore's C++ reader gives what the Python reader gives."""
import json
import logging
import os

import numpy as np
import pytest

import vit_ms.data.native_source as native_source
from test_data import N_VAL, SIZE, batches, encoded, make_cfg, no_random_aug, noise_image, write_bad
from vit_ms.data import Feed, create_dataset, scan_split
from vit_ms.data.setup import prepare_data
from vit_ms.data.native_source import removed_file_error, write_manifest
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
            assert "6 of 12 images need PIL" in caplog.text and "python -m vit_ms.data.mindrecord" in caplog.text


def test_manifest_lines_name_each_file_and_label(tmp_path):
    paths = [str(tmp_path / "a b.jpg"), str(tmp_path / 'q"uote.png')]
    out = write_manifest([(paths[0], 3), (paths[1], 0)], {paths[1]: "/copies/0.bmp"}, tmp_path / "m.json")
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(line["source"], line["annotation"][0]["name"]) for line in lines] == [(paths[0], "3"),
                                                                                  ("/copies/0.bmp", "0")]
    assert all(line["usage"] == "train" for line in lines)


def test_a_jpeg_that_stops_decoding_is_replaced_and_named(tiny_imagenet, capfd, monkeypatch, tmp_path):
    """After the scan: a JPEG whose frame header is zeroed is replaced by a healthy sample (MindSpore's warning names
    it) with data.on_bad_image=skip, and stops the epoch with error; a removed file stops it, named."""
    monkeypatch.chdir(tmp_path)  # MindSpore's decoder dumps a file it fails on to ./abnormal_image.jpg
    folder = tiny_imagenet / "val" / "class_0"
    broken = folder / "broken.jpg"
    broken.write_bytes(encoded(noise_image(40), "JPEG"))
    for on_bad_image in ("skip", "error"):
        cfg = make_cfg(tiny_imagenet, reader="native", on_bad_image=on_bad_image)
        prepare_data(cfg.data)  # the run's setup tells MindSpore to replace (skip) or raise (error)
        dataset, info = create_dataset(cfg.data, "val", Feed.of(cfg, 3))
        data = bytearray(broken.read_bytes())
        sof = data.index(b"\xff\xc0")
        data[sof + 4:sof + 40] = bytes(36)
        broken.write_bytes(bytes(data))
        if on_bad_image == "skip":
            (epoch,) = batches(dataset)
            assert sum(len(labels) for _, labels in epoch) == info.num_samples == N_VAL + 1
            assert f"The corresponding data file is: {broken}" in capfd.readouterr().err
            assert (tmp_path / "abnormal_image.jpg").is_file()
        else:
            with pytest.raises(RuntimeError, match="broken.jpg"):
                batches(dataset)
        broken.write_bytes(encoded(noise_image(40), "JPEG"))
    cfg = make_cfg(tiny_imagenet, reader="native")
    prepare_data(cfg.data)
    dataset, _ = create_dataset(cfg.data, "val", Feed.of(cfg, 3))
    os.unlink(broken)
    with pytest.raises(RuntimeError, match="broken.jpg") as failure:
        batches(dataset)
    error = removed_file_error(failure.value)  # what train.py shows instead of MindSpore's traceback
    assert isinstance(error, DataError) and f"image file '{broken}' was removed" in str(error)
    assert "--resume auto" in str(error) and removed_file_error(RuntimeError("other")) is None


def test_a_file_pil_cannot_copy_is_left_to_mindspore_and_replaced(tiny_imagenet, caplog, capfd, monkeypatch, tmp_path):
    """A PNG whose data is damaged passes the header scan; PIL fails on it while copying, MindSpore's decoder then
    fails too and replaces it (skip), so the epoch keeps its size and both logs name the file."""
    monkeypatch.chdir(tmp_path)
    corrupt = write_bad(tiny_imagenet / "val" / "class_0", "corrupt_data")
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        cfg = make_cfg(tiny_imagenet, reader="native")
        prepare_data(cfg.data)
        dataset, info = create_dataset(cfg.data, "val", Feed.of(cfg, 4))
    assert f"PIL cannot decode image file '{corrupt}'" in caplog.text and info.num_samples == N_VAL + 1
    (epoch,) = batches(dataset)
    assert sum(len(labels) for _, labels in epoch) == N_VAL + 1
    assert f"The corresponding data file is: {corrupt}" in capfd.readouterr().err


def test_the_index_records_which_files_need_pil(tiny_imagenet):
    index = scan_split(tiny_imagenet, "val")
    assert index.pil == {p for p, _ in index.samples if p.endswith(".png")} and index.pil
    cmyk = tiny_imagenet / "val" / "class_2" / "cmyk.jpg"
    cmyk.write_bytes(encoded(noise_image(SIZE).convert("CMYK"), "JPEG"))
    assert str(cmyk) in scan_split(tiny_imagenet, "val").pil  # a changed folder is scanned again
