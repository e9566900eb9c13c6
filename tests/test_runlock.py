"""The run-directory lock: a live holder refuses, a dead holder's leftover file is taken over, another host's
record is refused until deleted by hand, a record that cannot be written (full disk) names the lock file.

The two-trainings case end to end is in test_train.py.
"""
import errno
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


def test_a_lock_recorded_by_another_host_is_refused_until_deleted_by_hand(tmp_path):
    record = {"host": "gpu-node-7", "pid": 4242, "started": "2026-01-02T03:04:05+0000"}
    (tmp_path / ".lock").write_text(json.dumps(record) + "\n")
    with pytest.raises(UserError) as refused:
        RunLock(tmp_path).acquire()  # this host's flock is free: says nothing about gpu-node-7
    message = str(refused.value)
    for words in (f"the run directory '{tmp_path}' is locked by a training on another host",
                  "host gpu-node-7, pid 4242, started 2026-01-02T03:04:05+0000",
                  f"rm '{tmp_path / '.lock'}'", "--resume auto", "--set run_name="):
        assert words in message, message
    assert json.loads((tmp_path / ".lock").read_text()) == record  # untouched
    with pytest.raises(UserError, match="another host"):  # refused again: nothing changed
        RunLock(tmp_path).acquire()
    (tmp_path / ".lock").unlink()  # the take-over the message names
    with RunLock(tmp_path) as lock:
        assert lock.warning is None and json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_record_that_cannot_be_written_names_the_lock_file_and_unlocks(tmp_path, monkeypatch):
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("vit_ms.train.runlock.os.pwrite", full)
    with pytest.raises(OSError) as caught:
        RunLock(tmp_path).acquire()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / ".lock")
    monkeypatch.undo()
    with RunLock(tmp_path) as lock:  # the failed attempt left no flock held
        assert lock.fd is not None
