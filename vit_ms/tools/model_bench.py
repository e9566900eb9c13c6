"""How fast a config trains, evaluates and feeds data on this machine; optionally against mindcv's ViT.

The measurements of `python -m vit_ms.benchmark` (its command line: vit_ms/benchmark.py); the data pipelines
alone (--data-only) are vit_ms/tools/data_bench.py's, the folder scan (--scan) vit_ms/tools/scan_bench.py's.

Train step: the config's model, loss, optimizer, amp level and loss scaling, built by the functions train.py
uses (resolve_plan, model_from_plan, build_optimizer, build_train_step), fed one synthetic batch (random images;
soft labels when mixup/cutmix is on, as the real pipeline gives). Images/s is batch / step time: median, min/max
and interquartile range over --steps timed steps after --warmup untimed ones; the first step (graph compilation
plus one step) is timed apart. Eval is the forward pass alone. FLOPs are counted from the architecture
(vit_ms.tools.flops); on CPU the machine's float32 matmul rate (numpy and mindspore.ops.matmul, vit_ms.tools.machine)
gives the model FLOPs utilisation.
Memory: what each model's first train step adds to the peak (the process's peak RSS on CPU, MindSpore's
max_memory_allocated elsewhere), measured for each model alone in a fresh process: in a shared process the second
model reuses buffers the first one freed, which hides its need.
The data pipeline is timed alone: the config's train transforms (and mixup) over JPEG/PNG files that
vit_ms.data.demo writes to a temporary folder.

--formulation LAYER=WAY (repeatable: patch_embed=conv|matmul, backward=autodiff|handwritten, bias_grad=reduce|gemm)
times our model with a layer computed another way than the run plan's choice for the device; the function and
the weights are the same, only speed and memory differ, so this is the one place that chooses them.

--profile DIR (CPU) runs one more train step of our model under mindspore.profiler after the timed steps, keeps the
trace in DIR and prints the time per op type (vit_ms/tools/profile_step.py).

--compare mindcv builds mindcv's VisionTransformer with the same size, GELU, LayerNorm eps and dropout, trains it
with the same optimizer, loss and amp, and times both in one process, alternating steps (ours, mindcv, ours, ...).
Output: a table, then one JSON object per line per measurement; with --compare the last line holds
ours_images_per_sec, mindcv_images_per_sec and ratio.
"""
import copy
import dataclasses
import functools
import multiprocessing
import os
import tempfile
import time
from typing import Callable, List, Optional

import mindspore as ms
import numpy as np
from mindcv.models.vit import VisionTransformer
from mindspore import nn

from ..config import Config, config_to_dict
from ..config_loader import config_from_dict
from ..data import Feed, create_dataset
from ..data.setup import prepare_data
from ..data.demo import write_synthetic_folder
from ..errors import ConfigError
from ..models import model_from_plan
from ..plan import RunPlan, resolve_plan
from ..runtime import setup_runtime
from ..train.step import build_training as build_training_step
from ..variants import IN_CHANNELS
from .distill_bench import distill_record, format_distill
from .flops import TRAIN_FACTOR, model_flops
from .machine import matmul_rates, peak_memory
from .profile_step import format_profile, profile_step
from .timing import first_call, run_interleaved, summarize


def synthetic_batch(cfg, batch: int, seed: int = 0):
    """Random normalised images and the labels the config's loss gets: soft (B, K) with mixup/cutmix, else (B,)."""
    rng = np.random.default_rng(seed)
    size, classes = cfg.model.image_size, cfg.model.num_classes
    images = rng.standard_normal((batch, IN_CHANNELS, size, size)).astype(np.float32)
    if cfg.data.mixup > 0 or cfg.data.cutmix > 0:
        labels = rng.dirichlet(np.full(classes, 0.1), batch).astype(np.float32)
    else:
        labels = rng.integers(0, classes, batch).astype(np.int32)
    return ms.Tensor(images), ms.Tensor(labels)


class _DecayNames:
    """`build_optimizer` asks the model which parameters skip weight decay; mindcv's ViT gets our rule."""

    def __init__(self, model):
        self.model = model

    def no_weight_decay(self) -> set:
        return {p.name for p in self.model.trainable_params() if p.ndim <= 1 or p.name in ("cls_token", "pos_embed")}


def mindcv_vit(arch):
    """mindcv's VisionTransformer with the architecture, GELU, LayerNorm eps and dropout of `arch`."""
    if arch.representation_size:
        raise ConfigError("--compare mindcv: mindcv's ViT has no pre-logits layer; use model.representation_size=null")
    return VisionTransformer(
        image_size=arch.image_size, patch_size=arch.patch_size, in_channels=arch.in_channels,
        global_pool=arch.global_pool, embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
        mlp_ratio=arch.mlp_ratio, qkv_bias=arch.qkv_bias, pos_drop_rate=arch.drop_rate, proj_drop_rate=arch.drop_rate,
        attn_drop_rate=arch.attn_drop_rate, drop_path_rate=arch.drop_path_rate,
        act_layer=functools.partial(nn.GELU, approximate=arch.gelu == "tanh"),
        norm_layer=functools.partial(nn.LayerNorm, epsilon=arch.norm_eps), num_classes=arch.num_classes)


def build_training(cfg: Config, plan: RunPlan, model, steps: int, decay_rule=None, teacher=None):
    """Optimizer and train step for `model` as train.py builds them (one lr per step for `steps` steps).

    decay_rule: the object whose no_weight_decay() names the exempt parameters (default: the model);
    teacher: the distillation teacher (distill.*), as train.py passes it.
    """
    return build_training_step(cfg, plan, model, 1, steps, teacher, decay_rule)[0]


def data_throughput(cfg, batch: int, image_size: int, batches: int) -> dict:
    """images/s of the config's train pipeline (decode, transforms, batch, mixup) over files in a temp folder.

    Timed from the iterator's creation to its end (start-up included), over `batches` batches.
    """
    classes = 4
    with tempfile.TemporaryDirectory(prefix="vit_ms_bench_") as root:
        write_synthetic_folder(root, classes, -(-batches * batch // classes), 1, image_size, seed=0)
        dcfg = copy.deepcopy(cfg)
        dcfg.data.root, dcfg.model.num_classes = root, classes
        prepare_data(dcfg.data, cfg.train.seed, cfg.train.deterministic)  # the temporary folder: nothing to write
        dataset, _ = create_dataset(dcfg.data, "train", Feed.of(dcfg, batch, steps_per_epoch=batches))
        start = time.perf_counter()
        count = sum(len(images) for images, _ in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
        elapsed = time.perf_counter() - start
    return {"images_per_sec": count / elapsed, "images": count, "file_size_px": image_size,
            "crop_px": cfg.model.image_size, "workers": min(cfg.data.num_parallel_workers, os.cpu_count() or 1),
            "workers_configured": cfg.data.num_parallel_workers, "batch": batch,
            "files": "JPEG and PNG alternating (vit_ms.data.demo.write_synthetic_folder)",
            "auto_augment": cfg.data.auto_augment, "mixup": cfg.data.mixup, "cutmix": cfg.data.cutmix}


def bench_config(cfg: Config, batch: int, mode: Optional[str]) -> Config:
    """`cfg` on one device with `batch` images per step (and `mode` when given); `cfg` itself is unchanged."""
    train = dataclasses.replace(cfg.train, batch_size=batch, global_batch_size=0, mode=mode or cfg.train.mode)
    return dataclasses.replace(cfg, train=train, distributed=False)


def setting_records(cfg: Config, plan: RunPlan) -> List[dict]:
    """What runs (config, model, device, amp, formulation), its FLOPs and, on CPU, the machine's matmul rate."""
    setting = {"config": cfg.run_name, "model": plan.arch.name, "image_size": plan.arch.image_size,
               "batch": plan.batch_size, "mode": plan.mode, "device": plan.device_target, "amp": plan.amp_level,
               "optimizer": cfg.optim.name, "loss_scale": plan.loss_scale,
               "formulation": dataclasses.asdict(plan.formulation), "formulation_text": plan.formulation.describe()}
    flops = model_flops(plan.arch)
    records = [dict(measurement="setting", **setting),
               {"measurement": "flops", "forward_gflops_per_image": flops["total"] / 1e9,
                "train_gflops_per_image": TRAIN_FACTOR * flops["total"] / 1e9,
                "forward_gflops_by_part": {k: v / 1e9 for k, v in flops.items() if k != "total"}}]
    if plan.device_target == "CPU":
        records.append(dict(measurement="matmul_peak", **matmul_rates()))
    return records


def train_batch(cfg: Config, plan: RunPlan):
    """The synthetic batch a train step takes: (B, ...) tensors, stacked (k, B, ...) with accumulation."""
    batch = synthetic_batch(cfg, plan.batch_size, cfg.train.seed)
    k = plan.accum_steps  # train.accum_steps: each step trains k micro-batches, stacked (k, B, ...)
    return batch if k == 1 else tuple(ms.Tensor(np.stack([x.asnumpy()] * k)) for x in batch)


def first_step_growth(cfg_values: dict, name: str, formulation: dict) -> int:
    """Bytes of peak memory one model's first train step (compile + activations) adds, in a fresh process.

    Run through `isolated_growth`: a second model in the benchmark's own process reuses the buffers the first
    one's step freed, so its growth there hides what it needs alone.
    """
    cfg = config_from_dict(cfg_values)
    plan = resolve_plan(cfg, setup_runtime(cfg), formulation=formulation)
    model = mindcv_vit(plan.arch) if name == "mindcv" else model_from_plan(plan)
    step = build_training(cfg, plan, model, 2, _DecayNames(model) if name == "mindcv" else None)
    images, labels = train_batch(cfg, plan)
    if plan.device_target != "CPU":
        ms.runtime.reset_peak_memory_stats()
    before = peak_memory(plan.device_target)["peak_bytes"]
    step(images, labels)[0].asnumpy()
    return peak_memory(plan.device_target)["peak_bytes"] - before


def isolated_growth(cfg: Config, name: str, formulation: dict) -> int:
    """`first_step_growth` of model `name` ("ours" or "mindcv") in a spawned process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(first_step_growth, (config_to_dict(cfg), name, formulation))


def time_training(cfg: Config, plan: RunPlan, models: dict, batch, steps: int, warmup: int, formulation: dict):
    """Build each model's train step and time it: (interleaved timings, first call per model, memory per model,
    the step calls)."""
    images, labels = batch
    train_calls, first, memory = {}, {}, {}
    for name, model in models.items():
        decay_rule = _DecayNames(model) if name == "mindcv" else None
        train_step = build_training(cfg, plan, model, 2 + warmup + steps, decay_rule)  # + one for --profile
        train_calls[name] = functools.partial(lambda step: step(images, labels)[0].asnumpy(), train_step)
        if plan.device_target != "CPU":
            ms.runtime.reset_peak_memory_stats()
        first[name] = first_call(train_calls[name])
        memory[name] = dict(peak_memory(plan.device_target), growth_bytes=isolated_growth(cfg, name, formulation),
                            growth_source="first train step of the model alone, in a fresh process")
    return run_interleaved(train_calls, steps, warmup), first, memory, train_calls


def time_eval(models: dict, images, steps: int, warmup: int):
    """The forward pass in inference mode, interleaved: (timings, first call seconds per model)."""
    for model in models.values():
        model.set_train(False)
    eval_calls = {name: functools.partial(lambda m: m(images).asnumpy(), model) for name, model in models.items()}
    eval_first = {name: first_call(call)[1] for name, call in eval_calls.items()}
    return run_interleaved(eval_calls, steps, warmup), eval_first


def model_records(name: str, batch: int, train, first, evals, eval_first, memory, records: List[dict],
                  accum_steps: int = 1) -> List[dict]:
    """The train, compile, eval, memory and utilisation records of one model (a train step: accum_steps batches)."""
    flops = records_for(records, "flops")["forward_gflops_per_image"] * 1e9
    t = dict(measurement="train", model=name, **summarize(train[name]["times"], batch * accum_steps),
             loss_first=float(first[name][0]), loss_last=float(train[name]["last_output"]))
    achieved = t["images_per_sec"] * TRAIN_FACTOR * flops
    util = {"measurement": "utilisation", "model": name, "train_gflops_per_sec": achieved / 1e9}
    peak = next((r for r in records if r.get("measurement") == "matmul_peak"), None)
    if peak:
        best = max(peak["numpy_gflops"], peak["mindspore_gflops"])
        util.update(mfu=achieved / 1e9 / best, peak_gflops=best, peak_source="best measured float32 matmul")
    return [t, {"measurement": "compile", "model": name, "first_step_s": first[name][1],
                "note": "first train step after the build: graph compilation plus one step"},
            dict(measurement="eval", model=name, **summarize(evals[name]["times"], batch),
                 first_step_s=eval_first[name]),
            dict(measurement="memory", model=name, **memory[name]), util]


def comparison_record(records: List[dict], compare: str) -> dict:
    """The last line of a --compare run: both train rates, their ratio and the eval ratio."""
    ours, theirs = records_for(records, "train", "ours"), records_for(records, "train", compare)
    setting = {k: v for k, v in records_for(records, "setting").items() if k != "measurement"}
    return {"ours_images_per_sec": ours["images_per_sec"], f"{compare}_images_per_sec": theirs["images_per_sec"],
            "ratio": ours["images_per_sec"] / theirs["images_per_sec"],
            "eval_ratio": records_for(records, "eval", "ours")["images_per_sec"]
            / records_for(records, "eval", compare)["images_per_sec"], **setting}


def benchmark(cfg: Config, steps: int, warmup: int, compare: Optional[str], data: bool, data_image_size: int,
              data_batches: int, profile_dir: Optional[str] = None, distill: bool = False,
              formulation: Optional[dict] = None, cache_dir: Optional[str] = None) -> List[dict]:
    """Run every measurement for `cfg` (see `bench_config`); returns the records (see the module docstring).
    With `profile_dir`, one more train step of our model runs under the CPU profiler (`profile_step`); with
    `distill`, the distilled step against the student's step and the teacher's forward (`distill_bench`; a
    published teacher is downloaded into `cache_dir`);
    `formulation` forces layer implementations instead of the device's (vit_ms.plan.parse_formulation)."""
    formulation = formulation or {}
    plan = resolve_plan(cfg, setup_runtime(cfg), formulation=formulation)
    if profile_dir and plan.device_target != "CPU":
        raise ConfigError(f"--profile sums CPU op times; this run targets {plan.device_target}: use "
                          f"mindspore.profiler there (see vit_ms/tools/profile_step.py)")
    records = setting_records(cfg, plan)
    models = {"ours": model_from_plan(plan)}
    if compare:
        models[compare] = mindcv_vit(plan.arch)
    train, first, memory, train_calls = time_training(cfg, plan, models, train_batch(cfg, plan), steps, warmup,
                                                        formulation)
    if profile_dir:  # before the eval timing switches the models to inference mode
        rows, trace = profile_step(train_calls["ours"], profile_dir)
        records.append({"measurement": "profile", "model": "ours", "trace": trace, "op_types": rows,
                        "total_ms": sum(r["ms"] for r in rows), "steps": 1})
    evals, eval_first = time_eval(models, synthetic_batch(cfg, plan.batch_size, cfg.train.seed)[0], steps, warmup)
    for name in models:
        records += model_records(name, plan.batch_size, train, first, evals, eval_first, memory, records,
                                 plan.accum_steps)
    if distill:
        records.append(distill_record(cfg, plan, train_batch(cfg, plan), steps, warmup, build_training, cache_dir))
    if data:
        records.append(dict(measurement="data", config=cfg.run_name,
                            **data_throughput(cfg, plan.batch_size, data_image_size or plan.arch.image_size * 9 // 7,
                                              data_batches)))
    if compare:
        records.append(comparison_record(records, compare))
    return records


def records_for(records: List[dict], measurement: str, model: Optional[str] = None) -> dict:
    """The first record of `measurement` (for `model`, when given)."""
    return next(r for r in records if r.get("measurement") == measurement and model in (None, r.get("model")))


def format_table(records: List[dict]) -> str:
    """The human-readable summary printed above the JSON lines."""
    setting = records[0]
    names = [r["model"] for r in records if r.get("measurement") == "train"]
    flops = next(r for r in records if r.get("measurement") == "flops")
    lines = [f"{setting['model']} at {setting['image_size']} px, batch {setting['batch']}, {setting['mode']} mode, "
             f"{setting['device']}, amp {setting['amp']}, {setting['optimizer']}",
             f"formulation (ours): {setting['formulation_text']}",
             f"model: {flops['forward_gflops_per_image']:.2f} GFLOP/image forward, "
             f"{flops['train_gflops_per_image']:.2f} per training image (3x)",
             f"{'':34s}" + "".join(f"{n:>14s}" for n in names)]

    def row(label: str, measurement: str, fmt: Callable[[dict], str]):
        lines.append(f"{label:34s}" + "".join(f"{fmt(records_for(records, measurement, n)):>14s}" for n in names))

    row("train images/s (median)", "train", lambda r: f"{r['images_per_sec']:.2f}")
    row("  min - max", "train", lambda r: f"{r['images_per_sec_min']:.1f}-{r['images_per_sec_max']:.1f}")
    row("  interquartile range", "train",
        lambda r: f"{r['images_per_sec_iqr'][0]:.1f}-{r['images_per_sec_iqr'][1]:.1f}")
    row("first step (compile + 1 step), s", "compile", lambda r: f"{r['first_step_s']:.1f}")
    row("eval images/s (median)", "eval", lambda r: f"{r['images_per_sec']:.2f}")
    row("train GFLOP/s", "utilisation", lambda r: f"{r['train_gflops_per_sec']:.1f}")
    if any("mfu" in r for r in records):
        row("model FLOPs utilisation", "utilisation", lambda r: f"{100 * r['mfu']:.1f}%")
    row("first train step's memory growth, GB", "memory", lambda r: f"{r['growth_bytes'] / 1e9:.2f}")
    row("  peak memory in this process, GB", "memory", lambda r: f"{r['peak_bytes'] / 1e9:.2f}")
    lines.append(f"  (growth: each model alone in a fresh process; {records_for(records, 'memory', names[0])['source']}"
                 + ("; the second column's peak includes the first model" if len(names) > 1 else "") + ")")
    for r in records:
        if r.get("measurement") == "matmul_peak":
            lines.append(f"float32 matmul {r['size']}^3: numpy {r['numpy_gflops']:.0f} GFLOP/s, "
                         f"mindspore {r['mindspore_gflops']:.0f} GFLOP/s")
        if r.get("measurement") == "data":
            lines.append(f"data pipeline ({r['config']} train transforms, {r['file_size_px']} px files -> "
                         f"{r['crop_px']} px, {r['workers']} workers): {r['images_per_sec']:.1f} images/s")
        if "ratio" in r:
            lines.append(f"ours / {names[1]}: train {r['ratio']:.2f}x, eval {r['eval_ratio']:.2f}x")
        if r.get("measurement") == "distill":
            lines.append(format_distill(r))
        if r.get("measurement") == "profile":
            lines.append(f"one train step of ours under the profiler (trace: {r['trace']}):\n"
                         + format_profile(r["op_types"]))
    return "\n".join(lines)
