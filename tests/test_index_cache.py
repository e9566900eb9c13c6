"""vit_ms.data.index_cache: the folder scan is kept, reused, re-done for changed class folders or on request."""
import json
import logging
import os
import shutil

import pytest

import vit_ms.data.folder as folder
from vit_ms.config import Config
from vit_ms.data import Feed, create_dataset, scan_split
from vit_ms.data.index_cache import cache_file, resolve_cache_dir
from vit_ms.errors import DataError

N_TRAIN = 24  # tiny_imagenet: 3 classes x 8 train images


@pytest.fixture
def counted(monkeypatch):
    """Counts check_image calls (the per-file work the cache saves); returns the list of checked paths."""
    calls = []
    real = folder.check_image

    def check(path, max_pixels):
        calls.append(path)
        return real(path, max_pixels)

    monkeypatch.setattr(folder, "check_image", check)
    return calls


def scan(root, cache, **kwargs):
    return scan_split(root, "train", "skip", 10_000, cache_dir=cache, **kwargs)


def test_second_scan_reuses_the_index_without_checking_files(tiny_imagenet, tmp_path, counted):
    cache = tmp_path / "cache"
    first = scan(tiny_imagenet, cache)
    assert len(counted) == N_TRAIN and len(first.samples) == N_TRAIN
    counted.clear()
    second = scan(tiny_imagenet, cache)
    assert counted == []
    assert second.samples == first.samples and second.classes == first.classes and second.bad == first.bad
    files = os.listdir(cache)
    assert files == [cache_file(cache, tiny_imagenet / "train").name]  # one file, no temporary left behind
    assert json.loads((cache / files[0]).read_text())["split_dir"] == str(tiny_imagenet / "train")


def test_bad_files_are_remembered_and_still_reported(tiny_imagenet, tmp_path, counted):
    cache = tmp_path / "cache"
    bad = tiny_imagenet / "train" / "class_2" / "broken.jpg"
    bad.write_bytes(b"not a jpeg" * 20)
    first = scan(tiny_imagenet, cache)
    counted.clear()
    second = scan(tiny_imagenet, cache)
    assert counted == [] and second.bad == first.bad == [(str(bad), first.bad[0][1])]
    with pytest.raises(DataError, match="not a readable image") as err:
        scan_split(tiny_imagenet, "train", "error", 10_000, cache_dir=cache)
    assert counted == [] and str(bad) in str(err.value)


def test_a_changed_class_folder_is_scanned_again_alone(tiny_imagenet, tmp_path, counted):
    cache = tmp_path / "cache"
    scan(tiny_imagenet, cache)
    class_1 = tiny_imagenet / "train" / "class_1"
    shutil.copy(class_1 / "0000.jpg", class_1 / "0100.jpg")  # added
    os.unlink(class_1 / "0001.png")  # removed
    counted.clear()
    index = scan(tiny_imagenet, cache)
    assert sorted(counted) == sorted(str(p) for p in class_1.iterdir())  # only the changed class, all its files
    paths = [p for p, _ in index.samples]
    assert str(class_1 / "0100.jpg") in paths and str(class_1 / "0001.png") not in paths
    assert len(paths) == N_TRAIN


def test_a_file_added_in_a_nested_folder_is_found(tiny_imagenet, tmp_path, counted):
    cache = tmp_path / "cache"
    nested = tiny_imagenet / "train" / "class_0" / "more"
    nested.mkdir()
    scan(tiny_imagenet, cache)
    shutil.copy(tiny_imagenet / "train" / "class_0" / "0000.jpg", nested / "x.jpg")  # only 'more' changes
    counted.clear()
    index = scan(tiny_imagenet, cache)
    assert str(nested / "x.jpg") in counted and len(counted) == 9
    assert (str(nested / "x.jpg"), 0) in index.samples


def test_rescan_and_other_settings_check_every_file(tiny_imagenet, tmp_path, counted):
    cache = tmp_path / "cache"
    scan(tiny_imagenet, cache)
    counted.clear()
    scan(tiny_imagenet, cache, rescan=True)
    assert len(counted) == N_TRAIN
    counted.clear()
    scan_split(tiny_imagenet, "train", "skip", 20_000, cache_dir=cache)  # verdicts depend on max_pixels
    assert len(counted) == N_TRAIN


def test_unreadable_cache_file_is_ignored_with_a_warning(tiny_imagenet, tmp_path, counted, caplog):
    cache = tmp_path / "cache"
    first = scan(tiny_imagenet, cache)
    cache_file(cache, tiny_imagenet / "train").write_text("{not json")
    counted.clear()
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        again = scan(tiny_imagenet, cache)
    assert len(counted) == N_TRAIN and again.samples == first.samples
    assert "unreadable index cache" in caplog.text
    counted.clear()
    scan(tiny_imagenet, cache)
    assert counted == []  # rewritten


def test_create_dataset_uses_the_cache_and_data_rescan(tiny_imagenet, tmp_path, counted):
    cfg = Config()
    cfg.data.root, cfg.model.image_size, cfg.data.num_parallel_workers = str(tiny_imagenet), 32, 1
    cfg.data.index_cache_dir = str(tmp_path / "idx")
    create_dataset(cfg.data, "train", Feed.of(cfg, 4))
    assert len(counted) == N_TRAIN and len(os.listdir(tmp_path / "idx")) == 1
    counted.clear()
    create_dataset(cfg.data, "train", Feed.of(cfg, 4))
    assert counted == []
    cfg.data.rescan = True
    create_dataset(cfg.data, "train", Feed.of(cfg, 4))
    assert len(counted) == N_TRAIN
    cfg.data.rescan, cfg.data.index_cache_dir = False, "off"
    counted.clear()
    create_dataset(cfg.data, "train", Feed.of(cfg, 4))
    assert len(counted) == N_TRAIN


def test_resolve_cache_dir(tmp_path, index_cache_in_tmp):
    assert resolve_cache_dir("") == index_cache_in_tmp
    assert resolve_cache_dir("off") is None
    assert resolve_cache_dir(str(tmp_path)) == tmp_path
