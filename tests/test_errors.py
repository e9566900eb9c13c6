"""Every user mistake the docs list: a one-paragraph `error: ...` naming the key or file, exit 2, no traceback.

Config mistakes stop before MindSpore is imported (a fraction of a second each); data, checkpoint and export
mistakes stop before a model is built. Each group is one parametrized subprocess test of the real entry script.
"""
import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy_vit import random_timm_state
from safetensors.numpy import save_file
from tiny import tiny_overrides

from vit_ms.errors import run_cli
from vit_ms.logs import setup_logging

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny_overrides(depth=1, num_classes=3) + ["train.batch_size=4", "data.num_parallel_workers=1",
                                                 "train.epochs=1", "run_name=r"]


def run(*args, timeout=180):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "GLOG_v": "3"})


def settings(*items):
    return [arg for item in items for arg in ("--set", item)]


def assert_user_error(proc, *fragments):
    """Exit 2, one `error:` paragraph (the last stderr line) holding every fragment, no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in last, f"{fragment!r} not in {last!r}"


# ----------------------------------------------------------------------------------------------------------
# Config values that make no sense: refused at validation, named by key.


@pytest.mark.parametrize("item, fragments", [
    ("model.embed_dim=33", ["model.embed_dim=33 is not divisible by model.num_heads=2", "e.g. 32"]),
    ("model.in_channels=1", ["unknown config key 'model.in_channels'", "was removed", "RGB"]),
    ("optim.lr=inf", ["config key 'optim.lr' is inf", "finite number"]),
    ("data.ratio=[1.333, 0.75]", ["data.ratio=[1.333, 0.75]", "0 < min <= max"]),
    ("data.hflip=5", ["data.hflip=5.0 is a probability", "[0, 1]"]),
    ("data.re_prob=-3", ["data.re_prob=-3.0 is a probability", "[0, 1]"]),
    ("model.depth=0", ["model.depth=0 must be at least 1"]),
])
def test_nonsense_config_values_are_refused_by_key(tmp_path, item, fragments):
    proc = run("train.py", "--config", "demo.yaml", *settings(f"output_dir={tmp_path}", *TINY, item))
    assert_user_error(proc, *fragments)
    assert not (tmp_path / "r").exists()  # refused before the run directory is made


def test_non_utf8_yaml_names_the_file_and_the_byte(tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("train:\n  epochs: 1  # caf\u00e9\n".encode("latin-1"))
    proc = run("train.py", "--config", config, *settings(f"output_dir={tmp_path}"))
    assert_user_error(proc, f"config file '{config}' is not UTF-8 text", "byte 0xe9", "save it as UTF-8")


@pytest.mark.parametrize("env, items, fragments", [
    ({"DEVICE_ID": "abc"}, [], ["environment variable DEVICE_ID='abc' must be a whole number", "unset it"]),
    ({"RANK_TABLE_FILE": "/x.json", "RANK_SIZE": "two"}, [], ["RANK_SIZE='two' must be a whole number"]),
    ({}, ["model.image_size=100000", "model.patch_size=16"],
     ["100000 at patch 16 is 39,062,501 tokens", "GiB", "more than any one device holds"]),
])
def test_environment_and_sizes_no_run_can_take_are_refused_before_a_model_is_built(tmp_path, env, items, fragments):
    proc = subprocess.run([sys.executable, "train.py", "--config", "demo.yaml",
                           *settings(f"output_dir={tmp_path}", *TINY, *items)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "GLOG_v": "3", **env})
    assert_user_error(proc, *fragments)


# ----------------------------------------------------------------------------------------------------------
# Datasets: refused before a model is built.


def dataset(root: Path, classes: int = 3) -> Path:
    from vit_ms.data.demo import write_synthetic_folder

    return write_synthetic_folder(root, num_classes=classes, train_per_class=4, val_per_class=1, image_size=32,
                                  seed=0)


@pytest.mark.parametrize("case", ["root_is_a_file", "non_utf8_class_folder", "one_class"])
def test_dataset_mistakes(tmp_path, case):
    if case == "root_is_a_file":
        root = tmp_path / "data.tar"
        root.write_bytes(b"an archive, say")
        fragments = [f"data.root '{root}' is a file, not a folder", "extract it first"]
    elif case == "non_utf8_class_folder":
        # Decision: refused, with the folder named (class names are recorded as UTF-8 in checkpoints and
        # classes.txt, so a name that cannot be written as UTF-8 cannot travel with the weights).
        root = dataset(tmp_path / "data")
        for split in ("train", "val"):
            os.rename(os.fsencode(root / split / "class_1"), os.fsencode(root / split) + b"/caf\xe9")
        fragments = ["class folder 'caf\\xe9'", f"in '{root / 'train'}'", "not valid UTF-8", "b'caf\\xe9'",
                     "Rename the folder"]
    else:
        root = dataset(tmp_path / "data", classes=1)
        fragments = [f"'{root / 'train'}' has only one class folder ('class_0')", "at least 2 classes"]
    extra = ["model.num_classes=1"] if case == "one_class" else []
    proc = run("train.py", "--config", "demo.yaml", *settings(f"data.root={root}", f"output_dir={tmp_path / 'runs'}",
                                                              *TINY, *extra))
    assert_user_error(proc, *fragments)
    assert not (tmp_path / "runs" / "r" / "classes.txt").exists()


# ----------------------------------------------------------------------------------------------------------
# Files given in the wrong place: checkpoints, exports, weights.


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A checkpoint as train.py writes it (config and class names inside), written directly."""
    from tiny_run import write_tiny_run

    return write_tiny_run(tmp_path_factory.mktemp("run")).ckpt_a


def test_export_out_under_a_file_or_an_unwritable_place(tiny_ckpt, tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file\n")
    proc = run("-m", "vit_ms.export", "--ckpt", tiny_ckpt, "--format", "mindir", "--out", blocker / "m.mindir")
    assert_user_error(proc, f"cannot write --out '{blocker / 'm.mindir'}'", f"'{blocker}' is a file, not a folder")
    proc = run("-m", "vit_ms.export", "--ckpt", tiny_ckpt, "--format", "mindir", "--out", "/proc/vit_ms/m.mindir")
    assert_user_error(proc, "cannot write --out '/proc/vit_ms/m.mindir'", "choose a writable folder")
    proc = run("-m", "vit_ms.export", "--ckpt", tiny_ckpt, "--format", "mindir", "--out", tmp_path)
    assert_user_error(proc, f"--out '{tmp_path}' is a folder", f"e.g. --out {tmp_path / 'a.mindir'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written, no probe left


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_export_out_in_a_read_only_folder(tiny_ckpt, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    proc = run("-m", "vit_ms.export", "--ckpt", tiny_ckpt, "--format", "mindir", "--out", locked / "m.mindir")
    assert_user_error(proc, "cannot write --out", "Permission denied")


def test_truncated_safetensors_is_named(tmp_path):
    good = tmp_path / "model.safetensors"
    save_file(random_timm_state(np.random.default_rng(0), 32, 1, 2, 8, 4, 10), str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    proc = run("-m", "vit_ms.convert", "--src", cut, "--model", "vit_ti16", "--out", tmp_path / "x.ckpt")
    assert_user_error(proc, f"weights file '{cut}'", "is truncated, corrupt or not a .safetensors file",
                      f"delete it (rm '{cut}') and the next run downloads it again", "download or copy it again")


@pytest.mark.parametrize("case", ["mindir_to_resume", "directory_as_checkpoint", "directory_to_eval"])
def test_checkpoint_given_as_the_wrong_kind_of_file(tiny_ckpt, tmp_path, case):
    if case == "mindir_to_resume":
        exported = tmp_path / "best.mindir"
        exported.write_bytes(b"\x00mindir")
        args = ["train.py", "--config", "demo.yaml", *settings(f"output_dir={tmp_path}", *TINY), "--resume", exported]
        fragments = [f"'{exported}' is an exported MINDIR file, not a training checkpoint", "infer.py --model"]
    elif case == "directory_as_checkpoint":
        args = ["train.py", "--config", "demo.yaml", *settings(f"output_dir={tmp_path}", *TINY), "--resume",
                tiny_ckpt.parent]
        fragments = [f"checkpoint '{tiny_ckpt.parent}' is a directory", "last.ckpt"]
    else:
        args = ["eval.py", "--ckpt", tiny_ckpt.parent]
        fragments = [f"checkpoint '{tiny_ckpt.parent}' is a directory"]
    proc = run(*args)
    assert_user_error(proc, *fragments)
    assert "does not exist" not in proc.stderr and "corrupt" not in proc.stderr


# ----------------------------------------------------------------------------------------------------------
# The machine around the run: a full disk, a read-only or missing folder. One paragraph, exit 2, in train.log too.


@pytest.mark.parametrize("code, fragments", [
    (errno.ENOSPC, ["no space left on the device at '/runs/r/config.yaml'", "ENOSPC", "free space", "--resume auto"]),
    (errno.EDQUOT, ["the disk quota is used up at '/runs/r/config.yaml'", "EDQUOT", "raise the quota"]),
    (errno.EROFS, ["the file system is read-only at '/runs/r/config.yaml'", "EROFS", "--set output_dir=<dir>"]),
    (errno.EACCES, ["permission denied at '/runs/r/config.yaml'", "EACCES", "make the folder writable"]),
    (errno.ENOENT, ["no such file or folder at '/runs/r/config.yaml'", "ENOENT", "check the path"]),
    (errno.EXDEV, ["at '/runs/r/config.yaml'", "EXDEV", "check the path and the device"]),
])
def test_os_errors_are_one_paragraph_and_debug_keeps_the_traceback(code, fragments, capsys):
    def main(argv):
        raise OSError(code, os.strerror(code), "/runs/r/config.yaml")

    assert run_cli(main, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err, err
    with pytest.raises(OSError):
        run_cli(main, ["--debug"])


def test_an_os_error_without_errno_is_a_bug_and_keeps_its_traceback():
    def main(argv):
        raise OSError("image file is truncated")  # Pillow's kind: not the machine's

    with pytest.raises(OSError):
        run_cli(main, [])


def test_the_error_is_the_last_line_of_the_run_log(tmp_path, capsys):
    def main(argv):
        setup_logging(tmp_path, 0)
        logging.getLogger("vit_ms").info("plan: ...")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "config.yaml"))

    try:
        assert run_cli(main, []) == 2
    finally:
        setup_logging(None, 0)
    printed = capsys.readouterr().err.strip().splitlines()
    lines = (tmp_path / "train.log").read_text().strip().splitlines()
    assert lines[-1].endswith(printed[-1]) and " ERROR error: no space left on the device at " in lines[-1]
    assert printed.count(printed[-1]) == 1  # printed once, not again by the console handler


def test_a_log_file_on_a_full_disk_says_so_once(tmp_path, capsys, monkeypatch):
    setup_logging(tmp_path, 0)
    handler = next(h for h in logging.getLogger("vit_ms").handlers if isinstance(h, logging.FileHandler))

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(handler, "flush", full)
    try:
        for i in range(3):
            logging.getLogger("vit_ms").info("line %d", i)
    finally:
        setup_logging(None, 0)
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    assert err.count(f"warning: cannot write to the log file '{tmp_path / 'train.log'}'") == 1


def test_a_failed_checkpoint_save_leaves_no_partial_file_of_ours_or_mindspores(tmp_path, monkeypatch):
    import mindspore as ms

    from vit_ms.errors import CheckpointError
    from vit_ms.train.checkpoint import TrainState, save_checkpoint

    def full_disk(network, name, **kwargs):
        Path(name).write_bytes(b"")  # what MindSpore leaves: .best.partial.tmp, and ours
        Path(name).with_suffix(".tmp").write_bytes(b"\0" * 10)
        raise RuntimeError("Failed to save the checkpoint file")

    monkeypatch.setattr(ms, "save_checkpoint", full_disk)
    (tmp_path / "best.ckpt").write_bytes(b"old")
    with pytest.raises(CheckpointError, match="The previous checkpoint is unchanged"):
        save_checkpoint(object(), tmp_path / "best.ckpt", TrainState())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]
    assert (tmp_path / "best.ckpt").read_bytes() == b"old"


@pytest.fixture
def small_disk(tmpfs):
    """A 32 MB tmpfs: a run fits, then a filler makes ENOSPC real."""
    return tmpfs("32m")


@pytest.mark.slow
def test_resume_on_a_disk_that_is_still_full_is_one_paragraph_and_leaves_no_temp_file(tiny_imagenet, small_disk):
    args = ["train.py", "--config", "demo.yaml",
            *settings(f"data.root={tiny_imagenet}", f"output_dir={small_disk}", *TINY)]
    first = run(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = small_disk / "r"
    def files():  # all but the log and the lock, which a start rewrites
        return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name not in ("train.log", ".lock")}

    before = files()
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        with pytest.raises(OSError, match="No space left"):
            while True:
                f.write(b"\0" * 4096)
        os.ftruncate(f.fileno(), os.fstat(f.fileno()).st_size - 4096)  # one page free: the lock's record fits
    proc = run(*args, "--set", "train.epochs=2", "--resume", "auto", "--allow-changes")
    assert_user_error(proc, f"no space left on the device at '{run_dir / 'config.yaml'}'", "ENOSPC",
                      "--resume auto")
    assert "Logging error" not in proc.stderr
    assert files() == before  # every earlier file whole; no temp or partial file beside them
    if "cannot write to the log file" not in proc.stderr:  # the log's last page had room for its lines
        log = (run_dir / "train.log").read_text().strip().splitlines()
        assert log[-1].endswith(proc.stderr.strip().splitlines()[-1])
    filler.unlink()
    again = run(*args, "--set", "train.epochs=2", "--resume", "auto", "--allow-changes")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in (run_dir / "train.log").read_text()


def test_convert_to_timm_onto_a_file_names_the_file_and_asks_for_a_folder(tiny_ckpt, tmp_path):
    blocker = tmp_path / "vit.safetensors"
    blocker.write_bytes(b"not a folder")
    proc = run("-m", "vit_ms.convert", "--to", "timm", tiny_ckpt, blocker)
    assert_user_error(proc, f"'{blocker}' is a file; --to timm writes a folder",
                      f"e.g. '{tmp_path / 'vit_timm'}'")
    assert "File exists" not in proc.stderr and blocker.read_bytes() == b"not a folder"
