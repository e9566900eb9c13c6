"""train.py / eval.py end to end in real subprocesses: run directory, resume, kill and resume, faults."""
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny_overrides(depth=1, num_classes=3) + ["train.batch_size=4", "data.num_parallel_workers=1",
                                                 "train.log_interval=1"]
# The configs' training augmentation (random resized crop, flip, RandAugment, erasing, mixup / cutmix; demo.yaml
# turns most of it off) in deterministic mode: a resumed run draws exactly what an uninterrupted one does.
REAL_AUGMENTATION = ["data.scale=[0.08, 1.0]", "data.ratio=[0.75, 1.333]", "data.hflip=0.5",
                     "data.auto_augment=randaug-m9-mstd0.5-inc1", "data.re_prob=0.25", "data.mixup=0.8",
                     "data.cutmix=1.0", "train.deterministic=true"]


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
    assert names == [".lock", "best.ckpt", "classes.txt", "config.yaml", "curves.png", "epoch_0002.ckpt",
                     "last.ckpt", "metrics.jsonl", "plan.json", "train.log"]
    with Image.open(run_dir / "curves.png") as image:  # redrawn after each epoch, with content
        assert image.format == "PNG" and image.size[0] > 600
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 50
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
    eval_dir = run_dir / "eval" / "last"  # per-class results beside the checkpoint
    assert sorted(p.name for p in eval_dir.iterdir()) == ["confusion.png", "per_class.csv"]
    rows = [line.split(",") for line in (eval_dir / "per_class.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["class_0", "class_1", "class_2"] and [int(r[1]) for r in rows] == [4, 4, 4]
    assert sum(float(r[2]) * int(r[1]) for r in rows) == pytest.approx(metrics["top1"] * 12)
    assert "worst 5 classes by top-1:" in out.stdout and f"wrote per_class.csv and confusion.png to {eval_dir}" \
        in out.stdout

    out = run("infer.py", "--ckpt", str(run_dir / "last.ckpt"), "--json", "--topk", "2",
              str(tiny_imagenet / "val" / "class_1"))
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 4 and all(len(line["topk"]) == 2 for line in lines)
    assert {t["class"] for line in lines for t in line["topk"]} <= {"class_0", "class_1", "class_2"}


@pytest.mark.parametrize("ema", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_killed_run_resumes_at_the_right_step_and_lr_with_the_same_weights(tiny_imagenet, tmp_path, ema):
    kill_at = "epoch 2 step 2/"
    extra = ["train.epochs=3", "checkpoint.interval_steps=1", *REAL_AUGMENTATION,
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
    assert "are not loaded" not in out.stderr + out.stdout  # the lr table is rebuilt, silently
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


def digests(run_dir):
    """sha256 of the checkpoints (hidden pending saves included) and metrics.jsonl in `run_dir`."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.iterdir()
            if p.suffix == ".ckpt" or p.name == "metrics.jsonl"}


def test_divergence_from_the_first_update_saves_nothing(tiny_imagenet, tmp_path):
    # an lr of 1e6: loss 1.0 at step 1, then the lr 1e6 update explodes the weights (val loss ~1e12)
    proc = run("train.py", "--config", "demo.yaml", *overrides(
        tiny_imagenet, tmp_path, "optim.lr=1e6", "optim.warmup_epochs=0", "train.steps_per_epoch=1",
        "train.epochs=3"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: training diverged in the evaluation after epoch 1 (global step 1): the validation loss jumped to" \
        in proc.stderr
    assert "no checkpoint had been saved in" in proc.stderr
    assert not list((tmp_path / "r").glob("*.ckpt")) and not list((tmp_path / "r").glob(".*.partial.ckpt"))
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_divergence_after_a_resume_keeps_best_and_last_and_names_the_safe_file(tiny_imagenet, tmp_path):
    args = overrides(tiny_imagenet, tmp_path, "train.epochs=1", "checkpoint.interval_steps=1")
    run("train.py", "--config", "demo.yaml", *args)
    run_dir = tmp_path / "r"
    before = digests(run_dir)
    assert {"best.ckpt", "last.ckpt", "epoch_0001.ckpt", "metrics.jsonl"} <= before.keys()
    proc = run("train.py", "--config", "demo.yaml", *args, "--set", "train.epochs=2", "--set", "optim.lr=1e6",
               "--set", "optim.warmup_epochs=0", "--resume", "auto", "--allow-changes", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: training diverged at global step 8 (epoch 2, step 2): the loss " in proc.stderr
    assert f"safe to resume from, is '{run_dir / 'last.ckpt'}'" in proc.stderr
    # step 7's save waited for step 8's loss, which diverged: it never became last.ckpt
    assert digests(run_dir) == before


def stop_run(cmd, log, trigger, sig):
    """Start `cmd`, send `sig` once `trigger` is in `log`; (returncode, stderr)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and trigger in log.read_text():
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
def test_sigterm_and_sigint_stop_mid_epoch_and_resume_reaches_the_same_weights(tiny_imagenet, tmp_path):
    extra = ["train.epochs=3", "train.batch_size=2", *REAL_AUGMENTATION]  # 12 steps an epoch: room to stop mid-epoch
    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path / "full", *extra))
    run_dir = tmp_path / "stopped" / "r"
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", "demo.yaml",
           *overrides(tiny_imagenet, tmp_path / "stopped", *extra)]
    from vit_ms.train.checkpoint import train_state
    from vit_ms.weights.checkpoint import read_checkpoint

    for sig, epoch, status, resume in [(signal.SIGTERM, 2, 143, []), (signal.SIGINT, 3, 130, ["--resume", "auto"])]:
        code, err = stop_run(cmd + resume, run_dir / "train.log", f"epoch {epoch} step 2/", sig)
        assert code == status, err[-3000:]
        assert f"stopped: training stopped by {sig.name} after global step" in err and "Traceback" not in err
        assert f"and saved '{run_dir / 'last.ckpt'}'; continue exactly from there by running the same command " \
               f"with --resume auto (exit status {status})" in err
        state = train_state(read_checkpoint(run_dir / "last.ckpt"))
        assert state.epoch == epoch - 1 and 2 <= state.step_in_epoch < 12  # in the middle of the epoch
        assert len(records(run_dir)) == epoch - 1

    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path / "stopped", *extra), "--resume",
        "auto")
    full, resumed = records(tmp_path / "full" / "r"), records(run_dir)
    assert [r["step"] for r in resumed] == [r["step"] for r in full] == [12, 24, 36]
    for a, b in zip(full, resumed):
        assert a["val_top1"] == b["val_top1"] and a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    w_full, w_resumed = weights(tmp_path / "full" / "r" / "last.ckpt"), weights(run_dir / "last.ckpt")
    model_keys = [k for k in w_full if not k.startswith("vit_ms_")]
    assert max(np.abs(w_full[k] - w_resumed[k]).max() for k in model_keys) <= 1e-5


@pytest.mark.slow
def test_a_second_training_into_the_same_run_directory_is_refused(tiny_imagenet, tmp_path):
    args = overrides(tiny_imagenet, tmp_path, "train.steps_per_epoch=1", "train.epochs=100000")
    log = tmp_path / "r" / "train.log"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--config", "demo.yaml", *args], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None and not (log.is_file() and "epoch 1 done" in
                                                                          log.read_text()):
            time.sleep(0.05)
        assert first.poll() is None, "the first training ended early"
        second = run("train.py", "--config", "demo.yaml", *args, check=False)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"error: another training is writing to the run directory '{tmp_path / 'r'}' (host " in second.stderr
        assert f"pid {first.pid}, started " in second.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert log.read_text().count("training vit_ti16 on") == 1  # the refused run wrote nothing, not even its log
    third = run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path, "train.steps_per_epoch=1",
                                                                "train.epochs=1"))
    assert f"took over the lock of '{tmp_path / 'r'}' from a training that is no longer running (host " \
        in third.stderr and f"pid {first.pid}, started" in third.stderr


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
    assert " INFO " not in proc.stderr and "Traceback" not in proc.stderr  # stopped before logging or training began
    assert blocker.read_text() == "not a folder"


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


def test_demo_config_writes_its_data_and_survives_a_missing_matplotlib(tmp_path):
    """One command on a fresh machine: demo.yaml writes the digits into the missing data.root; a plotting
    failure (matplotlib shadowed by a package that fails to import) is one warning, not a failed run."""
    import os

    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib' (test shadow)\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT)])}
    args = ["--config", "demo.yaml", *overrides(tmp_path / "digits", tmp_path, "train.epochs=1",
                                                "train.steps_per_epoch=2", "train.tensorboard=true",
                                                "model.num_classes=10")]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "digits" / ".vit_ms_demo.json").read_text())["counts"] == {"train": 1438,
                                                                                              "val": 359}
    run_dir = tmp_path / "r"
    log = (run_dir / "train.log").read_text()
    assert f"data.generate=digits: wrote the dataset into {tmp_path / 'digits'}" in log
    warnings = [line for line in log.splitlines() if "curves.png not written" in line]
    assert len(warnings) == 1 and "needs the matplotlib package" in warnings[0]
    assert [r["epoch"] for r in records(run_dir)] == [1] and records(run_dir)[0]["val_images"] == 359
    assert (run_dir / "last.ckpt").is_file() and not (run_dir / "curves.png").exists()
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_accumulated_run_counts_optimizer_steps(tiny_imagenet, tmp_path):
    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path, "train.epochs=1",
                                                       "train.accum_steps=2"))
    run_dir = tmp_path / "r"
    plan = json.loads((run_dir / "plan.json").read_text())
    assert (plan["batch_size"], plan["accum_steps"], plan["global_batch_size"]) == (4, 2, 8)
    assert [r["step"] for r in records(run_dir)] == [24 // 8]
    assert "epoch 1 step 3/3" in (run_dir / "train.log").read_text()


def test_another_batch_size_resumes_at_an_epoch_boundary_and_is_refused_mid_epoch(tiny_imagenet, tmp_path):
    from vit_ms.config_loader import load_config
    from vit_ms.errors import ConfigError
    from vit_ms.plan import resolve_plan
    from vit_ms.runtime import Runtime
    from vit_ms.train.checkpoint import TrainState, save_checkpoint
    from vit_ms.weights.checkpoint import CheckpointMeta
    from vit_ms.train.trainer import load_resume
    from tiny import tiny_model

    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path, "train.epochs=1"))  # 6 steps of 4
    out = run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path, "train.epochs=2",
                                                              "train.batch_size=8"), "--resume", "auto",
              "--allow-changes")
    assert "optimizer step 6 -> 3 (epoch 1 x 3 steps)" in out.stderr
    # epoch 2 took 3 steps of 8 (the lr schedule from its step 3); the run's step count only goes forward
    assert [r["step"] for r in records(tmp_path / "r")] == [6, 9]

    mid = tmp_path / "mid.ckpt"
    save_checkpoint(tiny_model(), mid, TrainState(epoch=1, step_in_epoch=2, global_step=8),
                    CheckpointMeta(plan={"global_batch_size": 4}))
    plan = resolve_plan(load_config("demo", ["train.batch_size=8"]), Runtime("CPU"))
    with pytest.raises(ConfigError, match=r"middle of epoch 2 with a global batch of 4, but this run's global "
                                          r"batch is 8"):
        load_resume(str(mid), tmp_path, plan)


@pytest.mark.slow
def test_damaged_images_neither_kill_nor_shorten_training_and_evaluation(tiny_imagenet, tmp_path):
    """A JPEG zeroed in the middle kills MindSpore's C++ decoder with SIGFPE: found by the scan and left out. After
    a scan kept in the index cache, a JPEG damaged in place and a link whose target is gone are each replaced by
    the next sample and named: every epoch has its planned steps, and eval.py counts every image."""
    from test_data import small_jpeg, zero_middle
    from vit_ms.data import scan_split

    target = tmp_path / "elsewhere.jpg"
    target.write_bytes(small_jpeg(seed=3))
    for split in ("train", "val"):
        folder = tiny_imagenet / split / "class_0"
        (folder / "zeroed.jpg").write_bytes(zero_middle(small_jpeg()))
        (folder / "later.jpg").write_bytes(small_jpeg(seed=1))
    link = tiny_imagenet / "train" / "class_0" / "zz_link.jpg"
    link.symlink_to(target)
    cache = tmp_path / "index"
    for split in ("train", "val"):
        scan_split(tiny_imagenet, split, cache_dir=cache)
        later = tiny_imagenet / split / "class_0" / "later.jpg"
        later.write_bytes(zero_middle(later.read_bytes()))  # in place: the folder keeps its mtime
    target.unlink()
    args = overrides(tiny_imagenet, tmp_path, "train.epochs=1", f"data.index_cache_dir={cache}")
    proc = run("train.py", "--config", "demo.yaml", *args)
    run_dir = tmp_path / "r"
    assert [r["step"] for r in records(run_dir)] == [6]  # (24 + later + link) // 4, none dropped
    for path in (tiny_imagenet / "train" / "class_0" / "zeroed.jpg", tiny_imagenet / "train" / "class_0" /
                 "later.jpg", link, tiny_imagenet / "val" / "class_0" / "later.jpg"):
        assert str(path) in proc.stderr, path
    out = run("eval.py", "--ckpt", str(run_dir / "last.ckpt"))
    assert json.loads(out.stdout.strip().splitlines()[-1])["num_images"] == 13  # 12 + later (replaced)
    assert str(tiny_imagenet / 'val' / 'class_0' / 'later.jpg') in out.stderr




def test_skipped_steps_log_the_applied_lr_and_a_resume_after_them_reaches_the_same_weights(tiny_imagenet, tmp_path):
    """float16 (amp O2) with a dynamic loss scale starting at 2^20 on CPU: the first steps overflow and are skipped.
    Every progress line shows the lr table's entry at the optimizer's step count (applied updates - 1), and a run
    resumed from epoch 1's checkpoint ends with the uninterrupted run's weights and records."""
    from vit_ms.config_loader import load_config
    from vit_ms.train.optim import lr_schedule, scaled_lr

    extra = ["train.epochs=3", "amp.level=O2", f"amp.loss_scale_value={2.0 ** 20}", "checkpoint.keep_last=3",
             "train.deterministic=true"]
    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path / "full", *extra))
    full_dir = tmp_path / "full" / "r"
    log = (full_dir / "train.log").read_text()
    skipped = {int(n) for n in re.findall(r"WARNING step (\d+): gradient overflow, step skipped", log)}
    assert skipped and min(skipped) == 1  # the first steps, until the scale fits (and one after it grew again)
    cfg = load_config("demo", extra + TINY)
    lrs = lr_schedule(cfg.optim, scaled_lr(cfg.optim, 4), 3, 6)
    lines = re.findall(r"epoch (\d+) step (\d+)/6  loss \S+  lr (\S+)", log)
    assert len(lines) == 18
    for epoch, step, lr in lines:
        global_step = (int(epoch) - 1) * 6 + int(step)
        applied = global_step - len([s for s in skipped if s <= global_step])
        assert float(lr) == pytest.approx(lrs[max(applied - 1, 0)], rel=1e-3), (epoch, step)
    full = records(full_dir)
    assert [r["skipped_steps"] for r in full] == [len([s for s in skipped if s <= 6 * e]) for e in (1, 2, 3)]
    assert [r["step"] for r in full] == [6, 12, 18]
    assert full[-1]["lr"] == pytest.approx(lrs[18 - len(skipped) - 1], rel=1e-6)

    resumed_dir = tmp_path / "resumed" / "r"
    resumed_dir.mkdir(parents=True)
    start = resumed_dir / "start.ckpt"
    start.write_bytes((full_dir / "epoch_0001.ckpt").read_bytes())
    run("train.py", "--config", "demo.yaml", *overrides(tiny_imagenet, tmp_path / "resumed", *extra), "--resume",
        str(start))
    resumed = records(resumed_dir)
    assert [r["epoch"] for r in resumed] == [2, 3]
    for a, b in zip(full[1:], resumed):
        assert (a["step"], a["skipped_steps"]) == (b["step"], b["skipped_steps"])
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-6) and a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    w_full, w_resumed = weights(full_dir / "last.ckpt"), weights(resumed_dir / "last.ckpt")
    model_keys = [k for k in w_full if not k.startswith("vit_ms_")]
    assert max(np.abs(w_full[k] - w_resumed[k]).max() for k in model_keys) <= 1e-5


def resume_from(old_cfg, epoch: int, steps_per_epoch: int, lr_table, new_table, ema: bool = False):
    """A checkpoint's Resume at the end of `epoch` (saved lr table `lr_table`) and a train step whose rebuilt
    table is `new_table`, for `check_resume_changes`."""
    from types import SimpleNamespace

    import mindspore as ms

    from vit_ms.config import config_to_dict
    from vit_ms.train.checkpoint import CheckpointMeta, TrainState
    from vit_ms.train.trainer import Resume

    step = ms.Tensor(np.array([epoch * steps_per_epoch], np.int32))
    params = {"global_step": step, "learning_rate": ms.Tensor(np.array(lr_table, np.float32)),
              **({"ema.num_updates": ms.Tensor(np.float32(3.0))} if ema else {})}
    resume = Resume(Path("runs/r/last.ckpt"), params, TrainState(epoch=epoch, global_step=epoch * steps_per_epoch),
                    CheckpointMeta(config=config_to_dict(old_cfg)))
    table = ms.Parameter(ms.Tensor(np.array(new_table, np.float32)), name="learning_rate")
    train_step = SimpleNamespace(get_parameters=lambda: [table], optimizer=SimpleNamespace(global_step=step),
                                 ema=None)
    return resume, train_step


@pytest.mark.parametrize("change, listed, effect", [
    ("train.epochs=7", "train.epochs: 5 -> 7", r"cosine rebuilt for 7 epochs: lr 1\.2e-05 -> 1\.3e-04 at epoch 6"),
    ("optim.lr=1.0e-3", "optim.lr: 0.0005 -> 0.001", r"cosine rebuilt for 5 epochs: lr 1\.2e-05 -> 1\.4e-05 at "
                                                    r"epoch 6"),
    ("train.ema=false", "train.ema: true -> false", r"train.ema=false drops the checkpoint's EMA weights"),
])
def test_a_resume_that_jumps_the_lr_or_drops_the_ema_is_listed_and_needs_allow_changes(change, listed, effect,
                                                                                       caplog):
    """A finished 5-epoch run (6 steps an epoch, lr 5e-4 down to 1.2e-5) resumed with another setting: the error names
    the setting, what it does and --allow-changes; with the flag the same lines are logged before training."""
    from vit_ms.config_loader import load_config
    from vit_ms.errors import ConfigError
    from vit_ms.train.optim import lr_schedule
    from vit_ms.train.trainer import check_resume_changes

    base = ["train.epochs=5", "optim.lr=5.0e-4", "optim.lr_batch_size=0", "optim.min_lr=1.0e-5",
            "optim.warmup_epochs=1", "train.ema=true"]
    old, new = load_config("demo", base), load_config("demo", base + [change])
    resume, train_step = resume_from(old, 5, 6, lr_schedule(old.optim, old.optim.lr, 5, 6),
                                     lr_schedule(new.optim, new.optim.lr, new.train.epochs, 6),
                                     ema=change == "train.ema=false")
    with pytest.raises(ConfigError, match=rf"resuming from 'runs/r/last.ckpt' with settings that differ from the "
                                          rf"checkpoint's: {listed}.*With them {effect}.*pass --allow-changes to "
                                          rf"train.py"):
        check_resume_changes(new, train_step, resume, allow_changes=False)
    with caplog.at_level("WARNING", logger="vit_ms"):
        check_resume_changes(new, train_step, resume, allow_changes=True)
    assert listed in caplog.text and re.search(effect, caplog.text)
    caplog.clear()
    same_resume, same_step = resume_from(old, 5, 6, [1e-3] * 30, [1e-3] * 30)
    check_resume_changes(old, same_step, same_resume, allow_changes=False)
    assert caplog.text == ""  # the same settings: nothing to say


def test_a_weights_file_given_to_resume_is_named_as_weights_not_as_a_corrupt_checkpoint(tmp_path):
    from vit_ms.config_loader import load_config
    from vit_ms.errors import CheckpointError
    from vit_ms.plan import resolve_plan
    from vit_ms.runtime import Runtime
    from vit_ms.train.trainer import load_resume

    weights_file = tmp_path / "x.safetensors"
    weights_file.write_bytes(b"{}")
    plan = resolve_plan(load_config("demo"), Runtime("CPU"))
    with pytest.raises(CheckpointError, match=rf"'{weights_file}' holds model weights, not a training checkpoint .*"
                                              rf"--set model.pretrained={weights_file}"):
        load_resume(str(weights_file), tmp_path, plan)


def test_a_resume_that_rebuilds_the_cosine_is_refused_without_allow_changes(tiny_imagenet, tmp_path):
    args = overrides(tiny_imagenet, tmp_path, "train.epochs=2", "train.steps_per_epoch=2")
    run("train.py", "--config", "demo.yaml", *args)
    before = digests(tmp_path / "r")
    longer = [*args, "--set", "train.epochs=3", "--resume", "auto"]
    proc = run("train.py", "--config", "demo.yaml", *longer, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train.epochs: 2 -> 3" in proc.stderr and "cosine rebuilt for 3 epochs: lr " in proc.stderr
    assert "at epoch 3, so the resumed run would not continue the saved one: pass --allow-changes to train.py" \
        in proc.stderr
    assert digests(tmp_path / "r") == before  # nothing trained, nothing written
    out = run("train.py", "--config", "demo.yaml", *longer, "--allow-changes")
    assert "resumed with settings that differ from the checkpoint's (--allow-changes)" in out.stderr
    assert [r["epoch"] for r in records(tmp_path / "r")] == [1, 2, 3]


def test_a_resume_from_an_earlier_checkpoint_leaves_one_row_per_epoch(tiny_imagenet, tmp_path):
    """Two epochs trained, then resumed from epoch 1's checkpoint in the same run directory: epoch 2 is trained
    again, and metrics.jsonl (so curves.png and python -m vit_ms.plot) holds each epoch once."""
    args = overrides(tiny_imagenet, tmp_path, "train.epochs=2", "train.steps_per_epoch=2", "checkpoint.keep_last=2")
    run("train.py", "--config", "demo.yaml", *args)
    run_dir = tmp_path / "r"
    first = records(run_dir)
    start = tmp_path / "epoch_1.ckpt"
    start.write_bytes((run_dir / "epoch_0001.ckpt").read_bytes())
    out = run("train.py", "--config", "demo.yaml", *args, "--resume", str(start))
    assert "metrics.jsonl: kept 1 row(s), one per epoch up to epoch 1, and dropped 1 line(s)" in out.stderr
    again = records(run_dir)
    assert [(r["epoch"], r["step"]) for r in again] == [(1, 2), (2, 4)] and again[0] == first[0]
