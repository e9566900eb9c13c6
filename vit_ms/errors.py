"""User-facing errors.

`UserError` is raised for anything the user can fix (a typo in a config, a missing folder, a checkpoint
that does not fit). Entry scripts catch it and print its message as one paragraph, without a traceback
unless `--debug` is given (see `run_cli`). `TrainingStopped` (a run stopped by SIGTERM/SIGINT after saving)
exits with its own status, 143 or 130.
"""
import difflib
import sys
from typing import Callable, Iterable, Optional, Sequence


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


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run an entry point; turn a `UserError` into a one-paragraph message and exit code 2.

    `--debug` anywhere in argv keeps the full traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv)
    except TrainingStopped as stop:  # not a mistake: the run saved and says how to continue
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_status
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
