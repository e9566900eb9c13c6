"""The run-directory lock: a live holder refuses, a dead holder's leftover file is taken over.

The two-trainings case end to end is in test_train.py.
"""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vit_ms.errors import UserError
from vit_ms.train.runlock import RunLock

ROOT = Path(__file__).resolve().parent.parent

HOLDER = ("import sys, time\nfrom pathlib import Path\nfrom vit_ms.train.runlock import RunLock\n"
          "lock = RunLock(Path(sys.argv[1]))\nlock.acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n")


def test_the_lock_records_its_owner_and_is_emptied_on_release(tmp_path):
    with RunLock(tmp_path) as lock:
        owner = json.loads((tmp_path / ".lock").read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["started"]
        assert lock.stale_owner is None
        with pytest.raises(UserError, match=rf"another training is writing to the run directory '{tmp_path}' "
                                            rf"\(host {socket.gethostname()}, pid {os.getpid()}, started .*"
                                            rf"--set run_name="):
            RunLock(tmp_path).acquire()  # a second open file: flock refuses it even in the same process
    assert (tmp_path / ".lock").read_text() == ""
    with RunLock(tmp_path) as again:  # released cleanly: no stale owner to warn about
        assert again.stale_owner is None


def test_a_live_process_holds_it_and_its_leftover_is_taken_over_after_kill_9(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"pid {holder.pid}, started"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid  # the file outlived its owner
    with RunLock(tmp_path) as lock:
        assert lock.stale_owner.startswith(f"host {socket.gethostname()}, pid {holder.pid}, started ")
        assert lock.warning == f"took over the lock of '{tmp_path}' from a training that is no longer running " \
                               f"({lock.stale_owner})"
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_foreign_lock_file_is_described_not_parsed(tmp_path):
    (tmp_path / ".lock").write_text("garbage\n")
    with RunLock(tmp_path) as lock:
        assert lock.stale_owner == "unreadable owner record 'garbage'"


def test_a_filesystem_without_locks_goes_on_unlocked_with_a_warning(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr("vit_ms.train.runlock.fcntl.flock", no_locks)
    with RunLock(tmp_path) as lock:
        assert lock.warning == (f"cannot lock '{tmp_path / '.lock'}' (No locks available): a second training "
                                f"started into '{tmp_path}' would not be refused")
