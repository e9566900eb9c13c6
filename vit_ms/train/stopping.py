"""Graceful stop: SIGTERM or SIGINT finish the current step, save last.ckpt, and the run exits 143 or 130.

    watch_stop_signals()                           # entry scripts, first thing (train.py)
    with StopSignals() as signals:                 # around Model.train: signals.received is the first signal
        ... the training loop reads signals.received after every step (vit_ms.train.loop)
    raise stopped_error(signum, stop_message(...)) # TrainingStopped: message and exit status

Schedulers (Slurm, Kubernetes) send SIGTERM some time before they kill; Ctrl-C sends SIGINT. The first signal
only sets a flag. The step in progress finishes; at its end the ranks agree (data-parallel: one all-gather of
each rank's flag, so every rank stops after the same step), rank 0 writes last.ckpt atomically in the middle
of the epoch, and training ends; `--resume auto` continues from exactly there. A stop that arrives during an
epoch's last step (or its evaluation) lets the epoch end as usual (eval, epoch checkpoint, last.ckpt) and stops
after it. With dataset sink mode the ranks look at the flag once per sunk chunk. A second signal ends the
process at once, without saving (a save in progress never leaves a broken file: saves are atomic).

Exit status 128 + the signal number: 143 after SIGTERM, 130 after SIGINT, the codes a shell reports for a
process those signals killed.

Catching the signals. MindSpore installs its own SIGINT handler for every graph run, one that sends the process
SIGTERM, so a Ctrl-C during a step would look like SIGTERM. Entry scripts therefore call `watch_stop_signals()`
first, before MindSpore starts any thread: both signals are blocked in every thread and taken by one watcher
thread (`sigwait`), which no handler can intercept; a second signal then ends the process from that thread at
once, even while the main thread is inside a long graph run. Outside training (setup, graph compilation before
the first step) either signal ends the process at once, with status 130 or 143. Without the watcher
(run_training called from Python), `StopSignals` installs ordinary handlers instead. This module imports
neither MindSpore nor numpy (whose thread pools would start before the signals are blocked).
"""
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..errors import TrainingStopped

if TYPE_CHECKING:  # no MindSpore import at run time (see above)
    from .checkpoint import TrainState

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_watcher = {"on": False, "receiver": None}  # the watcher thread's state; receiver: the StopSignals in use


def exit_status(signum: int) -> int:
    """128 + signum: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + int(signum)


def announce(signum: int) -> None:
    name = signal.Signals(signum).name
    # os.write: safe from a signal handler or the watcher (the logging lock may be held by the interrupted code)
    os.write(2, f"\nreceived {name}: finishing the current step, then saving last.ckpt and stopping; send "
                f"{name} again to exit at once without saving\n".encode())


def watch_stop_signals() -> None:
    """Block SIGTERM/SIGINT in this and every later thread and take them in a watcher thread (see above).

    Call it in the main thread before importing MindSpore: threads started earlier would still receive them.
    """
    if _watcher["on"] or threading.current_thread() is not threading.main_thread():
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    threading.Thread(target=_watch, name="vit_ms-stop-signals", daemon=True).start()
    _watcher["on"] = True


def _watch() -> None:
    while True:
        signum = signal.sigwait(SIGNALS)
        on_signal(signum, _watcher["receiver"])


def on_signal(signum: int, receiver: Optional["StopSignals"]) -> None:
    """What the watcher does with a signal: flag a stop, or end the process (second signal, or no training)."""
    if receiver is not None and receiver.received is None:
        receiver.received = signum
        announce(signum)
    else:  # a second signal, or one outside training (setup, compile): nothing to save yet
        os.write(2, f"\nreceived {signal.Signals(signum).name}: exiting at once, without saving\n".encode())
        os._exit(exit_status(signum))


class StopSignals:
    """Context manager: while inside, SIGTERM/SIGINT set `received` (the first signal's number) instead of ending
    the process, and a second signal ends it at once. With the watcher on it only registers itself there;
    otherwise it installs handlers (main thread only) whose first call restores the default actions."""

    def __init__(self):
        self.received: Optional[int] = None
        self.previous = {}

    def __enter__(self) -> "StopSignals":
        if _watcher["on"]:
            _watcher["receiver"] = self
        elif threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        if _watcher["receiver"] is self:
            _watcher["receiver"] = None
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        announce(signum)


def first_signal(rows) -> Optional[int]:
    """The signal of the lowest rank that received one, from the gathered (world_size, 1) rows; None if none."""
    received = [int(v) for v in rows.reshape(-1) if int(v) != 0]  # rows: a numpy array
    return received[0] if received else None


def stop_message(signum: int, state: "TrainState", steps_per_epoch: int, run_dir: Optional[Path]) -> str:
    """What a stopped run says: the signal, where it stopped, what it saved and how to continue."""
    where = (f"epoch {state.epoch + 1} step {state.step_in_epoch}/{steps_per_epoch}" if state.step_in_epoch
             else f"the end of epoch {state.epoch}")
    saved = f"saved '{run_dir / 'last.ckpt'}'" if run_dir is not None else "rank 0 saved last.ckpt"
    return (f"training stopped by {signal.Signals(signum).name} after global step {state.global_step} ({where}) "
            f"and {saved}; continue exactly from there by running the same command with --resume auto "
            f"(exit status {exit_status(signum)})")


def stopped_error(signum: int, message: str) -> TrainingStopped:
    return TrainingStopped(message, exit_status(signum))
