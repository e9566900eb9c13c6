"""train.py / eval.py end to end in real subprocesses: run directory, resume, kill and resume, faults."""
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny_overrides(depth=1, num_classes=3) + ["train.batch_size=4", "data.num_parallel_workers=1",
                                                 "train.log_interval=1"]
# No random augmentation, so a resumed run sees exactly the images an uninterrupted one does.
FIXED_DATA = ["data.scale=[1.0, 1.0]", "data.ratio=[1.0, 1.0]", "train.deterministic=true"]


def run(script, *args, check=True, timeout=300):
    cmd = [sys.executable, str(ROOT / script), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def overrides(data_root, out, *extra):
    args = []
    for item in [f"data.root={data_root}", f"output_dir={out}", "run_name=r", *TINY, *extra]:
        args += ["--set", item]
    return args


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(path):
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if not isinstance(v, str)}


def test_train_eval_infer_end_to_end(tiny_imagenet, tmp_path):
    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path, "train.epochs=2",
                                                       "checkpoint.keep_last=1"))
    run_dir = tmp_path / "r"
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["best.ckpt", "classes.txt", "config.yaml", "epoch_0002.ckpt", "last.ckpt", "metrics.jsonl",
                     "plan.json", "train.log"]
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["formulation"]["backward"] == "handwritten" and plan["global_batch_size"] == 4
    assert (run_dir / "classes.txt").read_text().split() == ["class_0", "class_1", "class_2"]
    recs = records(run_dir)
    assert [r["epoch"] for r in recs] == [1, 2] and [r["step"] for r in recs] == [6, 12]
    for key in ["lr", "train_loss", "val_top1", "val_top5", "val_loss", "images_per_sec", "epoch_seconds"]:
        assert all(np.isfinite(r[key]) for r in recs), key
    assert "epoch 1 step 3/6" in (run_dir / "train.log").read_text()  # progress during the epoch

    # the checkpoint alone is enough: it records the config, the plan and the class names
    out = run("eval.py", "--ckpt", str(run_dir / "last.ckpt"))
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["num_images"] == 12 and metrics["images_per_sec"] > 0
    assert metrics["top1"] == pytest.approx(recs[-1]["val_top1"]) and metrics["loss"] == pytest.approx(
        recs[-1]["val_loss"], rel=1e-4)

    out = run("infer.py", "--ckpt", str(run_dir / "last.ckpt"), "--json", "--topk", "2",
              str(tiny_imagenet / "val" / "class_1"))
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 4 and all(len(line["topk"]) == 2 for line in lines)
    assert {t["class"] for line in lines for t in line["topk"]} <= {"class_0", "class_1", "class_2"}


@pytest.mark.parametrize("ema", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_killed_run_resumes_at_the_right_step_and_lr_with_the_same_weights(tiny_imagenet, tmp_path, ema):
    kill_at = "epoch 2 step 2/"
    extra = ["train.epochs=3", "checkpoint.interval_steps=1", *FIXED_DATA,
             *(["train.ema=true", "train.ema_decay=0.9"] if ema else [])]
    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path / "full", *extra))
    victim_dir = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", "demo.yaml", *overrides(tiny_imagenet, victim_dir,
                                                                                       *extra)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = victim_dir / "r" / "train.log"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and kill_at in log.read_text():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert len(records(victim_dir / "r")) == 1  # killed during epoch 2

    out = run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, victim_dir, *extra), "--resume", "auto")
    assert "resumed from" in out.stderr + out.stdout
    full, resumed = records(tmp_path / "full" / "r"), records(victim_dir / "r")
    assert [r["step"] for r in resumed] == [r["step"] for r in full] == [6, 12, 18]
    for a, b in zip(full[1:], resumed[1:]):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-6)
        assert a["val_top1"] == b["val_top1"] and a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    w_full, w_resumed = weights(tmp_path / "full" / "r" / "last.ckpt"), weights(victim_dir / "r" / "last.ckpt")
    model_keys = [k for k in w_full if not k.startswith("vit_ms_")]
    assert max(np.abs(w_full[k] - w_resumed[k]).max() for k in model_keys) <= 1e-5
    assert ("ema.head.weight" in model_keys) == ema  # with train.ema the average is restored exactly too
    if ema:
        check_ema_scores(victim_dir / "r", resumed)


def check_ema_scores(run_dir, recs):
    """metrics.jsonl has both scores; best.ckpt records which weights won; eval.py --weights picks each."""
    import mindspore as ms

    assert all("val_top1_ema" in r and "val_loss_ema" in r for r in recs)
    scores = [(r["val_top1"], "raw") for r in recs] + [(r["val_top1_ema"], "ema") for r in recs]
    best = max(s for s, _ in scores)
    recorded = ms.load_checkpoint(str(run_dir / "best.ckpt"))["vit_ms_best_weights"]
    assert (best, recorded) in scores
    for which, key in [("raw", "val_loss"), ("ema", "val_loss_ema")]:
        out = run("eval.py", "--ckpt", str(run_dir / "last.ckpt"), "--weights", which)
        assert json.loads(out.stdout.strip().splitlines()[-1])["loss"] == pytest.approx(recs[-1][key], rel=1e-4)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tiny_imagenet, tmp_path):
    args = overrides(tiny_imagenet, tmp_path, "train.epochs=1")
    run("train.py", "--config", "demo.yaml", *args)
    last = tmp_path / "r" / "last.ckpt"
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    proc = run("train.py", "--config", "demo.yaml", *args, "--set", "train.epochs=2", "--set", "optim.lr=1e30",
               "--set", "optim.warmup_epochs=0", "--resume", str(last), check=False)
    assert proc.returncode == 2
    assert "the loss became nan at global step" in proc.stderr or "the loss became inf at global step" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("extra, message", [
    (["train.epoch=3"], "unknown config key 'train.epoch'; did you mean 'train.epochs'"),
    (["model.num_classes=5"], "model.num_classes=5 but"),
    (["data.root=/nonexistent/imagenet"], "/nonexistent/imagenet"),
    (["optim.lr=-1"], "optim.lr=-1.0 must be positive"),
])
def test_user_errors_are_one_paragraph_without_traceback(tiny_imagenet, tmp_path, extra, message):
    args = overrides(tiny_imagenet, tmp_path, *extra)
    proc = run("train.py", "--config", "demo.yaml", *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "Traceback" in run("train.py", "--config", "demo.yaml", *args, "--debug", check=False).stderr


def test_unwritable_run_directory_fails_before_training(tiny_imagenet, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, blocker), check=False)
    assert proc.returncode == 2 and "cannot write to the run directory" in proc.stderr
    assert "training" not in proc.stderr.split("cannot write")[0].lower().split("error:")[-1]


def test_finetune_from_pretrained_reinitialises_head_resamples_pos_embed_and_freezes_backbone(tiny_imagenet, tmp_path):
    from vit_ms.train.checkpoint import TrainState, save_checkpoint
    from vit_ms.weights.fit import resample_pos_embed
    from vit_ms.models import create_model

    source = create_model("vit_ti16", num_classes=5, image_size=48, patch_size=8, depth=1, embed_dim=32, num_heads=2,
                          mlp_ratio=2.0)
    save_checkpoint(source, tmp_path / "pretrained.ckpt", TrainState())
    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path, "train.epochs=1",
                                                       f"model.pretrained={tmp_path / 'pretrained.ckpt'}",
                                                       "train.freeze_backbone=true"))
    log = (tmp_path / "r" / "train.log").read_text()
    assert "pretrained weights:" in log
    tuned = weights(tmp_path / "r" / "last.ckpt")
    original = {p.name: p.asnumpy() for p in source.get_parameters()}
    assert tuned["head.weight"].shape == (3, 32)
    np.testing.assert_allclose(tuned["pos_embed"], resample_pos_embed(original["pos_embed"], (4, 4)), atol=1e-6)
    np.testing.assert_array_equal(tuned["pos_embed"][:, 0], original["pos_embed"][:, 0])  # class token kept
    for name in ["blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "norm.weight"]:
        np.testing.assert_array_equal(tuned[name], original[name])  # frozen backbone
    assert "adam_m.head.weight" in tuned and "adam_m.blocks.0.attn.qkv.weight" not in tuned


@pytest.mark.slow
def test_accumulated_run_counts_optimizer_steps(tiny_imagenet, tmp_path):
    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path, "train.epochs=1",
                                                       "train.accum_steps=2"))
    run_dir = tmp_path / "r"
    plan = json.loads((run_dir / "plan.json").read_text())
    assert (plan["batch_size"], plan["accum_steps"], plan["global_batch_size"]) == (4, 2, 8)
    assert [r["step"] for r in records(run_dir)] == [24 // 8]
    assert "epoch 1 step 3/3" in (run_dir / "train.log").read_text()
