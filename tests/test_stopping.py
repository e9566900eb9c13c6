"""Graceful stop: the signal flag, a second signal, the training loop's saves on a stop and agreement across ranks.

The end-to-end check (SIGTERM/SIGINT mid-epoch, then --resume auto reaches the uninterrupted weights) is in
test_train.py.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from loop_helpers import make_loop

from vit_ms.errors import DivergenceError, TrainingStopped
from vit_ms.train.checkpoint import TrainState, train_state
from vit_ms.train.stopping import StopSignals, exit_status, first_signal
from vit_ms.weights.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def stop_setup(tmp_path, received, steps_per_epoch=4, world_size=1, gather=None, rank0=True, state=None):
    return make_loop(tmp_path, steps_per_epoch=steps_per_epoch, received=received, world_size=world_size,
                     gather=gather, rank0=rank0, dynamic=False, state=state)


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
from vit_ms.train.stopping import StopSignals, watch_stop_signals
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
    script = ("import time\nfrom vit_ms.train.stopping import watch_stop_signals\nwatch_stop_signals()\n"
              "print('ready', flush=True)\ntime.sleep(30)\nprint('survived', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + sig and out == "" and f"received {sig.name}: exiting at once" in err


def test_stop_mid_epoch_saves_last_and_skips_the_epoch_end(tmp_path):
    loop, ms = stop_setup(tmp_path, received=signal.SIGTERM, state=TrainState(step_in_epoch=1, global_step=1))
    ms.steps()
    assert ms.stop_requested and loop.stopped and loop.state.closed
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (0, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no eval, metrics or epoch checkpoint
    with pytest.raises(TrainingStopped, match=r"stopped by SIGTERM after global step 2 \(epoch 1 step 2/4\) "
                                              r"and saved .*last.ckpt.*--resume auto") as err:
        loop.finish()
    assert err.value.exit_status == 143


def test_stop_in_the_last_step_lets_the_epoch_end_save_first(tmp_path):
    loop, ms = stop_setup(tmp_path, received=signal.SIGINT, state=TrainState(step_in_epoch=3, global_step=3))
    ms.steps()  # the epoch's last step: eval, best, epoch and last first, then the stop
    assert ms.stop_requested
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (1, 0)
    assert {"best.ckpt", "epoch_0001.ckpt", "metrics.jsonl"} <= {p.name for p in tmp_path.iterdir()}
    with pytest.raises(TrainingStopped, match="after global step 4 .the end of epoch 1.") as err:
        loop.finish()
    assert err.value.exit_status == 130


def test_a_signal_during_the_last_epochs_end_lets_the_run_complete(tmp_path):
    loop, ms = stop_setup(tmp_path, received=signal.SIGTERM, state=TrainState(epoch=2, step_in_epoch=3))
    ms.steps()  # the last step of the last of 3 epochs
    assert not ms.stop_requested and train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (3, 0)
    loop.finish()  # exit 0: the run finished


def test_no_signal_no_stop(tmp_path):
    loop, ms = stop_setup(tmp_path, received=None)
    ms.steps()
    assert not ms.stop_requested and not list(tmp_path.iterdir())
    loop.finish()


def test_ranks_agree_on_the_lowest_ranks_signal_and_on_divergence_in_one_exchange(tmp_path):
    assert first_signal(np.array([[0], [15], [2]])) == 15 and first_signal(np.zeros((4, 1))) is None
    calls = []

    def gather(row, world_size):  # rank 0 (this one) saw nothing, rank 1 got SIGINT
        calls.append((list(row), world_size))
        return np.array([[0, 0], [0, int(signal.SIGINT)]], np.int32)

    loop, ms = stop_setup(tmp_path, received=None, world_size=2, gather=gather)
    ms.steps()
    assert calls == [([0, 0], 2)] and ms.stop_requested and (tmp_path / "last.ckpt").is_file()
    with pytest.raises(TrainingStopped) as err:
        loop.finish()
    assert err.value.exit_status == 130

    other = tmp_path / "rank1"
    other.mkdir()
    loop, ms = stop_setup(other, received=signal.SIGINT, world_size=2, gather=gather, rank0=False)
    ms.steps()
    assert loop.state.closed and not list(other.iterdir())  # only rank 0 writes
    with pytest.raises(TrainingStopped, match="rank 0 saved last.ckpt"):
        loop.finish()

    def diverged_elsewhere(row, world_size):  # rank 1's loss diverged, nobody got a signal
        calls.append((list(row), world_size))
        return np.array([[0, 0], [1, 0]], np.int32)

    calls.clear()
    loop, ms = stop_setup(tmp_path / "r3", received=None, world_size=2, gather=diverged_elsewhere, rank0=False)
    with pytest.raises(DivergenceError, match=r"at global step 1 .*rank 1 saw its loss diverge.*rank 0's message "
                                              r"names the checkpoint"):
        ms.steps(loss=1.0)
    assert calls == [([0, 0], 2)]  # one all-gather a step for both questions
