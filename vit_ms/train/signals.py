"""Catching SIGTERM and SIGINT for a graceful stop (`vit_ms.train.stopping` acts on them); no MindSpore import.

    watch_stop_signals()             # entry scripts, first thing (train.py)
    with StopSignals() as signals:   # around Model.train: signals.received is the first signal's number

The first signal during training only sets `received`; a second one ends the process at once.
MindSpore installs its own SIGINT handler for every graph run, one that sends the process SIGTERM, so a Ctrl-C
during a step would look like SIGTERM. Entry scripts therefore call `watch_stop_signals()` first, before
MindSpore starts any thread: both signals are blocked in every thread and taken by one watcher thread
(`sigwait`), which no handler can intercept; a second signal then ends the process from that thread at once,
even while the main thread is inside a long graph run. Outside training (setup, graph compilation before the
first step) either signal ends the process at once, with status 130 or 143. Without the watcher
(run_training called from Python), `StopSignals` installs ordinary handlers instead.
"""
import os
import signal
import threading
from typing import Optional

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
