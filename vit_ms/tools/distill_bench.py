"""What distillation costs a train step: the distilled step against the student's own step plus the teacher's
forward pass, timed interleaved in one process (python -m vit_ms.benchmark --distill).

    record = distill_record(cfg, plan, batch, steps=10, warmup=2, build_training=model_bench.build_training)
    print(format_distill(record))

The teacher is the config's distill.teacher (a mindcv teacher with random weights: speed does not depend on
them), in the plan's precision. The student step is the same model trained without a teacher. `overhead` is
distilled / (student + teacher forward): 1.0 when running the teacher inside the step costs exactly its forward.
"""
import dataclasses
import functools

import numpy as np
import mindspore as ms

from ..config import Config
from ..errors import ConfigError
from ..models import model_from_plan
from ..loader.opener import Student, open_model
from .timing import first_call, run_interleaved, summarize


def check_distill_config(cfg: Config) -> None:
    if cfg.distill.type == "none":
        raise ConfigError("--distill times distillation, but distill.type=none: set distill.type=hard|soft and "
                          "distill.teacher (e.g. --set distill.type=hard --set distill.teacher=mindcv:regnet_y_400mf)")


def distill_record(cfg: Config, plan, batch, steps: int, warmup: int, build_training, cache_dir=None) -> dict:
    """Time the three calls; `build_training(cfg, plan, model, steps, teacher=...)` builds a train step as the
    benchmark does (vit_ms.tools.model_bench.build_training); a published teacher is downloaded into `cache_dir`."""
    check_distill_config(cfg)
    images, labels = batch
    student = Student(plan, None, mindcv_weights=False)  # synthetic data has no class names: the count is compared
    teacher = open_model(cfg.distill.teacher, cache_dir, teacher_of=student).network
    n = 2 + warmup + steps
    distilled = build_training(cfg, plan, model_from_plan(plan), n, teacher=teacher)
    alone = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, type="none", teacher="",
                                                                  teacher_weights=""))
    student = build_training(alone, plan, model_from_plan(plan), n)
    flat = images if plan.accum_steps == 1 else ms.Tensor(images.asnumpy().reshape(-1, *images.shape[2:]))
    calls = {"distilled": functools.partial(lambda s: s(images, labels)[0].asnumpy(), distilled),
             "student": functools.partial(lambda s: s(images, labels)[0].asnumpy(), student),
             "teacher_forward": lambda: teacher(flat).asnumpy()}
    first = {name: first_call(call)[1] for name, call in calls.items()}
    timed = run_interleaved(calls, steps, warmup)
    batch_images = int(np.prod(images.shape[:-3]))
    ms_ = {name: summarize(timed[name]["times"], batch_images)["step_ms_median"] for name in calls}
    return {"measurement": "distill", "teacher": cfg.distill.teacher, "type": cfg.distill.type,
            "distilled_step_ms": ms_["distilled"], "student_step_ms": ms_["student"],
            "teacher_forward_ms": ms_["teacher_forward"],
            "overhead": ms_["distilled"] / (ms_["student"] + ms_["teacher_forward"]),
            "first_call_s": first, "steps": steps, "batch": batch_images}


def format_distill(r: dict) -> str:
    return (f"distillation ({r['type']}, teacher {r['teacher']}, batch {r['batch']}, medians of {r['steps']}): "
            f"distilled step {r['distilled_step_ms']:.1f} ms vs student step {r['student_step_ms']:.1f} ms + teacher "
            f"forward {r['teacher_forward_ms']:.1f} ms = {r['student_step_ms'] + r['teacher_forward_ms']:.1f} ms "
            f"(ratio {r['overhead']:.2f})")
