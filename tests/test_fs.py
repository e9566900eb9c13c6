"""Small files written atomically (vit_ms.fs): a failed write (a full disk, a read-only rename) leaves the old file
whole, no temp file, and an OSError naming the file; on a real full disk (a tiny tmpfs) too."""
import errno
import os
from pathlib import Path

import pytest

from vit_ms.config_loader import load_config, save_config
from vit_ms.fs import atomic_writer, temp_path, write_text_atomic


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("old\n")
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
    with atomic_writer(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("where", ["write", "rename"])
def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, where):
    path = tmp_path / "classes.txt"
    path.write_text("cat\ndog\n")
    if where == "rename":
        def refuse(*args):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError) as caught:
        with atomic_writer(path) as f:
            f.write("bird\n")
            if where == "write":
                raise OSError(errno.ENOSPC, "No space left on device")  # what a write() on a full disk raises
    assert caught.value.filename == str(path)  # named, though write() names no file
    assert path.read_text() == "cat\ndog\n"
    assert not temp_path(path).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["classes.txt"]


def test_an_error_in_the_block_that_is_not_os_is_passed_on_untouched(tmp_path):
    with pytest.raises(KeyError):
        with atomic_writer(tmp_path / "x.txt") as f:
            f.write("half")
            raise KeyError("bug")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def full_disk(tmpfs):
    """A 256 KB tmpfs, filled up by the test: real ENOSPC from the kernel."""
    return tmpfs("256k")


def fill(folder: Path) -> None:
    """Write a file until the disk is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        with pytest.raises(OSError) as caught:
            while True:
                f.write(b"\0" * 4096)
    assert caught.value.errno == errno.ENOSPC


def test_save_config_on_a_full_disk_keeps_the_old_file_and_leaves_no_temp(full_disk):
    cfg = load_config(None, ["train.epochs=3"])
    path = full_disk / "config.yaml"
    save_config(cfg, path)
    before = path.read_text()
    fill(full_disk)
    with pytest.raises(OSError) as caught:
        save_config(load_config(None, ["train.epochs=7"]), path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_text() == before
    assert sorted(p.name for p in full_disk.iterdir()) == ["config.yaml", "filler"]


def test_a_picture_on_a_full_disk_keeps_the_old_one_and_leaves_no_temp(full_disk):
    from vit_ms.figures.canvas import new_figure, save_figure

    fig = new_figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    path = save_figure(fig, full_disk / "curves.png")
    before = path.read_bytes()
    fill(full_disk)
    with pytest.raises(OSError) as caught:
        save_figure(fig, path, dpi=200)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in full_disk.iterdir()) == ["curves.png", "filler"]
