"""Shared fixtures.

`tiny_imagenet`: a fresh ImageNet-layout folder per test, 3 classes x 8 train / 4 val images of 32x32,
JPEG and PNG mixed, whose class is learnable from colour and stripes:

    <root>/train/class_{0,1,2}/{0000..0007}.{jpg,png}
    <root>/val/class_{0,1,2}/{0000..0003}.{jpg,png}

Point a config at it with `cfg.data.root = str(tiny_imagenet)` and `cfg.model.image_size = 32`.
"""
import os
import signal
import subprocess
from pathlib import Path

import mindspore as ms
import pytest

from vit_ms.data.demo import write_synthetic_folder


@pytest.fixture
def tiny_imagenet(tmp_path: Path) -> Path:
    return write_synthetic_folder(tmp_path / "tiny_imagenet", num_classes=3, train_per_class=8, val_per_class=4,
                                  image_size=32, seed=0)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: launches several processes for tens of seconds; still part of the "
                                       "default run (deselect with -m 'not slow')")


@pytest.fixture(autouse=True)
def keep_mindspore_mode():
    """Restore MindSpore's execution mode and the dataset engine's bad-sample mode after every test: training,
    infer and export switch to graph mode, where a later test's cell with a custom bprop would be compiled as a
    graph, and a run with data.on_bad_image=skip would make a later test's damaged file pass unnoticed."""
    mode, bad_samples = ms.get_context("mode"), ms.dataset.config.get_error_samples_mode()
    yield
    ms.set_context(mode=mode)
    ms.dataset.config.set_error_samples_mode(bad_samples)  # data.on_bad_image's setting, made by prepare_data


@pytest.fixture(autouse=True)
def index_cache_in_tmp(tmp_path_factory, monkeypatch):
    """The folder-scan index cache of in-process tests goes to a temporary folder, not ~/.cache/vit_ms/index."""
    import vit_ms.data.index_cache as index_cache

    folder = tmp_path_factory.mktemp("index_cache")
    monkeypatch.setattr(index_cache, "default_cache_dir", lambda: folder)
    return folder


@pytest.fixture(autouse=True)
def signals_left_as_found():
    """A test that runs train.py's main() in this process starts its signal watcher, which blocks SIGTERM/SIGINT
    in the whole process for good (and in every child it starts): later tests of the graceful stop then see no
    signal. Such a test runs train.py in its own process, or patches vit_ms.train.stopping.watch_stop_signals."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == blocked, "the test left SIGTERM/SIGINT blocked"


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs("32m") -> a fresh tmpfs of that size under tmp_path, unmounted after the test: a disk that fills up
    for real (the kernel's ENOSPC). Skipped where mounting is not allowed."""
    mounted = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)
