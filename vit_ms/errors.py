"""User-facing errors.

`UserError` is raised for anything the user can fix (a typo in a config, a missing folder, a checkpoint
that does not fit). Entry scripts catch it and print its message as one paragraph, without a traceback
unless `--debug` is given (see `run_cli`). An `OSError` of the machine around the run (a full disk, a quota,
a read-only or missing folder, permissions) gets the same treatment wherever it is raised: one paragraph naming
the file and what to do (`describe_os_error`). Either is also the last line of the run's log file, when there is
one. `TrainingStopped` (a run stopped by SIGTERM/SIGINT after saving) exits with its own status, 143 or 130.
"""
import difflib
import errno
import sys
from typing import Callable, Iterable, Optional, Sequence

from .logs import log_to_files


class UserError(Exception):
    """An error caused by input the user controls; its message says what to do."""


class ConfigError(UserError, ValueError):
    """A config key, type or value is wrong."""


class DataError(UserError):
    """The dataset on disk is missing, empty or unreadable."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss."""


class DivergenceError(NonFiniteLossError):
    """The training loss (or the validation loss before a save) became non-finite or exploded."""


class TrainingStopped(UserError):
    """Training stopped on request (SIGTERM, SIGINT) after saving; `exit_status` is 128 + the signal number."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def suggest(name: str, choices: Iterable[str], prefix: str = "") -> str:
    """Return "; did you mean '<prefix>x'?" for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""


_FULL = ("free space on that disk (or raise the quota), or write elsewhere (--set output_dir=<dir> for a run), then "
         "run the command again; a training continues from its last complete checkpoint with --resume auto")
_NOT_WRITABLE = ("make the folder writable for this user, or point the command at one that is (--set "
                 "output_dir=<dir> for a run, VIT_MS_CACHE for the weights cache)")
_MISSING = "check the path: create the folder or fix the name (a folder that vanished while running is one cause)"
# errno -> (what happened, what to do). Anything else of the operating system: its own words, and check the path.
OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", _FULL),
    errno.EDQUOT: ("the disk quota is used up", _FULL),
    errno.EFBIG: ("the file is too large for this file system", _FULL),
    errno.EROFS: ("the file system is read-only", _NOT_WRITABLE),
    errno.EACCES: ("permission denied", _NOT_WRITABLE),
    errno.EPERM: ("operation not permitted", _NOT_WRITABLE),
    errno.ENOENT: ("no such file or folder", _MISSING),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", _MISSING),
    errno.EISDIR: ("it is a folder, not a file", _MISSING),
    errno.ENAMETOOLONG: ("the name is too long", "use a shorter path"),
    errno.EIO: ("an input/output error of the device", "check the disk or the network mount (dmesg), then run the "
                                                       "command again"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or use fewer data.num_parallel_workers"),
    errno.ENFILE: ("too many open files on this machine", "close other programs or raise the system's limit"),
}


def describe_os_error(err: OSError) -> str:
    """One paragraph for an OSError of the machine: what happened to which file, and what to do."""
    what, advice = OS_ERRORS.get(err.errno, (err.strerror or str(err), "check the path and the device"))
    code = errno.errorcode.get(err.errno, "")
    paths = " -> ".join(f"'{p}'" for p in (err.filename, err.filename2) if p is not None)
    where = f" at {paths}" if paths else ""
    return f"{what}{where} ({code + ': ' if code else ''}{err.strerror or err}); {advice}"


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run an entry point; turn a `UserError`, or an `OSError` of the machine (disk full, read-only, missing,
    permissions), into a one-paragraph message, in the run's log file too, and exit code 2.

    `--debug` anywhere in argv keeps the full traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv)
    except TrainingStopped as stop:  # not a mistake: the run saved and says how to continue
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_status
    except (UserError, OSError) as err:
        if debug or (isinstance(err, OSError) and err.errno is None):  # an OSError without errno: ours, a bug
            raise
        message = f"error: {err if isinstance(err, UserError) else describe_os_error(err)}"
        log_to_files(message)
        print(message, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
