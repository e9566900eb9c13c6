"""Graceful stop: the signal flag, a second signal, the stop callback's saves and agreement across ranks.

The end-to-end check (SIGTERM/SIGINT mid-epoch, then --resume auto reaches the uninterrupted weights) is in
test_train.py.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mindspore import nn

from vit_ms.config import load_config
from vit_ms.errors import TrainingStopped
from vit_ms.train.callbacks import CheckpointAndMetrics, TrainProgress
from vit_ms.train.checkpoint import TrainState, read_checkpoint, train_state
from vit_ms.train.signals import StopSignals, exit_status
from vit_ms.train.stopping import GracefulStop, first_signal

ROOT = Path(__file__).resolve().parent.parent


class Context:
    """A RunContext stand-in: records request_stop()."""

    def __init__(self):
        self.stop_requested = False

    def original_args(self):
        return SimpleNamespace()

    def request_stop(self):
        self.stop_requested = True


def stop_setup(tmp_path, received, steps_per_epoch=4, world_size=1, gather=None, rank0=True):
    cfg = load_config("demo", ["checkpoint.interval_steps=0"])
    progress = TrainProgress(TrainState(), steps_per_epoch, 8, [1e-3] * 16, log_interval=100,
                             dynamic_loss_scale=False)
    checkpoints = CheckpointAndMetrics(nn.Dense(3, 2), tmp_path if rank0 else None, progress,
                                       lambda: {"top1": 0.5, "top5": 1.0, "loss": 1.0, "num_images": 4},
                                       cfg.checkpoint, 1, 3)
    signals = SimpleNamespace(received=received)
    return progress, checkpoints, GracefulStop(signals, checkpoints, world_size, gather)


def test_exit_status_is_128_plus_the_signal():
    assert (exit_status(signal.SIGTERM), exit_status(signal.SIGINT)) == (143, 130)


def test_first_signal_sets_the_flag_and_puts_back_the_default_action(capfd):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with StopSignals() as signals:
        assert signal.getsignal(signal.SIGTERM) == signals.handle
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received == signal.SIGINT
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL == signal.getsignal(signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert "received SIGINT: finishing the current step" in capfd.readouterr().err


SECOND = """import os, signal, sys, threading, time
from vit_ms.train.signals import StopSignals, watch_stop_signals
if sys.argv[2] == "watch":
    watch_stop_signals()
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # a thread started after: still blocked
sig = int(sys.argv[1])
with StopSignals() as s:
    os.kill(os.getpid(), sig)
    time.sleep(1)  # the watcher thread takes it meanwhile
    print("first", s.received, flush=True)
    os.kill(os.getpid(), sig)
    time.sleep(5)
    print("survived", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("mode", ["watch", "handlers"])
def test_a_second_signal_ends_the_process_at_once(sig, mode):
    proc = subprocess.run([sys.executable, "-c", SECOND, str(int(sig)), mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    # the watcher exits with 128 + signal; with handlers the default action kills the process
    assert proc.returncode == (128 + sig if mode == "watch" else -sig), proc.stderr
    assert proc.stdout.split() == ["first", str(int(sig))]
    assert f"received {sig.name}: finishing the current step" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_outside_training_the_watcher_ends_the_process_at_once(sig):
    script = ("import time\nfrom vit_ms.train.signals import watch_stop_signals\nwatch_stop_signals()\n"
              "print('ready', flush=True)\ntime.sleep(30)\nprint('survived', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + sig and out == "" and f"received {sig.name}: exiting at once" in err


def test_stop_mid_epoch_saves_last_and_skips_the_epoch_end(tmp_path):
    progress, checkpoints, stop = stop_setup(tmp_path, received=signal.SIGTERM)
    progress.state.step_in_epoch = progress.state.global_step = 2
    context = Context()
    stop.on_train_step_end(context)
    assert context.stop_requested and checkpoints.stopped
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (0, 2)
    checkpoints.on_train_epoch_end(context)  # Model.train still ends the epoch after the break
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no eval, metrics or epoch checkpoint
    with pytest.raises(TrainingStopped, match=r"stopped by SIGTERM after global step 2 \(epoch 1 step 2/4\) "
                                              r"and saved .*last.ckpt.*--resume auto") as err:
        stop.raise_if_stopped()
    assert err.value.exit_status == 143


def test_stop_in_the_last_step_lets_the_epoch_end_save_first(tmp_path):
    progress, checkpoints, stop = stop_setup(tmp_path, received=signal.SIGINT)
    progress.state.step_in_epoch = progress.state.global_step = 4
    context = Context()
    stop.on_train_step_end(context)
    assert not context.stop_requested and not (tmp_path / "last.ckpt").exists()
    checkpoints.on_train_epoch_end(context)  # CheckpointAndMetrics comes first: eval, best, epoch, last
    stop.on_train_epoch_end(context)
    assert context.stop_requested
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (1, 0)
    assert {"best.ckpt", "epoch_0001.ckpt", "metrics.jsonl"} <= {p.name for p in tmp_path.iterdir()}
    with pytest.raises(TrainingStopped, match="after global step 4 .the end of epoch 1.") as err:
        stop.raise_if_stopped()
    assert err.value.exit_status == 130


def test_a_signal_during_the_last_epochs_end_lets_the_run_complete(tmp_path):
    progress, checkpoints, stop = stop_setup(tmp_path, received=signal.SIGTERM)
    progress.state.epoch, progress.state.step_in_epoch = 2, 4  # the last of 3 epochs
    context = Context()
    checkpoints.on_train_epoch_end(context)
    stop.on_train_epoch_end(context)
    assert not context.stop_requested and train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (3, 0)
    stop.raise_if_stopped()  # exit 0: the run finished


def test_no_signal_no_stop(tmp_path):
    progress, checkpoints, stop = stop_setup(tmp_path, received=None)
    progress.state.step_in_epoch = 1
    context = Context()
    stop.on_train_step_end(context)
    stop.on_train_epoch_end(context)
    assert not context.stop_requested and not list(tmp_path.iterdir())
    stop.raise_if_stopped()


def test_ranks_agree_on_the_lowest_ranks_signal(tmp_path):
    assert first_signal(np.array([[0], [15], [2]])) == 15 and first_signal(np.zeros((4, 1))) is None
    calls = []

    def gather(row, world_size):  # rank 0 (this one) saw nothing, rank 1 got SIGINT
        calls.append((list(row), world_size))
        return np.array([[0], [int(signal.SIGINT)]], np.int32)

    progress, checkpoints, stop = stop_setup(tmp_path, received=None, world_size=2, gather=gather)
    progress.state.step_in_epoch = progress.state.global_step = 1
    context = Context()
    stop.on_train_step_end(context)
    assert calls == [([0], 2)] and context.stop_requested and (tmp_path / "last.ckpt").is_file()
    with pytest.raises(TrainingStopped) as err:
        stop.raise_if_stopped()
    assert err.value.exit_status == 130

    other = tmp_path / "rank1"
    other.mkdir()
    progress, checkpoints, stop = stop_setup(other, received=signal.SIGINT, world_size=2, gather=gather,
                                             rank0=False)
    progress.state.step_in_epoch = 1
    stop.on_train_step_end(context)
    assert checkpoints.stopped and not list(other.iterdir())  # only rank 0 writes
    with pytest.raises(TrainingStopped, match="rank 0 saved last.ckpt"):
        stop.raise_if_stopped()
