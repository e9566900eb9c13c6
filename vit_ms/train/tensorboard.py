"""TensorBoard scalars of every epoch record (`train.tensorboard: true`), through the optional tensorboardX.

Writes `<run_dir>/tensorboard/events.out.tfevents.*` on the main rank, one point per epoch at the record's
global step: train/loss, train/lr, train/images_per_sec, val/top1, val/top5, val/loss (and any other numeric
column, e.g. EMA ones). View with `tensorboard --logdir runs/`.
"""
from pathlib import Path

from ..errors import ConfigError

SKIPPED = ("epoch", "step", "skipped_steps", "val_images", "epoch_seconds")  # counters, not curves


def require_tensorboardx():
    """The tensorboardX module, or ConfigError naming the package and the setting."""
    try:
        import tensorboardX  # optional package (requirements-test.txt): only train.tensorboard=true needs it
    except ImportError as err:
        raise ConfigError("train.tensorboard=true needs the tensorboardX package, which is not installed: "
                          "pip install tensorboardX (or set train.tensorboard=false)") from err
    return tensorboardX


def scalar_tag(key: str) -> str:
    """metrics.jsonl column -> TensorBoard tag: val_top1 -> val/top1, lr -> train/lr."""
    for group in ("train", "val", "ema_val", "ema"):
        if key.startswith(group + "_"):
            return f"{group}/{key[len(group) + 1:]}"
    return f"train/{key}"


class TensorBoardScalars:
    """Each epoch's record as scalars at its global step: `update(record)` after every epoch, `close` at the end."""

    def __init__(self, run_dir: Path):
        self.writer = require_tensorboardx().SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def update(self, record: dict) -> None:
        for key, value in record.items():
            if key not in SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key), value, global_step=record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
