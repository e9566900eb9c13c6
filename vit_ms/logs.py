"""The `vit_ms` logger's handlers, set once by each command that logs (training, evaluation).

    setup_logging(run_dir, rank)   # console, plus <run_dir>/train.log (rank 0) or train_rank<N>.log
    setup_logging(None, rank)      # console only
    log_to_files("error: ...")     # the run's log files only (the entry point prints the same line itself)

Every module logs through `logging.getLogger("vit_ms")`; only the command's setup decides where it goes. A log
file that cannot be written (a full disk) says so once on the console and goes on with the console alone, instead
of a logging traceback for every line.
"""
import logging
import sys
from pathlib import Path
from typing import Optional

LOGGER_NAME = "vit_ms"


class RunLogHandler(logging.FileHandler):
    """A run's log file; a failed write is reported once (one line on stderr), not as a traceback per record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        self.report(sys.exc_info()[1])

    def close(self) -> None:
        try:
            super().close()  # flushes: the last lines may not fit either
        except OSError as err:
            self.report(err)

    def report(self, err: BaseException) -> None:
        if not self.failed:
            self.failed = True
            print(f"warning: cannot write to the log file '{self.baseFilename}' ({err}); its lines go to the "
                  f"console only", file=sys.stderr)


def setup_logging(run_dir: Optional[Path], rank: int) -> None:
    """Console plus `<run_dir>/train.log` (rank 0) or `train_rank<N>.log`: every rank keeps its own log."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if run_dir is not None:
        name = "train.log" if rank == 0 else f"train_rank{rank}.log"
        file_handler = RunLogHandler(Path(run_dir) / name)
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)


def log_to_files(message: str, level: int = logging.ERROR) -> None:
    """Write one record to the `vit_ms` logger's files only: for a line the caller prints on the console itself."""
    logger = logging.getLogger(LOGGER_NAME)
    record = logger.makeRecord(LOGGER_NAME, level, __file__, 0, message, (), None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
