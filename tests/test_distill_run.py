"""A demo-sized distilled run: a tiny teacher trained by train.py, then a distilled student (with mixup, EMA and
gradient accumulation) that trains, resumes into a second epoch and ends where an uninterrupted run ends."""
import json

import numpy as np
import pytest
from test_train import records, run, weights
from tiny import tiny_overrides

COMMON = ["train.batch_size=4", "data.num_parallel_workers=1", "train.log_interval=1", "data.scale=[1.0, 1.0]",
          "data.ratio=[1.0, 1.0]", "train.deterministic=true"]


def args(data_root, out, name, *sets):
    flat = []
    for item in [f"data.root={data_root}", f"output_dir={out}", f"run_name={name}", *COMMON, *sets]:
        flat += ["--set", item]
    return ["--config", "demo.yaml", *flat]


@pytest.mark.slow
def test_distilled_student_trains_from_a_trained_teacher_and_resumes(tiny_imagenet, tmp_path):
    run("train.py", *args(tiny_imagenet, tmp_path, "teacher", *tiny_overrides(depth=1, num_classes=3),
                          "train.epochs=2"))
    teacher = tmp_path / "teacher" / "last.ckpt"
    student = [*tiny_overrides(depth=1, num_classes=3, distilled="true"), "distill.type=hard",
               f"distill.teacher={teacher}", "data.mixup=0.8", "train.ema=true", "train.ema_decay=0.9",
               "train.accum_steps=2",
               "optim.warmup_epochs=0", "optim.lr=2.0e-3", "optim.min_lr=2.0e-3"]  # lr independent of train.epochs
    first = run("train.py", *args(tiny_imagenet, tmp_path, "student", *student, "train.epochs=1"))
    assert f"distill.teacher: {teacher}" in first.stderr + first.stdout
    resumed = run("train.py", *args(tiny_imagenet, tmp_path, "student", *student, "train.epochs=2"),
                  "--resume", "auto")
    assert "resumed from" in resumed.stderr + resumed.stdout
    run("train.py", *args(tiny_imagenet, tmp_path, "straight", *student, "train.epochs=2"))

    run_dir = tmp_path / "student"
    assert [r["step"] for r in records(run_dir)] == [r["step"] for r in records(tmp_path / "straight")] == [3, 6]
    saved, straight = weights(run_dir / "last.ckpt"), weights(tmp_path / "straight" / "last.ckpt")
    assert {"dist_token", "head_dist.weight", "ema.head_dist.weight"} <= set(saved)
    assert not any(k.startswith("distill_teacher.") for k in saved)  # the teacher's weights stay in its own file
    model_keys = [k for k in straight if not k.startswith("vit_ms_")]
    assert max(np.abs(saved[k] - straight[k]).max() for k in model_keys) <= 1e-5
    assert "type: hard" in (run_dir / "config.yaml").read_text()
    out = run("eval.py", "--ckpt", str(run_dir / "last.ckpt"))  # inference averages the two heads
    assert json.loads(out.stdout.strip().splitlines()[-1])["num_images"] == 12


def test_a_teacher_of_other_class_names_is_refused_naming_the_first_difference(tmp_path, monkeypatch):
    """Folders d0..d9 (holding the digits 9..0) against the student's 0..9: the same number of classes, other
    names; train.py refuses the teacher before the first step, naming class 0 of each list."""
    from vit_ms.config import config_to_dict
    from vit_ms.config_loader import load_config
    from vit_ms.data.demo import write_synthetic_folder
    from vit_ms.models import VisionTransformer, resolve_architecture
    from vit_ms.train.checkpoint import TrainState, save_checkpoint
    from vit_ms.weights.checkpoint import CheckpointMeta

    data = write_synthetic_folder(tmp_path / "digits", num_classes=10, train_per_class=2, val_per_class=1,
                                  image_size=32, seed=0)
    for split in ("train", "val"):
        for i in range(10):
            (data / split / f"class_{i}").rename(data / split / str(i))
    teacher_cfg = load_config(None, tiny_overrides(depth=1, num_classes=10))
    teacher = tmp_path / "teacher.ckpt"
    save_checkpoint(VisionTransformer(resolve_architecture(teacher_cfg.model)), teacher, TrainState(),
                    CheckpointMeta(config_to_dict(teacher_cfg), None, [f"d{i}" for i in range(10)]))
    sets = [*tiny_overrides(depth=1, num_classes=10), "distill.type=hard", f"distill.teacher={teacher}",
            "train.mode=pynative", "train.epochs=1"]
    proc = run("train.py", *args(data, tmp_path, "student", *sets), check=False)  # its own process: train.py
    assert proc.returncode == 2, proc.stderr  # blocks SIGTERM/SIGINT for the watcher thread, which children inherit
    assert "class 0 is 'd0' for the teacher but '0' for the student" in proc.stderr
    assert not list((tmp_path / "student").glob("*.ckpt"))  # refused before anything was trained


def test_a_distilled_model_without_a_teacher_records_its_class_head_alone(tiny_imagenet, tmp_path):
    """DeiT's distilled ViT trained without a teacher: the checkpoint says only the class head was trained, and
    the epoch's evaluation scores what eval.py scores (the class head alone)."""
    from vit_ms.inference.evaluate import run_evaluation
    from vit_ms.weights.checkpoint import read_checkpoint, read_meta

    sets = [*tiny_overrides(depth=1, num_classes=3, distilled="true"), "train.mode=pynative", "train.epochs=1"]
    run("train.py", *args(tiny_imagenet, tmp_path, "alone", *sets))
    last = tmp_path / "alone" / "last.ckpt"
    assert read_meta(read_checkpoint(last)).trained_heads == ["head"]
    assert json.loads(read_checkpoint(last)["vit_ms_trained_heads"]) == ["head"]
    epoch = records(tmp_path / "alone")[-1]
    scored = run_evaluation(str(last), overrides=["train.mode=pynative"]).metrics
    assert scored["top1"] == pytest.approx(epoch["val_top1"]) and scored["loss"] == pytest.approx(epoch["val_loss"],
                                                                                                    rel=1e-4)
