"""DeiT's distillation (vit_ms.train.losses, vit_ms.train.teacher): the loss against numpy (hard and soft, with
mixup soft targets and label smoothing), the frozen teacher, the config's checks, and the teachers one can name.
The demo-sized distilled run (train and resume) is in test_distill_run.py."""

import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

import tiny
from vit_ms.config_loader import load_config
from vit_ms.errors import ConfigError
from vit_ms.train.checkpoint import TrainState, save_checkpoint
from vit_ms.train.losses import ClassificationLoss, DistillationWithLoss, FrozenTeacher, WithLoss, loss_network
from vit_ms.weights.checkpoint import TEACHER_PREFIX, CheckpointMeta, read_checkpoint

K = 3
ROOT = Path(__file__).resolve().parent.parent


def log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def numpy_deit_loss(cls, dist, teacher, labels, kind, alpha, tau, smoothing):
    """DeiT's DistillationLoss written out in float64 from its definition (losses.py)."""
    cls, dist, teacher = (np.asarray(a, np.float64) for a in (cls, dist, teacher))
    if labels.ndim == 2:  # soft targets (mixup / cutmix)
        base = -(labels * log_softmax(cls)).sum(axis=1).mean()
    else:
        target = np.full(cls.shape, smoothing / cls.shape[1])
        target[np.arange(len(labels)), labels] += 1.0 - smoothing
        base = -(target * log_softmax(cls)).sum(axis=1).mean()
    if kind == "hard":
        term = -log_softmax(dist)[np.arange(len(dist)), teacher.argmax(axis=1)].mean()
    else:
        log_p, log_q = log_softmax(dist / tau), log_softmax(teacher / tau)
        term = (np.exp(log_q) * (log_q - log_p)).sum() * tau * tau / dist.size
    return (1 - alpha) * base + alpha * term


@pytest.fixture()
def batch():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    perm = rng.permutation(4)
    lam = 0.7  # a mixup batch: the images mixed, the one-hot labels mixed the same way, then smoothed
    hard = np.array([0, 1, 2, 1])
    onehot = np.eye(K)[hard] * 0.9 + 0.1 / K
    return {"images": lam * images + (1 - lam) * images[perm], "labels": hard,
            "soft": (lam * onehot + (1 - lam) * onehot[perm]).astype(np.float32)}


def student_and_teacher(seed=0):
    ms.set_seed(seed)
    student = tiny.tiny_model(K, distilled=True)
    teacher = tiny.tiny_model(K, depth=1)
    for p in teacher.get_parameters():  # a confident teacher: its argmax is not a tie
        if p.name == "head.weight":
            p.set_data(ms.Tensor(np.random.default_rng(seed).normal(0, 2.0, p.shape).astype(np.float32)))
    return student, teacher


@pytest.mark.parametrize("kind,tau,soft_labels", [("hard", 1.0, False), ("hard", 1.0, True), ("soft", 1.0, True),
                                                  ("soft", 3.0, False)])
def test_distillation_loss_matches_numpy(batch, kind, tau, soft_labels):
    student, teacher = student_and_teacher()
    labels = batch["soft"] if soft_labels else batch["labels"].astype(np.int32)
    net = DistillationWithLoss(student, ClassificationLoss(0.1), FrozenTeacher(teacher), kind, alpha=0.3, tau=tau)
    net.set_train(True)
    x = ms.Tensor(batch["images"].astype(np.float32))
    loss = float(net(x, ms.Tensor(labels)).asnumpy())
    cls, dist = (o.asnumpy() for o in student(x))  # training mode: both heads
    teacher_logits = teacher(x).asnumpy()  # FrozenTeacher kept it in inference mode
    ref = numpy_deit_loss(cls, dist, teacher_logits, labels, kind, 0.3, tau, smoothing=0.1)
    assert np.abs(cls - dist).max() > 1e-3 and loss == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_a_plain_student_distils_into_its_class_head_and_type_none_trains_the_class_head_alone(batch):
    _, teacher = student_and_teacher(1)
    ms.set_seed(1)
    plain = tiny.tiny_model(K)
    x, labels = ms.Tensor(batch["images"].astype(np.float32)), batch["labels"].astype(np.int32)
    net = DistillationWithLoss(plain, ClassificationLoss(0.0), FrozenTeacher(teacher), "soft", alpha=0.5, tau=2.0)
    net.set_train(True)
    logits = plain(x).asnumpy()
    ref = numpy_deit_loss(logits, logits, teacher(x).asnumpy(), labels, "soft", 0.5, 2.0, 0.0)
    assert float(net(x, ms.Tensor(labels)).asnumpy()) == pytest.approx(ref, rel=1e-5)

    student, _ = student_and_teacher(2)
    cfg = load_config(None, ["loss.label_smoothing=0.0"])
    none = loss_network(student, cfg)  # a distilled ViT without a teacher: DeiT's type none
    assert isinstance(none, DistillationWithLoss) and none.teacher is None
    none.set_train(True)
    cls, _ = (o.asnumpy() for o in student(x))
    assert float(none(x, ms.Tensor(labels)).asnumpy()) == pytest.approx(
        -log_softmax(cls.astype(np.float64))[np.arange(4), labels].mean(), rel=1e-5)
    assert isinstance(loss_network(tiny.tiny_model(K), cfg), WithLoss)


def test_the_teacher_is_frozen_in_inference_mode_and_left_out_of_checkpoints(tmp_path, batch):
    student, teacher = student_and_teacher(3)
    teacher_dropout = tiny.tiny_model(K, depth=1, drop_rate=0.5)
    frozen = FrozenTeacher(teacher_dropout)
    net = DistillationWithLoss(student, ClassificationLoss(0.0), frozen, "hard")
    net.set_train(True)  # what Model.train does to the train step
    assert student.training and not teacher_dropout.training
    x = ms.Tensor(batch["images"].astype(np.float32))
    np.testing.assert_array_equal(frozen(x).asnumpy(), frozen(x).asnumpy())  # no dropout
    names = [p.name for p in teacher_dropout.get_parameters()]
    assert all(n.startswith(TEACHER_PREFIX) for n in names)
    assert not any(p.requires_grad for p in frozen.get_parameters())
    assert {p.name for p in net.trainable_params()} == {p.name for p in student.trainable_params()}
    save_checkpoint(net, tmp_path / "s.ckpt", TrainState(), CheckpointMeta())
    saved = read_checkpoint(tmp_path / "s.ckpt")
    assert "dist_token" in saved and not any(k.startswith(TEACHER_PREFIX) for k in saved)


@pytest.mark.parametrize("sets,message", [
    (["distill.type=hard"], "needs a teacher"),
    (["distill.teacher=runs/t/best.ckpt"], "distill.type=none, so no teacher would run"),
    (["distill.type=soft", "distill.teacher=x.ckpt", "distill.tau=0"], "distill.tau=0.0 is a softmax temperature"),
    (["distill.type=hard", "distill.teacher=x.ckpt", "distill.alpha=1.5"], r"distill.alpha=1.5 .* \[0, 1\]"),
    (["distill.type=hard", "distill.teacher=x.ckpt", "distill.teacher_weights=w.ckpt"], "for mindcv teachers"),
    (["distill.type=medium"], "distill.type"),
    (["model.distilled=true", "model.global_pool=avg"], "model.global_pool=token"),
])
def test_config_errors_name_the_key_and_the_fix(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)


def plan_for(**model):
    from vit_ms.plan import resolve_plan
    from vit_ms.runtime import setup_runtime

    cfg = load_config(None, tiny.tiny_overrides(**{"num_classes": K, **model}))
    return resolve_plan(cfg, setup_runtime(cfg))


def test_vit_teacher_from_a_training_checkpoint_at_the_students_image_size(tmp_path, batch):
    from vit_ms.config import config_to_dict
    from vit_ms.loader.opener import Student, open_model

    def vit_teacher(spec, plan):
        return open_model(spec, None, teacher_of=Student(plan, None)).network

    teacher_cfg = load_config(None, tiny.tiny_overrides(num_classes=K, depth=1, image_size=16))
    ms.set_seed(4)
    source = tiny.tiny_model(K, depth=1, image_size=16)
    save_checkpoint(source, tmp_path / "t.ckpt", TrainState(), CheckpointMeta(config_to_dict(teacher_cfg)))
    teacher = vit_teacher(str(tmp_path / "t.ckpt"), plan_for())
    assert teacher.arch.depth == 1 and teacher.arch.image_size == 32  # 2x2 grid resampled to the student's 4x4
    np.testing.assert_array_equal(teacher.blocks[0].mlp.fc1.weight.asnumpy(), source.blocks[0].mlp.fc1.weight.asnumpy())
    with pytest.raises(ConfigError, match="predicts 3 classes but the student has model.num_classes=5"):
        vit_teacher(str(tmp_path / "t.ckpt"), plan_for(num_classes=5))


def test_teacher_classes_must_be_the_students_in_order():
    from vit_ms.loader.opener import check_teacher_classes

    digits = [str(i) for i in range(10)]
    check_teacher_classes("t.ckpt", list(digits), 10, digits, 10)
    with pytest.raises(ConfigError, match=r"class 0 is '9' for the teacher but '0' for the student"):
        check_teacher_classes("t.ckpt", digits[::-1], 10, digits, 10)  # the same names, permuted
    with pytest.raises(ConfigError, match=r"class 3 is nothing \(it has no more classes\) for the teacher but '3'"):
        check_teacher_classes("t.ckpt", digits[:3], 3, digits, 10)
    check_teacher_classes("vit_b16.augreg_in1k", None, 10, digits, 10)  # published weights record no names
    with pytest.raises(ConfigError, match="predicts 1000 classes but the student has model.num_classes=10"):
        check_teacher_classes("vit_b16.augreg_in1k", None, 1000, digits, 10)


def test_mindcv_teacher_names_and_weights(tmp_path):
    from vit_ms.errors import CheckpointError
    from vit_ms.loader.opener import mindcv_network as mindcv_teacher

    with pytest.raises(ConfigError, match="not a mindcv model.*regnet_y_16gf"):
        mindcv_teacher("regnet_y_16gfx", "", K)
    with pytest.raises(ConfigError, match="publishes no weights for 'regnet_y_16gf'"):
        mindcv_teacher("regnet_y_16gf", "", K)  # mindcv 0.3.0's table has no URL under this name
    import mindcv.models

    ms.set_seed(5)
    source = mindcv.models.create_model("resnet18", num_classes=K)
    ms.save_checkpoint(source, str(tmp_path / "r18.ckpt"))
    teacher = mindcv_teacher("resnet18", str(tmp_path / "r18.ckpt"), K)
    got = {p.name: p.asnumpy() for p in teacher.get_parameters()}
    assert all(np.array_equal(got[p.name], p.asnumpy()) for p in source.get_parameters())
    with pytest.raises(CheckpointError, match="do not fit mindcv's 'resnet18' with 5 classes"):
        mindcv_teacher("resnet18", str(tmp_path / "r18.ckpt"), 5)
    with pytest.raises(CheckpointError, match="lack .* parameters of mindcv's 'resnet34'"):
        mindcv_teacher("resnet34", str(tmp_path / "r18.ckpt"), K)


def test_benchmark_times_a_distilled_step_against_student_plus_teacher():
    """`python -m vit_ms.benchmark --distill`, as a user runs it (its own process: MindSpore 2.10 keeps graphs of
    a mindcv teacher's step that make a later graph with the attention maps fail to compile in the same process)."""
    from vit_ms.benchmark import main as benchmark_main

    with pytest.raises(ConfigError, match="--distill times distillation, but distill.type=none"):
        benchmark_main(["--config", "demo.yaml", "--distill"])
    sets = tiny.tiny_overrides(num_classes=K, depth=1, distilled="true") + [
        "distill.type=soft", "distill.teacher=mindcv:resnet18"]
    cmd = [sys.executable, "-m", "vit_ms.benchmark", "--config", "demo.yaml", "--batch", "2", "--steps", "2",
           "--warmup", "0", "--skip-data", "--distill"] + [arg for item in sets for arg in ("--set", item)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    r = next(record for record in records if record["measurement"] == "distill")
    assert r["batch"] == 2 and r["teacher"] == "mindcv:resnet18" and r["type"] == "soft" and r["steps"] == 2
    assert min(r["distilled_step_ms"], r["student_step_ms"], r["teacher_forward_ms"]) > 0
    assert r["overhead"] == pytest.approx(r["distilled_step_ms"] / (r["student_step_ms"] + r["teacher_forward_ms"]))
    assert f"(ratio {r['overhead']:.2f})" in proc.stdout  # the table's line for it
