"""Every user mistake the docs list: a one-paragraph `error: ...` naming the key or file, exit 2, no traceback.

Config mistakes stop before MindSpore is imported (a fraction of a second each); data, checkpoint and export
mistakes stop before a model is built. Each group is one parametrized subprocess test of the real entry script.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy_vit import random_timm_state
from safetensors.numpy import save_file
from tiny import tiny_overrides

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
