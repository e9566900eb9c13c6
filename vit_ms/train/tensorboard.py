"""TensorBoard scalars of every epoch record (`train.tensorboard: true`), through the optional tensorboardX.

Writes `<run_dir>/tensorboard/events.out.tfevents.*` on the main rank, one point per epoch at the record's
global step: train/loss, train/lr, train/images_per_sec, val/top1, val/top5, val/loss (and any other numeric
column, e.g. EMA ones). View with `tensorboard --logdir runs/`.
"""
from pathlib import Path
from typing import Callable, Optional

from mindspore.train import Callback

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


class TensorBoardScalars(Callback):
    """At every epoch end, the latest record from `record()` as scalars; `record` returns None before any."""

    def __init__(self, run_dir: Path, record: Callable[[], Optional[dict]]):
        super().__init__()
        self.writer = require_tensorboardx().SummaryWriter(str(Path(run_dir) / "tensorboard"))
        self.record = record

    def on_train_epoch_end(self, run_context):
        record = self.record()
        if record is None:
            return
        for key, value in record.items():
            if key not in SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key), value, global_step=record["step"])
        self.writer.flush()

    def on_train_end(self, run_context):
        self.writer.close()
