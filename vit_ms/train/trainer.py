"""A training run: runtime and plan, run directory, data, model, optimizer, then the training loop.

    result = run_training(cfg, resume="auto")

`train.py` parses arguments and calls `run_training`; everything the run needs is built here from the config
and the run plan (`vit_ms.plan`), one step per function. What happens between the train steps (progress,
divergence, evaluation, checkpoints, pictures, stop) is `vit_ms.train.loop`; how `Model.train` is called
(with dataset sink mode: in which legs and chunks) is `vit_ms.train.sink`.
"""
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import mindspore as ms

from ..config import Config, config_to_dict, save_config
from ..data import Feed, create_dataset
from ..data.setup import prepare_data
from ..data.native_source import removed_file_error
from ..errors import ConfigError, UserError
from ..fs import prove_writable
from ..logs import setup_logging
from ..models import model_from_plan
from ..plan import RunPlan, resolve_plan
from ..runtime import run_dir_of, setup_runtime, use_compile_cache
from ..weights.load import load_pretrained
from .checkpoint import (CheckpointMeta, TrainState, check_fit, find_resume_checkpoint, network_params,
                         read_checkpoint, read_meta, remove_partial_files, train_state)
from .curves import CurvesWriter
from .distributed import check_replicas, check_same_resume
from .divergence import DivergenceDetector
from .ema import resume_ema
from .loop import LoopSettings, TrainLoop
from .metrics import mindspore_model
from .optim import build_optimizer, lr_schedule, scaled_lr
from .progress import Progress
from .saving import RunSaver
from .sink import chunk_advice, describe_legs, plan_legs
from .teacher import build_teacher
from .tensorboard import TensorBoardScalars, require_tensorboardx
from .runlock import RunLock
from .signals import StopSignals
from .step import build_train_step

log = logging.getLogger("vit_ms")


def prepare_run_dir(cfg: Config, rank: int = 0) -> Path:
    """Create the run directory and prove it is writable before any training starts."""
    run_dir = run_dir_of(cfg)
    try:
        prove_writable(run_dir, f".write_test_rank{rank}")  # per rank: all ranks probe the same directory at once
    except OSError as err:
        raise UserError(f"cannot write to the run directory '{run_dir}' ({err.strerror}); choose a writable "
                        f"output_dir, e.g. --set output_dir=/tmp/runs") from err
    return run_dir


def check_num_classes(num_classes: int, class_names: List[str], split_dir: Path) -> None:
    """model.num_classes must match the class folders of the split the labels come from."""
    if num_classes != len(class_names):
        raise ConfigError(f"model.num_classes={num_classes} but '{split_dir}' has {len(class_names)} class "
                          f"folders; set --set model.num_classes={len(class_names)}")


@dataclass
class Resume:
    """Where a run continues from: nothing (a fresh start) or a checkpoint's contents."""
    path: Optional[Path] = None
    params: Optional[dict] = None
    state: TrainState = field(default_factory=TrainState)
    meta: CheckpointMeta = field(default_factory=CheckpointMeta)


def load_resume(resume: Optional[str], run_dir: Path, plan: RunPlan) -> Resume:
    """Read the checkpoint `resume` names ('auto': the one recording the most training) and check it fits the plan."""
    path = find_resume_checkpoint(run_dir) if resume == "auto" else (Path(resume) if resume else None)
    if resume == "auto" and path is None:
        log.info("resume auto: no checkpoint in %s, starting fresh", run_dir)
    if path is None:
        return Resume()
    params = read_checkpoint(path)
    found = Resume(path, params, train_state(params), read_meta(params))
    recorded = (found.meta.plan or {}).get("global_batch_size")
    if found.state.step_in_epoch and recorded not in (None, plan.global_batch_size):
        raise ConfigError(
            f"checkpoint '{path}' stopped in the middle of epoch {found.state.epoch + 1} with a global batch of "
            f"{recorded}, but this run's global batch is {plan.global_batch_size}: the position in the epoch "
            f"and the lr schedule count steps of the old batch. Resume with the same train.batch_size / "
            f"train.global_batch_size, or resume from an epoch checkpoint (epoch_*.ckpt) or a fresh run")
    return found


def classes_source(resume: Resume) -> str:
    return f"the checkpoint '{resume.path}' (its recorded class list)" if resume.meta.class_names else ""


def train_dataset(cfg: Config, plan: RunPlan, resume: Resume, start_epoch: int, skip_steps: int):
    """This rank's shard of the train split from epoch `start_epoch`, leaving out its first `skip_steps` steps."""
    feed = Feed.from_plan(cfg, plan, training=True, start_epoch=start_epoch, skip_steps=skip_steps)
    return create_dataset(cfg.data, "train", feed, resume.meta.class_names, classes_source(resume))


def build_datasets(cfg: Config, plan: RunPlan, resume: Resume):
    """The train split (this rank's shard, from the resume position) and the val split; their DatasetInfo."""
    train_ds, info = train_dataset(cfg, plan, resume, resume.state.epoch, resume.state.step_in_epoch)
    val_ds, _ = create_dataset(cfg.data, "val", Feed.from_plan(cfg, plan, training=False), info.class_names,
                               classes_source(resume) or "the training split")
    check_num_classes(plan.arch.num_classes, info.class_names, Path(cfg.data.root) / cfg.data.train_split)
    return train_ds, val_ds, info


def initial_weights(model, cfg: Config, resume: Resume, cache_dir: Optional[Path]) -> None:
    """Published weights for a fresh run that names them (a resumed run takes the checkpoint's)."""
    if cfg.model.pretrained and resume.params is None:
        report = load_pretrained(model, cfg.model.pretrained, sha256=cfg.model.pretrained_sha256, cache_dir=cache_dir)
        log.info("pretrained weights: %s", report)


def trainable_parameters(model, freeze_backbone: bool):
    if not freeze_backbone:
        return model.trainable_params()
    if model.head is None:
        raise ConfigError("train.freeze_backbone=true needs a classification head (model.num_classes > 0)")
    heads = [model.head] + ([model.head_dist] if model.distilled else [])  # a distilled model's two heads
    return [p for head in heads for p in head.trainable_params()]


def build_step(cfg: Config, plan: RunPlan, model, steps_per_epoch: int, teacher=None):
    """Optimizer over the trainable parameters with the per-step lr table, and the train step (distilling from
    `teacher` when given); (step, lrs)."""
    lr = scaled_lr(cfg.optim, plan.global_batch_size)
    if cfg.optim.lr_batch_size > 0:
        log.info("lr %.3e = base lr %.3e x global batch %d / %d", lr, cfg.optim.lr, plan.global_batch_size,
                 cfg.optim.lr_batch_size)
    else:
        log.info("lr %.3e (optim.lr_batch_size=0: not scaled by the global batch %d)", lr, plan.global_batch_size)
    lrs = lr_schedule(cfg.optim, lr, cfg.train.epochs, steps_per_epoch)
    optimizer = build_optimizer(model, trainable_parameters(model, cfg.train.freeze_backbone), cfg.optim, lrs)
    return build_train_step(model, optimizer, cfg, plan, teacher), lrs


def restore(train_step, model, resume: Resume) -> None:
    """Load a resumed checkpoint's weights, optimizer and loss-scale state into the train step."""
    if resume.params is None:
        return
    check_fit(model, resume.params, source=f"checkpoint '{resume.path}'")
    # the per-step lr table comes from the config (a resumed run may extend train.epochs), not the file: the
    # train step's own tables (also per-group ones) are passed in their place, so none is "not loaded"
    own_lr = {p.name: p for p in train_step.get_parameters() if p.name.startswith("learning_rate")}
    ms.load_param_into_net(train_step, {**{k: v for k, v in network_params(resume.params).items()
                                           if not k.startswith("learning_rate")}, **own_lr})
    st = resume.state
    log.info("resumed from %s at epoch %d step %d (global step %d)", resume.path, st.epoch + 1, st.step_in_epoch,
             st.global_step)


def rebase_steps(train_step, resume: Resume, plan: RunPlan, steps_per_epoch: int) -> None:
    """A run resumed at an epoch boundary with another global batch: the optimizer-step count, which positions
    the lr schedule, becomes completed epochs x the new steps per epoch (mid-epoch changes are refused earlier)."""
    recorded = (resume.meta.plan or {}).get("global_batch_size")
    if resume.params is None or recorded in (None, plan.global_batch_size):
        return
    st = resume.state
    rebased = st.epoch * steps_per_epoch
    log.info("resumed with a global batch of %d instead of %d: optimizer step %d -> %d (epoch %d x %d steps)",
             plan.global_batch_size, recorded, st.global_step, rebased, st.epoch, steps_per_epoch)
    st.global_step = rebased
    train_step.optimizer.global_step.set_data(ms.Tensor([rebased], ms.int32))


def write_run_files(run_dir: Path, cfg: Config, plan: RunPlan, class_names: List[str]) -> None:
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2) + "\n", encoding="utf-8")
    (run_dir / "classes.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")


def pictures(cfg: Config, run_dir: Optional[Path]) -> list:
    """What is drawn after each epoch's record (main rank only): curves.png, and TensorBoard scalars when asked."""
    if run_dir is None:
        return []
    return [CurvesWriter(run_dir), *([TensorBoardScalars(run_dir)] if cfg.train.tensorboard else [])]


def start_run(cfg: Config, plan: RunPlan, run_dir: Path, lock_warning: Optional[str]) -> None:
    """Logging, the plan in the log, optional packages checked, partial files of an interrupted save removed,
    the data's process-wide settings made (and the demo set written when data.generate asks)."""
    setup_logging(run_dir, plan.rank)
    if cfg.train.tensorboard and plan.is_main:
        require_tensorboardx()  # a missing optional package stops the run before any work
    if lock_warning:
        log.warning(lock_warning)
    log.info("plan: %s", plan.describe())
    if plan.distributed:
        log.info("data-parallel rank %d of %d on %s", plan.rank, plan.world_size, plan.device_target)
    for note in plan.notes:
        log.info("plan: %s", note)
    if plan.is_main:
        remove_partial_files(run_dir)
    prepare_data(cfg.data, cfg.train.seed, cfg.train.deterministic)


def evaluator(model, train_step, val_ds, plan: RunPlan):
    """The epoch-end evaluation: all ranks' shares of the val split (and with the EMA weights swapped in, when
    kept), then back to training mode."""
    eval_model = mindspore_model(None, model, plan.world_size)

    def evaluate() -> dict:
        metrics = eval_model.eval(val_ds, dataset_sink_mode=False)["cls"]
        if train_step.ema is not None:  # the same network with the averaged weights swapped in
            with train_step.ema.applied(list(train_step.weights)):
                metrics["ema"] = eval_model.eval(val_ds, dataset_sink_mode=False)["cls"]
        train_step.set_train(True)  # eval switched the shared cells to inference mode
        return metrics

    return evaluate


def build_loop(cfg: Config, plan: RunPlan, state: TrainState, info, train_step, lrs, evaluate,
               main_dir: Optional[Path], signals: StopSignals) -> TrainLoop:
    """The training loop and what it drives: progress, saves, divergence check, evaluation, pictures, stop."""
    steps = info.steps_per_epoch
    meta = CheckpointMeta(config_to_dict(cfg), plan.to_dict(), info.class_names)
    settings = LoopSettings(steps, cfg.train.epochs, cfg.train.log_interval, cfg.checkpoint.interval_steps,
                            cfg.eval.interval_epochs, plan.loss_scale == "dynamic", plan.world_size)
    return TrainLoop(state, settings, progress=Progress(state, steps, plan.global_batch_size, lrs, cfg.train.epochs),
                     saver=RunSaver(train_step, main_dir, state, meta, cfg.checkpoint.keep_last,
                                    cfg.checkpoint.interval_epochs),
                     detector=DivergenceDetector(cfg.train.divergence_factor), evaluate=evaluate, signals=signals,
                     optimizer_steps=lambda: int(train_step.optimizer.global_step.asnumpy()[0]),
                     pictures=pictures(cfg, main_dir))


def run_legs(cfg: Config, plan: RunPlan, resumed: Resume, train_ds, steps_per_epoch: int, trainer: ms.train.Model,
             loop: TrainLoop) -> None:
    """`Model.train` with the loop as its callback, once per leg (`vit_ms.train.sink`) until the run ends or stops."""
    legs = plan_legs(resumed.state, cfg.train.epochs, steps_per_epoch, plan.sink_mode, cfg.train.log_interval)
    if plan.sink_mode:
        log.info("dataset sink mode: %s", describe_legs(legs, steps_per_epoch))
        advice = chunk_advice(steps_per_epoch, cfg.train.log_interval)
        if advice:
            log.warning(advice)
    for i, leg in enumerate(legs):  # the first starts where train_ds does
        data = train_ds if i == 0 else train_dataset(cfg, plan, resumed, leg.first_epoch, leg.skip_steps)[0]
        try:
            trainer.train(train_dataset=data, callbacks=[loop], **leg.train_kwargs(steps_per_epoch))
        except RuntimeError as err:
            raise removed_file_error(err) or err
        if loop.stopped:
            return


def run_training(cfg: Config, resume: Optional[str] = None, cache_dir: Optional[Path] = None) -> dict:
    """Train as `cfg` says, resuming from a checkpoint path or 'auto'; returns the last epoch's record.

    `cache_dir` is where published weights named by `model.pretrained` are downloaded (None: the default).
    Raises TrainingStopped after SIGTERM/SIGINT (saved; see `stopping`), DivergenceError on divergence.
    """
    runtime = setup_runtime(cfg)
    plan = resolve_plan(cfg, runtime)
    run_dir = prepare_run_dir(cfg, plan.rank)
    if not plan.is_main:  # only rank 0 writes the run directory, so only rank 0 locks it
        return train_in(cfg, plan, run_dir, resume, cache_dir)
    with RunLock(run_dir) as lock:  # before anything is written: a second training into run_dir is refused
        return train_in(cfg, plan, run_dir, resume, cache_dir, lock_warning=lock.warning)


def train_in(cfg: Config, plan: RunPlan, run_dir: Path, resume: Optional[str], cache_dir: Optional[Path],
             lock_warning: Optional[str] = None) -> dict:
    """`run_training` once the run directory is ours."""
    start_run(cfg, plan, run_dir, lock_warning)
    resumed = load_resume(resume, run_dir, plan)
    if plan.distributed and resume:
        check_same_resume(resumed.path, resumed.params, resumed.state, plan.rank, plan.world_size, run_dir)
    train_ds, val_ds, info = build_datasets(cfg, plan, resumed)
    if plan.compile_cache_dir:  # the graphs' shapes follow the config, the plan and the steps per epoch
        fingerprint = {"config": config_to_dict(cfg), "plan": {**plan.to_dict(), "notes": []},
                       "steps_per_epoch": info.steps_per_epoch}
        log.info("compile cache: %s", use_compile_cache(plan.compile_cache_dir, fingerprint))
    model = model_from_plan(plan)
    initial_weights(model, cfg, resumed, cache_dir)
    teacher = build_teacher(cfg, plan, cache_dir)  # distill.*: frozen, outside the optimizer and checkpoints
    train_step, lrs = build_step(cfg, plan, model, info.steps_per_epoch, teacher)
    restore(train_step, model, resumed)
    rebase_steps(train_step, resumed, plan, info.steps_per_epoch)
    if train_step.ema is not None and resumed.params is not None:
        resume_ema(train_step.ema, list(train_step.weights), resumed.params, resumed.path)

    state = resumed.state
    main_dir = run_dir if plan.is_main else None
    if main_dir is not None:
        write_run_files(run_dir, cfg, plan, info.class_names)
    if state.epoch >= cfg.train.epochs:
        log.info("the run already completed %d of %d epochs; nothing to train", state.epoch, cfg.train.epochs)
        return {"epoch": state.epoch, "best_top1": state.best_top1}
    log.info("training %s on %d images (%d steps/epoch, %d classes) for %d epochs", plan.arch.name,
             info.num_samples, info.steps_per_epoch, len(info.class_names), cfg.train.epochs)
    with StopSignals() as signals:
        loop = build_loop(cfg, plan, state, info, train_step, lrs, evaluator(model, train_step, val_ds, plan),
                          main_dir, signals)
        trainer = mindspore_model(train_step, model, plan.world_size)
        run_legs(cfg, plan, resumed, train_ds, info.steps_per_epoch, trainer, loop)
    if plan.distributed:  # also a barrier: after a stop no rank exits (and makes msrun kill the rest) before
        check_replicas(model, plan.world_size)  # rank 0 has finished writing last.ckpt
    loop.finish()
    return {"epoch": state.epoch, "global_step": state.global_step, "best_top1": state.best_top1,
            "skipped_steps": loop.progress.skipped_steps}
