"""One writer per run directory: an advisory lock on `<run_dir>/.lock`, held while a training writes there.

    with RunLock(run_dir) as lock:        # UserError when another live training holds the directory
        if lock.warning: log.warning(lock.warning)   # a dead owner's lock taken over, or no locking here

`fcntl.flock` on the file; the file says who holds it (host, pid, start time, as JSON). The kernel releases a
flock when its holder exits, even after kill -9, so a lock file of this host that nobody holds is stale: it is
taken over (the caller warns, naming the old owner). A record of another host is never taken over: flock is
local to a host on many network filesystems, so a free flock says nothing about a training on another machine,
which may still be writing here. The run is refused, naming that host, pid and start time; a user who knows that
training has ended deletes the lock file (the message gives the `rm` command). Released, the file is emptied
while still locked and kept, never deleted by a training: deleting could let two trainings each lock a different
file of the same name. In data-parallel runs only rank 0 writes, so only rank 0 locks. Where the filesystem
refuses locks altogether the run goes on unlocked, with a warning.
"""
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from ..errors import UserError

LOCK_NAME = ".lock"


def read_owner(text: str) -> Optional[dict]:
    """A lock file's JSON record {host, pid, started}, or None if it is not one of ours."""
    try:
        owner = json.loads(text)
        return owner if {"host", "pid", "started"} <= set(owner) else None
    except (ValueError, TypeError):
        return None


def describe_owner(text: str) -> str:
    """'host h, pid p, started t' from a lock file's JSON (the raw text if it is not ours)."""
    owner = read_owner(text)
    return f"unreadable owner record {text.strip()[:80]!r}" if owner is None else owner_words(owner)


def owner_words(owner: dict) -> str:
    return f"host {owner['host']}, pid {owner['pid']}, started {owner['started']}"


def other_host_error(path: Path, owner: dict) -> UserError:
    return UserError(
        f"the run directory '{path.parent}' is locked by a training on another host ({owner_words(owner)}; lock "
        f"file '{path}'). This host cannot tell whether that training is still running: file locks are not "
        f"shared between hosts on many network filesystems, and two trainings in one directory would overwrite "
        f"each other's checkpoints and metrics. If it has ended (finished, crashed or killed on "
        f"{owner['host']}), take the lock over by deleting the file: rm '{path}', then run the same command again "
        f"(--resume auto continues the run); otherwise train into another directory with --set run_name=<new "
        f"name> or --set output_dir=<dir>")


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: Optional[int] = None
        self.stale_owner: Optional[str] = None  # who held a stale lock this one took over
        self.warning: Optional[str] = None  # for the log: a stale lock taken over, or locking not possible

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = describe_owner(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise UserError(
                f"another training is writing to the run directory '{self.path.parent}' ({owner}; lock file "
                f"'{self.path}'). Two trainings in one directory would overwrite each other's checkpoints and "
                f"metrics. Wait for it to finish or stop it (SIGTERM saves and exits; then --resume auto), or "
                f"train into another directory with --set run_name=<new name> or --set output_dir=<dir>") from None
        except OSError as err:  # e.g. ENOLCK: a filesystem without lock support
            os.close(fd)
            self.warning = (f"cannot lock '{self.path}' ({err.strerror}): a second training started into "
                            f"'{self.path.parent}' would not be refused")
            return
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        owner = read_owner(previous)
        if owner is not None and owner["host"] != socket.gethostname():
            os.close(fd)  # unlocks: nothing of this run was written
            raise other_host_error(self.path, owner)
        if previous.strip():
            self.stale_owner = describe_owner(previous)
            self.warning = (f"took over the lock of '{self.path.parent}' from a training that is no longer running "
                            f"({self.stale_owner})")
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as err:  # a full disk: the record cannot be written
            os.close(fd)
            err.filename = str(self.path)
            raise
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)  # while still locked: a training that takes the lock next writes its own record
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
