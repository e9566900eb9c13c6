"""A training run: runtime and plan, run directory, data, model, optimizer, then the training loop.

    result = run_training(cfg, resume="auto")

`train.py` parses arguments and calls `run_training`; everything the run needs is built here from the config
and the run plan (`vit_ms.plan`), one step per function. What happens between the train steps (progress,
divergence, evaluation, checkpoints, pictures, stop) is `vit_ms.train.loop`; how `Model.train` is called
(with dataset sink mode: in which legs and chunks) is there too (`plan_legs`).
"""
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import mindspore as ms

from ..config import Config, config_to_dict
from ..config_loader import save_config
from ..data import Feed, create_dataset
from ..data.setup import prepare_data
from ..data.reading import reader_error
from ..errors import CheckpointError, ConfigError
from ..fs import write_text_atomic
from ..loader.opener import Student, open_model, use_trained_heads
from ..logs import setup_logging
from ..models import model_from_plan
from ..plan import RunPlan, resolve_plan
from ..runtime import graph_fingerprint, prepare_run_dir, setup_runtime, use_compile_cache
from ..weights.checkpoint import CheckpointMeta, check_fit, heads_trained_by, network_params, read_checkpoint, \
    read_meta
from ..weights.load import load_pretrained
from .checkpoint import TrainState, find_resume_checkpoint, remove_partial_files, train_state
from .distributed import check_replicas, check_same_resume
from .ema import has_ema, resume_ema
from .loop import (DivergenceDetector, LoopSettings, Progress, TrainLoop, chunk_advice, describe_legs,
                   plan_legs)
from .metrics import mindspore_model
from .optim import scaled_lr
from .pictures import CurvesWriter, TensorBoardScalars, require_tensorboardx
from .runlock import RunLock
from .saving import RunSaver
from .step import build_training
from .stopping import StopSignals

log = logging.getLogger("vit_ms")


def check_num_classes(num_classes: int, class_names: List[str], split_dir: Path) -> None:
    """model.num_classes must match the class folders of the split the labels come from."""
    if num_classes != len(class_names):
        raise ConfigError(f"model.num_classes={num_classes} but '{split_dir}' has {len(class_names)} class "
                          f"folders; set --set model.num_classes={len(class_names)}")


WEIGHTS_SUFFIXES = (".safetensors", ".npz", ".pth", ".pt", ".bin")  # weights files (model.pretrained), not runs


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
    if path.suffix.lower() in WEIGHTS_SUFFIXES:
        raise CheckpointError(f"'{path}' holds model weights, not a training checkpoint (no optimizer state, epoch "
                              f"or step to resume): start a fine-tune from it with --set model.pretrained={path}, "
                              f"or give --resume a .ckpt that train.py wrote (or auto)")
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


def build_step(cfg: Config, plan: RunPlan, model, steps_per_epoch: int, teacher=None):
    """Optimizer over the trainable parameters with the per-step lr table, and the train step (distilling from
    `teacher` when given); (step, lrs)."""
    lr = scaled_lr(cfg.optim, plan.global_batch_size)
    if cfg.optim.lr_batch_size > 0:
        log.info("lr %.3e = base lr %.3e x global batch %d / %d", lr, cfg.optim.lr, plan.global_batch_size,
                 cfg.optim.lr_batch_size)
    else:
        log.info("lr %.3e (optim.lr_batch_size=0: not scaled by the global batch %d)", lr, plan.global_batch_size)
    return build_training(cfg, plan, model, cfg.train.epochs, steps_per_epoch, teacher)


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


def optimizer_steps(train_step) -> int:
    """The optimizer's step count: the lr table's index (a skipped step does not advance it)."""
    return int(train_step.optimizer.global_step.asnumpy()[0])


def rebase_steps(train_step, resume: Resume, plan: RunPlan, steps_per_epoch: int) -> None:
    """A run resumed at an epoch boundary with another global batch: the optimizer-step count, which positions
    the lr schedule, becomes completed epochs x the new steps per epoch (mid-epoch changes are refused earlier).
    The run's own step count (`TrainState.global_step`, the records' step) goes on from where it was."""
    recorded = (resume.meta.plan or {}).get("global_batch_size")
    if resume.params is None or recorded in (None, plan.global_batch_size):
        return
    st = resume.state
    rebased = st.epoch * steps_per_epoch
    log.info("resumed with a global batch of %d instead of %d: optimizer step %d -> %d (epoch %d x %d steps)",
             plan.global_batch_size, recorded, optimizer_steps(train_step), rebased, st.epoch, steps_per_epoch)
    train_step.optimizer.global_step.set_data(ms.Tensor([rebased], ms.int32))


ALLOW_CHANGES = "--allow-changes"  # train.py's flag: resume with changes that jump the lr or drop saved state


def flat_config(values: dict, prefix: str = "") -> dict:
    """{"train": {"epochs": 5}} -> {"train.epochs": 5}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def schedule_change(cfg: Config, train_step, resume: Resume) -> Optional[str]:
    """How the lr at the resume point moves from what the checkpoint's run would have applied next (its saved lr
    tables at its optimizer step) to what this run applies (the rebuilt tables at the optimizer step now);
    None when it stays (within 0.1%)."""
    params, st = resume.params, resume.state
    old_step = int(params["global_step"].asnumpy().reshape(-1)[0]) if "global_step" in params else None
    new_step = optimizer_steps(train_step)
    for table in sorted((p for p in train_step.get_parameters() if p.name.startswith("learning_rate")),
                        key=lambda p: p.name):  # "learning_rate" (one table) before per-group ones
        if old_step is None or table.name not in params:
            continue
        old_lrs, new_lrs = params[table.name].asnumpy().reshape(-1), table.asnumpy().reshape(-1)
        old, new = float(old_lrs[min(old_step, len(old_lrs) - 1)]), float(new_lrs[min(new_step, len(new_lrs) - 1)])
        if abs(new - old) > 1e-3 * max(abs(old), abs(new)):
            where = f"epoch {st.epoch + 1}" + (f" step {st.step_in_epoch + 1}" if st.step_in_epoch else "")
            return f"cosine rebuilt for {cfg.train.epochs} epochs: lr {old:.1e} -> {new:.1e} at {where}"
    return None


def resume_changes(cfg: Config, train_step, resume: Resume) -> Tuple[List[str], List[str]]:
    """Every setting that differs from the checkpoint's config ("key: old -> new"), and what of it needs
    --allow-changes: the lr jumps at the resume point, saved EMA weights are dropped."""
    recorded = flat_config(resume.meta.config or {})
    current = flat_config(config_to_dict(cfg))
    if not recorded:  # a checkpoint that records no config: nothing to compare
        return [], []
    lines = [f"{key}: {json.dumps(recorded.get(key, '(not recorded)'))} -> {json.dumps(current.get(key, '(none)'))}"
             for key in sorted(set(recorded) | set(current)) if recorded.get(key) != current.get(key)]
    forced = []
    schedule = schedule_change(cfg, train_step, resume)
    if schedule:
        forced.append(schedule)
    if train_step.ema is None and has_ema(resume.params):
        forced.append("train.ema=false drops the checkpoint's EMA weights")
    return lines, forced


def check_resume_changes(cfg: Config, train_step, resume: Resume, allow_changes: bool) -> None:
    """Before the first step: list what a resume changes, and refuse changes that jump the lr or drop saved
    state unless --allow-changes was given."""
    if resume.params is None:
        return
    settings, forced = resume_changes(cfg, train_step, resume)
    if forced and not allow_changes:
        raise ConfigError(f"resuming from '{resume.path}' with settings that differ from the checkpoint's: "
                          f"{'; '.join(settings)}. With them {'; '.join(forced)}, so the resumed run would not "
                          f"continue the saved one: pass {ALLOW_CHANGES} to train.py to resume with them anyway, or "
                          f"resume with the checkpoint's settings (the run's config.yaml)")
    if settings:
        log.warning("resumed with settings that differ from the checkpoint's%s:\n  %s",
                    f" ({ALLOW_CHANGES})" if forced else "", "\n  ".join(settings + forced))


def write_run_files(run_dir: Path, cfg: Config, plan: RunPlan, class_names: List[str]) -> None:
    save_config(cfg, run_dir / "config.yaml")
    write_text_atomic(run_dir / "plan.json", json.dumps(plan.to_dict(), indent=2) + "\n")
    write_text_atomic(run_dir / "classes.txt", "\n".join(class_names) + "\n")


def pictures(cfg: Config, run_dir: Optional[Path], state: TrainState) -> list:
    """What is drawn after each epoch's record (main rank only): curves.png, and TensorBoard scalars when asked
    (hiding the points of training after the step `state` resumes from)."""
    if run_dir is None:
        return []
    tensorboard = [TensorBoardScalars(run_dir, purge_step=state.global_step + 1)] if cfg.train.tensorboard else []
    return [CurvesWriter(run_dir), *tensorboard]


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
    saver = RunSaver(train_step, main_dir, state, meta, cfg.checkpoint.keep_last, cfg.checkpoint.interval_epochs)
    saver.keep_records(state.epoch)  # before anything is drawn: the rows of what the checkpoint holds
    return TrainLoop(state, settings, progress=Progress(state, steps, plan.global_batch_size, cfg.train.epochs),
                     saver=saver, detector=DivergenceDetector(cfg.train.divergence_factor), evaluate=evaluate,
                     signals=signals, lrs=lrs, optimizer_steps=lambda: optimizer_steps(train_step),
                     pictures=pictures(cfg, main_dir, state))


def run_legs(cfg: Config, plan: RunPlan, resumed: Resume, train_ds, steps_per_epoch: int, trainer: ms.train.Model,
             loop: TrainLoop) -> None:
    """`Model.train` with the loop as its callback, once per leg (`plan_legs`) until the run ends or stops."""
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
            raise reader_error(err) or err
        if loop.stopped:
            return


def run_training(cfg: Config, resume: Optional[str] = None, cache_dir: Optional[Path] = None,
                 allow_changes: bool = False) -> dict:
    """Train as `cfg` says, resuming from a checkpoint path or 'auto'; returns the last epoch's record.

    `cache_dir` is where published weights named by `model.pretrained` are downloaded (None: the default).
    `allow_changes` (--allow-changes): resume even when the settings jump the lr or drop saved state.
    Raises TrainingStopped after SIGTERM/SIGINT (saved; see `stopping`), DivergenceError on divergence.
    """
    runtime = setup_runtime(cfg)
    plan = resolve_plan(cfg, runtime)
    run_dir = prepare_run_dir(cfg, plan.rank)
    if not plan.is_main:  # only rank 0 writes the run directory, so only rank 0 locks it
        return train_in(cfg, plan, run_dir, resume, cache_dir, allow_changes)
    with RunLock(run_dir) as lock:  # before anything is written: a second training into run_dir is refused
        return train_in(cfg, plan, run_dir, resume, cache_dir, allow_changes, lock_warning=lock.warning)


def train_in(cfg: Config, plan: RunPlan, run_dir: Path, resume: Optional[str], cache_dir: Optional[Path],
             allow_changes: bool = False, lock_warning: Optional[str] = None) -> dict:
    """`run_training` once the run directory is ours."""
    start_run(cfg, plan, run_dir, lock_warning)
    resumed = load_resume(resume, run_dir, plan)
    if plan.distributed and resume:
        check_same_resume(resumed.path, resumed.params, resumed.state, plan.rank, plan.world_size, run_dir)
    train_ds, val_ds, info = build_datasets(cfg, plan, resumed)
    model = model_from_plan(plan)
    initial_weights(model, cfg, resumed, cache_dir)
    teacher = None  # distill.*: opened anew each run (a resume too), frozen in the step (FrozenTeacher), outside
    if cfg.distill.type != "none":  # the optimizer and the checkpoints, in the student's plan and amp
        teacher = open_model(cfg.distill.teacher, cache_dir, teacher_of=Student(
            plan, info.class_names, cfg.distill.teacher_weights)).network
    use_trained_heads(model, heads_trained_by(config_to_dict(cfg)))  # an untaught head_dist: eval on the class head
    if plan.compile_cache_dir:  # before the first graph is built; uncached (with a warning) where it cannot write
        use_compile_cache(plan.compile_cache_dir, graph_fingerprint(config_to_dict(cfg), plan.to_dict(),
                                                                    info.steps_per_epoch, len(info.class_names),
                                                                    teacher))
    train_step, lrs = build_step(cfg, plan, model, info.steps_per_epoch, teacher)
    restore(train_step, model, resumed)
    state = resumed.state
    if state.epoch >= cfg.train.epochs:  # the run directory is left as the checkpoint's run wrote it
        log.info("the run already completed %d of %d epochs; nothing to train", state.epoch, cfg.train.epochs)
        return {"epoch": state.epoch, "best_top1": state.best_top1}
    rebase_steps(train_step, resumed, plan, info.steps_per_epoch)
    check_resume_changes(cfg, train_step, resumed, allow_changes)
    if train_step.ema is not None and resumed.params is not None:
        resume_ema(train_step.ema, list(train_step.weights), resumed.params, resumed.path)

    main_dir = run_dir if plan.is_main else None
    if main_dir is not None:
        write_run_files(run_dir, cfg, plan, info.class_names)
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
            "skipped_steps": state.skipped_steps}
