"""Training and evaluation runs: build data, model, optimizer and `Model`, then train or score.

`train.py` and `eval.py` parse arguments and call `run_training` / `run_evaluation`; everything a run needs
is built here from the config.
"""
import json
import logging
import time
from pathlib import Path
from typing import Optional

import mindspore as ms

from .callbacks import CheckpointAndMetrics, TrainProgress
from .checkpoint import (TrainState, check_fit, find_resume_checkpoint, load_model_weights, read_checkpoint,
                         train_state)
from .config import Config, per_device_batch, save_config
from .data import create_dataset
from .distributed import check_replicas, check_same_resume
from .engine import build_model, build_train_step
from .errors import ConfigError, UserError
from .models import model_from_config
from .optim import build_optimizer, lr_schedule, scaled_lr
from .runtime import Runtime, setup_runtime

log = logging.getLogger("vit_ms")


def setup_logging(run_dir: Optional[Path], rank: int) -> None:
    """Console plus `<run_dir>/train.log` (rank 0) or `train_rank<N>.log`: every rank keeps its own log."""
    logger = logging.getLogger("vit_ms")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if run_dir is not None:
        name = "train.log" if rank == 0 else f"train_rank{rank}.log"
        file_handler = logging.FileHandler(run_dir / name)
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)


def prepare_run_dir(cfg: Config, rank: int = 0) -> Path:
    """Create the run directory and prove it is writable before any training starts."""
    run_dir = Path(cfg.output_dir) / (cfg.run_name or "run")
    probe = run_dir / f".write_test_rank{rank}"  # per rank: all ranks probe the same directory at once
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to the run directory '{run_dir}' ({err.strerror}); choose a writable "
                        f"output_dir, e.g. --set output_dir=/tmp/runs") from err
    return run_dir


def check_num_classes(cfg: Config, class_names, split: str) -> None:
    """model.num_classes must match the class folders (validation uses the training split's class list)."""
    if cfg.model.num_classes != len(class_names):
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but '{cfg.data.root}/{split}' has "
                          f"{len(class_names)} class folders; set --set model.num_classes={len(class_names)}")


def resolve_resume(resume: Optional[str], run_dir: Path) -> Optional[Path]:
    if not resume:
        return None
    if resume == "auto":
        found = find_resume_checkpoint(run_dir)
        log.info("resume auto: %s", found or f"no checkpoint in {run_dir}, starting fresh")
        return found
    return Path(resume)


def trainable_parameters(model, freeze_backbone: bool):
    if not freeze_backbone:
        return model.trainable_params()
    if model.head is None:
        raise ConfigError("train.freeze_backbone=true needs a classification head (model.num_classes > 0)")
    return list(model.head.trainable_params())


def run_training(cfg: Config, resume: Optional[str] = None, cache_dir: Optional[Path] = None) -> dict:
    """Train as `cfg` says, resuming from a checkpoint path or 'auto'; returns the last epoch's record.

    `cache_dir` is where published weights named by `model.pretrained` are downloaded (None: the default).
    """
    runtime = setup_runtime(cfg)
    run_dir = prepare_run_dir(cfg, runtime.rank)
    setup_logging(run_dir, runtime.rank)
    if runtime.distributed:
        log.info("data-parallel rank %d of %d on %s", runtime.rank, runtime.world_size, runtime.device_target)
    resume_path = resolve_resume(resume, run_dir)
    resume_params = read_checkpoint(resume_path) if resume_path else None
    state = train_state(resume_params) if resume_params else TrainState()
    if runtime.distributed and resume:
        check_same_resume(resume_path, resume_params, state, runtime.rank, runtime.world_size, run_dir)

    batch = per_device_batch(cfg.train, runtime.world_size)
    train_ds, info = create_dataset(cfg, "train", True, batch_size=batch, num_shards=runtime.world_size,
                                    shard_id=runtime.rank, start_epoch=state.epoch, skip_steps=state.step_in_epoch,
                                    steps_per_epoch=cfg.train.steps_per_epoch)
    val_ds, _ = create_dataset(cfg, "val", False, batch_size=cfg.eval.batch_size or batch,
                                      num_shards=runtime.world_size, shard_id=runtime.rank)
    check_num_classes(cfg, info.class_names, cfg.data.train_split)

    model = model_from_config(cfg.model, runtime.device_target)
    if cfg.model.pretrained and resume_params is None:
        from .pretrained import load_pretrained

        report = load_pretrained(model, cfg.model.pretrained, sha256=cfg.model.pretrained_sha256, cache_dir=cache_dir)
        log.info("pretrained weights: %s", report)
    global_batch = batch * runtime.world_size
    lr = scaled_lr(cfg.optim, global_batch)
    if cfg.optim.lr_batch_size > 0:
        log.info("lr %.3e = base lr %.3e x global batch %d / %d", lr, cfg.optim.lr, global_batch,
                 cfg.optim.lr_batch_size)
    else:
        log.info("lr %.3e (optim.lr_batch_size=0: not scaled by the global batch %d)", lr, global_batch)
    lrs = lr_schedule(cfg.optim, lr, cfg.train.epochs, info.steps_per_epoch)
    optimizer = build_optimizer(model, trainable_parameters(model, cfg.train.freeze_backbone), cfg.optim, lrs)
    train_step = build_train_step(model, optimizer, cfg, runtime.amp_level)
    if resume_params is not None:
        check_fit(model, resume_params, source=f"checkpoint '{resume_path}'")
        # the per-step lr table comes from the config (a resumed run may extend train.epochs), not the file
        ms.load_param_into_net(train_step, {k: v for k, v in resume_params.items() if k != "learning_rate"})
        log.info("resumed from %s at epoch %d step %d (global step %d)", resume_path, state.epoch + 1,
                 state.step_in_epoch, state.global_step)

    main_dir = run_dir if runtime.is_main else None
    if main_dir is not None:
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "classes.txt").write_text("\n".join(info.class_names) + "\n", encoding="utf-8")
    dynamic = runtime.amp_level != "O0" and cfg.amp.loss_scale == "dynamic"
    progress = TrainProgress(state, info.steps_per_epoch, global_batch, lrs, cfg.train.log_interval, dynamic)
    eval_model = build_model(None, model, runtime.world_size)

    def evaluate() -> dict:
        metrics = eval_model.eval(val_ds, dataset_sink_mode=False)["cls"]
        train_step.set_train(True)  # eval switched the shared cells to inference mode
        return metrics

    checkpoints = CheckpointAndMetrics(train_step, main_dir, progress, evaluate, cfg.checkpoint,
                                       cfg.eval.interval_epochs, cfg.train.epochs)
    if state.epoch >= cfg.train.epochs:
        log.info("the run already completed %d of %d epochs; nothing to train", state.epoch, cfg.train.epochs)
        return {"epoch": state.epoch, "best_top1": state.best_top1}
    sink = cfg.train.sink_mode == "on" or (cfg.train.sink_mode == "auto" and runtime.device_target == "Ascend")
    log.info("training %s on %d images (%d steps/epoch, %d classes) for %d epochs", cfg.model.name, info.num_samples,
             info.steps_per_epoch, len(info.class_names), cfg.train.epochs)
    trainer = build_model(train_step, model, runtime.world_size)
    trainer.train(cfg.train.epochs, train_ds, callbacks=[progress, checkpoints], dataset_sink_mode=sink,
                  initial_epoch=state.epoch)
    if runtime.distributed:
        check_replicas(model, runtime.world_size)
    return {"epoch": state.epoch, "global_step": state.global_step, "best_top1": state.best_top1,
            "skipped_steps": progress.skipped_steps}


def run_evaluation(cfg: Config, ckpt: str) -> dict:
    """Score a checkpoint on the validation split: top-1, top-5, loss, image count and throughput."""
    runtime: Runtime = setup_runtime(cfg)
    setup_logging(None, runtime.rank)
    val_ds, info = create_dataset(cfg, "val", False, batch_size=cfg.eval.batch_size or cfg.train.batch_size,
                                  num_shards=runtime.world_size, shard_id=runtime.rank)
    check_num_classes(cfg, info.class_names, cfg.data.val_split)
    model = model_from_config(cfg.model, runtime.device_target)
    load_model_weights(model, ckpt)
    if runtime.amp_level != "O0":
        ms.amp.auto_mixed_precision(model, runtime.amp_level)
    start = time.time()
    metrics = build_model(None, model, runtime.world_size).eval(val_ds, dataset_sink_mode=False)["cls"]
    metrics["images_per_sec"] = round(metrics["num_images"] / max(time.time() - start, 1e-9), 2)
    log.info("evaluated %s on %d images: %s", ckpt, metrics["num_images"], json.dumps(metrics))
    return metrics
