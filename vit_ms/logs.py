"""The `vit_ms` logger's handlers, set once by each command that logs (training, evaluation).

    setup_logging(run_dir, rank)   # console, plus <run_dir>/train.log (rank 0) or train_rank<N>.log
    setup_logging(None, rank)      # console only

Every module logs through `logging.getLogger("vit_ms")`; only the command's setup decides where it goes.
"""
import logging
from pathlib import Path
from typing import Optional

LOGGER_NAME = "vit_ms"


def setup_logging(run_dir: Optional[Path], rank: int) -> None:
    """Console plus `<run_dir>/train.log` (rank 0) or `train_rank<N>.log`: every rank keeps its own log."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if run_dir is not None:
        name = "train.log" if rank == 0 else f"train_rank{rank}.log"
        file_handler = logging.FileHandler(Path(run_dir) / name)
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
