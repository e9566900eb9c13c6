"""The training loop's step/epoch sequence, progress lines, skipped steps, and how Model.train is called in legs
with dataset sink mode (MindSpore on CPU never sinks, so the call-backs it makes are played by FakeModelTrain,
following MindSpore 2.10's Model._train_process and Model._train_dataset_sink_process)."""
import json
import math

import mindspore as ms
import numpy as np
import pytest
from loop_helpers import make_loop
from mindspore import Tensor
from tiny import tiny_model

from vit_ms.config_loader import load_config
from vit_ms.errors import DivergenceError
from vit_ms.plan import resolve_plan
from vit_ms.runtime import Runtime
from vit_ms.train.checkpoint import TrainState, train_state
from vit_ms.train.loop import Leg, Progress, chunk_advice, chunk_steps, describe_legs, plan_legs
from vit_ms.train.step import build_train_step
from vit_ms.weights.checkpoint import read_checkpoint
from vit_ms.train.optim import build_optimizer


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def model_train(fake, leg: Leg, steps_per_epoch: int) -> int:
    """The call-backs `Model.train(**leg.train_kwargs(...))` makes: unsunk one per step over the leg's data
    epochs (the first shortened by skip_steps), sunk one per chunk of sink_size steps; returns the steps run."""
    fake.begin()
    if leg.sunk:
        calls = [leg.sink_size] * leg.train_kwargs(steps_per_epoch)["epoch"]
    else:
        calls = [1] * (leg.epochs * steps_per_epoch - leg.skip_steps)
    done = 0
    for steps in calls:
        fake.steps(steps)
        done += steps
        if fake.stop_requested:
            break
    return done


def test_a_skipped_step_is_counted_and_a_non_finite_loss_is_one_check(tmp_path):
    loop, ms_ = make_loop(tmp_path, dynamic=True)
    ms_.steps(loss=1.0)
    ms_.steps(loss=math.inf, skipped=1)  # overflow under dynamic scaling: skipped, its loss tests nothing
    assert loop.state.skipped_steps == 1 and loop.state.global_step == 2
    with pytest.raises(DivergenceError, match=r"diverged at global step 3 \(epoch 1, step 3\): the loss became nan"):
        ms_.steps(loss=math.nan)
    loop, ms_ = make_loop(tmp_path / "fixed", dynamic=False)
    with pytest.raises(DivergenceError, match=r"global step 1 .*the gradients of the step overflowed \(loss 1.0\) "
                                              r"without a dynamic loss scale"):
        ms_.steps(loss=1.0, skipped=1)  # an overflow without dynamic scaling is fatal


def test_progress_line_says_how_long_until_the_end_of_the_run(caplog, monkeypatch):
    """10 steps/epoch, 3 epochs, batch 8, one step per (fake) second: after epoch 2 step 4 the epoch has 6 steps
    left (6 s) and the run 16 (0:00:16)."""
    clock = iter(range(100))
    monkeypatch.setattr("vit_ms.train.loop.time.time", lambda: float(next(clock)))
    state = TrainState(epoch=1, step_in_epoch=4, global_step=14)
    progress = Progress(state, 10, 8, total_epochs=3)
    progress.add(1, 1.0)
    with caplog.at_level("INFO", logger="vit_ms"):
        progress.log_line(1.0, 1e-3)
    assert "epoch 2 step 4/10" in caplog.text and "eta 6s  run eta 0:00:16" in caplog.text
    assert progress.run_eta(8.0 / 3600) == "  run eta 16:00:00"
    assert Progress(state, 10, 8).run_eta(8.0) == ""  # total unknown: epoch eta only


def test_chunk_is_the_largest_divisor_of_the_epoch_within_the_log_interval():
    assert [chunk_steps(s, i) for s, i in [(1251, 100), (10, 4), (12, 100), (13, 10), (1, 100), (8, 8)]] == \
        [9, 2, 12, 1, 1, 8]
    for steps, interval in [(1251, 100), (96, 50), (5004, 100), (7, 3)]:
        k = chunk_steps(steps, interval)
        assert steps % k == 0 and k <= interval
        assert not [d for d in range(k + 1, interval + 1) if steps % d == 0]  # none larger fits
    assert chunk_advice(1251, 100) == ("dataset sink mode: 1251 steps an epoch have no divisor between 10 and "
                                       "train.log_interval=100, so each sink runs only 9 steps (a host round trip "
                                       "each); train.log_interval=139 would sink 139 steps at a time")
    assert chunk_advice(13, 10).endswith("only 1 step (a host round trip each); train.log_interval=13 would sink "
                                         "13 steps at a time")
    assert chunk_advice(5004, 100) is None and chunk_advice(12, 100) is None  # sinks of 36 and 12: no warning


def test_without_sink_mode_one_call_trains_the_whole_run():
    legs = plan_legs(TrainState(epoch=1, step_in_epoch=3), 4, 10, sink=False, log_interval=5)
    assert legs == [Leg(1, 3, 3, 0)]
    assert legs[0].train_kwargs(10) == dict(epoch=4, dataset_sink_mode=False, initial_epoch=1)
    assert plan_legs(TrainState(epoch=4), 4, 10, sink=True, log_interval=5) == []  # nothing left


def test_sink_mode_resumed_mid_epoch_gives_every_epoch_its_full_length(tmp_path):
    """10 steps an epoch, resumed at epoch 2 step 3 of 4 epochs: the 7 steps left of epoch 2 unsunk, then epochs
    3 and 4 in chunks of 5 from a dataset starting at epoch 3; sinking the shortened epoch would have made 7 the
    length of every epoch."""
    state = TrainState(epoch=1, step_in_epoch=3, global_step=13)
    legs = plan_legs(state, 4, 10, sink=True, log_interval=5)
    assert legs == [Leg(1, 3, 1, 0), Leg(2, 0, 2, 5)]
    assert [leg.train_kwargs(10) for leg in legs] == [dict(epoch=2, dataset_sink_mode=False, initial_epoch=1),
                                                      dict(epoch=4, dataset_sink_mode=True, sink_size=5)]
    assert describe_legs(legs, 10) == "epoch 2 from step 4 step by step; epochs 3-4 sunk, 5 steps a sink (2 an epoch)"
    loop, fake = make_loop(tmp_path, steps_per_epoch=10, total_epochs=4, state=state)
    assert sum(model_train(fake, leg, 10) for leg in legs) == 27  # exactly the steps left
    assert [(r["epoch"], r["step"]) for r in records(tmp_path)] == [(2, 20), (3, 30), (4, 40)]
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (4, 0)


def test_sink_mode_logs_saves_and_counts_skipped_steps_every_chunk(tmp_path, caplog):
    """12 steps an epoch, log_interval 4: chunks of 4, so lines, interval saves and the skipped-step count see
    steps 4, 8, 12 with their true numbers; 2 of one chunk's steps skipped are both counted."""
    legs = plan_legs(TrainState(), 2, 12, sink=True, log_interval=4)
    assert legs == [Leg(0, 0, 2, 4)] and legs[0].train_kwargs(12)["sink_size"] == 4
    loop, fake = make_loop(tmp_path, steps_per_epoch=12, total_epochs=2, log_interval=4, interval_steps=4)
    fake.begin()
    with caplog.at_level("INFO", logger="vit_ms"):
        fake.steps(4, loss=2.0)
        assert (tmp_path / ".last.pending.partial.ckpt").is_file()  # the step-4 save waits for the next loss
        fake.steps(4, loss=1.9, skipped=2, last_skipped=False)
        assert train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (0, 4)
        fake.steps(4, loss=1.8)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1 step")]
    assert [line.split("  ")[0] for line in lines] == ["epoch 1 step 4/12", "epoch 1 step 8/12", "epoch 1 step 12/12"]
    assert loop.state.skipped_steps == 2 and records(tmp_path)[0]["skipped_steps"] == 2
    assert records(tmp_path)[0]["train_loss"] == pytest.approx(np.mean([2.0, 1.9, 1.8]))

    loop, fake = make_loop(tmp_path / "fixed", steps_per_epoch=12, log_interval=4, dynamic=False)
    fake.steps(4, loss=2.0)
    with pytest.raises(DivergenceError, match=r"at global step 8 \(epoch 1, step 8\): the gradients of 1 of the last "
                                              r"4 steps overflowed"):
        fake.steps(4, loss=1.9, skipped=1, last_skipped=False)  # a step in the middle of the chunk: still caught


def test_a_stop_in_the_unsunk_rest_of_an_epoch_runs_no_sunk_leg(tmp_path):
    import signal

    state = TrainState(epoch=0, step_in_epoch=2, global_step=2)
    legs = plan_legs(state, 3, 6, sink=True, log_interval=3)
    loop, fake = make_loop(tmp_path, steps_per_epoch=6, total_epochs=3, state=state, received=signal.SIGTERM)
    assert model_train(fake, legs[0], 6) == 1 and loop.stopped  # the trainer stops before the next leg
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (0, 3)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_optimizer_counts_applied_steps_only(name):
    """The loop counts skipped steps as steps run minus optimizer steps (exact for a sunk chunk too)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = load_config("demo", [f"optim.name={name}"])
    model = tiny_model(num_classes=3)
    optimizer = build_optimizer(model, model.trainable_params(), cfg.optim, [1e-3] * 4)
    step = build_train_step(model, optimizer, cfg, resolve_plan(cfg, Runtime("CPU")))
    labels = Tensor(np.array([0, 1], np.int32))
    good = Tensor(np.zeros((2, 3, 32, 32), np.float32))
    for images, applied in [(good, 1), (Tensor(np.full((2, 3, 32, 32), np.nan, np.float32)), 0), (good, 1)]:
        before = int(optimizer.global_step.asnumpy()[0])
        _, overflow, _ = step(images, labels)
        assert int(optimizer.global_step.asnumpy()[0]) - before == applied and bool(overflow.asnumpy()) != applied


@pytest.mark.parametrize("sink_mode", [True, False])
def test_the_trainer_calls_model_train_once_per_leg_with_its_own_dataset(monkeypatch, sink_mode):
    """Resumed at epoch 2 step 3 (10 steps an epoch, 3 epochs): with sink mode, the rest of epoch 2 from the
    resumed dataset, then epoch 3 sunk from a dataset built to start there; without, one call from the resumed
    dataset."""
    from types import SimpleNamespace

    from vit_ms.train import trainer

    built = []
    monkeypatch.setattr(trainer, "train_dataset", lambda cfg, plan, resume, epoch, skip: (
        built.append((epoch, skip)) or f"dataset from epoch {epoch} step {skip}", None))
    calls = []
    fake_model = SimpleNamespace(train=lambda train_dataset, callbacks, **kw: calls.append((train_dataset, kw)))
    cfg = load_config("demo", ["train.epochs=3", "train.log_interval=5"])
    plan = SimpleNamespace(sink_mode=sink_mode)
    resumed = trainer.Resume(state=TrainState(epoch=1, step_in_epoch=3, global_step=13))
    trainer.run_legs(cfg, plan, resumed, "resumed dataset", 10, fake_model, SimpleNamespace(stopped=False))
    if sink_mode:
        assert calls == [("resumed dataset", dict(epoch=2, dataset_sink_mode=False, initial_epoch=1)),
                         ("dataset from epoch 2 step 0", dict(epoch=2, dataset_sink_mode=True, sink_size=5))]
        assert built == [(2, 0)]
    else:
        assert calls == [("resumed dataset", dict(epoch=3, dataset_sink_mode=False, initial_epoch=1))]
        assert built == []


def test_a_call_back_past_the_end_of_an_epoch_is_an_error_not_a_lost_step(tmp_path):
    loop, fake = make_loop(tmp_path, steps_per_epoch=6)
    fake.steps(4)
    with pytest.raises(RuntimeError, match="MindSpore reported 4 steps after step 4 of a 6-step epoch"):
        fake.steps(4)


def test_the_logged_and_recorded_lr_is_the_one_the_optimizer_applied(tmp_path, caplog):
    """lr table 1, 2, 3, ... (one entry per optimizer step); steps 2 and 3 of a 4-step epoch skipped: the lines
    show the lr of the last applied update (1, 1, 1, 2), not the table at the train step (1, 2, 3, 4)."""
    loop, fake = make_loop(tmp_path, steps_per_epoch=4, total_epochs=1, log_interval=1,
                           lrs=[float(i) for i in range(1, 9)])
    with caplog.at_level("INFO", logger="vit_ms"):
        for skipped in [0, 1, 1, 0]:
            fake.steps(1, loss=1.0, skipped=skipped)
    lrs = [float(line.split("lr ")[1].split()[0]) for line in caplog.messages if line.startswith("epoch 1 step")]
    assert lrs == [1.0, 1.0, 1.0, 2.0] and fake.optimizer_step == 2
    assert records(tmp_path)[0]["lr"] == 2.0 and records(tmp_path)[0]["skipped_steps"] == 2
    assert (loop.state.global_step, loop.state.skipped_steps) == (4, 2)
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).skipped_steps == 2  # saved: a resume goes on


def test_a_failed_save_leaves_no_row_and_a_resume_gives_each_epoch_one_row(tmp_path, monkeypatch):
    """Epoch 2's checkpoints cannot be written (disk full): its metrics row is not written either. A resume
    from epoch 1's last.ckpt trains epochs 2 and 3 and metrics.jsonl ends with one row per epoch, steps rising;
    rows a run wrote beyond its checkpoint are dropped on resume."""
    import errno

    from vit_ms.errors import CheckpointError

    loop, fake = make_loop(tmp_path, steps_per_epoch=2, total_epochs=3)
    fake.steps(1)
    fake.steps(1)
    assert [r["epoch"] for r in records(tmp_path)] == [1]

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(ms, "save_checkpoint", disk_full)
        fake.steps(1)
        with pytest.raises(CheckpointError, match="No space left on device"):
            fake.steps(1)
    assert [r["epoch"] for r in records(tmp_path)] == [1]  # no row for weights no checkpoint holds

    with open(tmp_path / "metrics.jsonl", "a") as f:  # as if an earlier run had gone further than last.ckpt
        f.write(json.dumps({"epoch": 2, "step": 4}) + "\n" + json.dumps({"epoch": 3, "step": 6}) + "\n")
    state = train_state(read_checkpoint(tmp_path / "last.ckpt"))
    assert state.position == (1, 0)
    loop, fake = make_loop(tmp_path, steps_per_epoch=2, total_epochs=3, state=state)
    loop.saver.keep_records(state.epoch)
    assert [r["epoch"] for r in records(tmp_path)] == [1]
    for _ in range(4):
        fake.steps(1)
    assert [(r["epoch"], r["step"]) for r in records(tmp_path)] == [(1, 2), (2, 4), (3, 6)]
    assert all("train_loss" in r for r in records(tmp_path))  # the rows this run wrote, not the stale ones
