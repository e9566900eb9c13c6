"""The run's pictures, redrawn after every epoch's record (main rank only): `curves.png` in the run directory,
and TensorBoard scalars when `train.tensorboard: true`.

    pictures = [CurvesWriter(run_dir), TensorBoardScalars(run_dir)]
    for picture in pictures: picture.update(record)     # after each epoch's record (vit_ms.train.loop)
    for picture in pictures: picture.close()            # at the end of training

`curves.png` is drawn from metrics.jsonl (`vit_ms.figures.run_curves`) in a background thread, so training does
not wait for it (about 1 s of CPU per drawing on a loaded 2-core machine); when an epoch ends while the previous
drawing is still running, the next drawing starts as soon as it is done, and the end of training waits for the
last one. Drawing never fails a run: the first error (matplotlib missing, an unwritable file, anything
matplotlib raises) is logged once as a warning, and the run goes on without curves.

TensorBoard, through the optional tensorboardX, writes `<run_dir>/tensorboard/events.out.tfevents.*`: one point
per epoch at the record's step, train/loss, train/lr, train/images_per_sec, val/top1, val/top5, val/loss (and
any other numeric column, e.g. EMA ones). View with `tensorboard --logdir runs/`.
"""
import logging
import threading
import time
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from ..figures.run_curves import plot_run

log = logging.getLogger("vit_ms")


class CurvesWriter:
    """Redraw `<run_dir>/curves.png` from metrics.jsonl: `update` after each epoch's record, `close` at the end."""

    def __init__(self, run_dir: Path, background: bool = True):
        self.run_dir = Path(run_dir)
        self.background = background
        self.failed = False
        self.seconds = 0.0  # time spent drawing, all drawings together
        self.drawn = 0
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._pending = False  # an epoch ended while a drawing was running: draw again after it

    def draw(self) -> None:
        """Draw once now (in the calling thread); a failure is logged once and turns drawing off."""
        if self.failed:
            return
        start = time.time()
        try:
            plot_run(self.run_dir)
        except Exception as err:  # noqa: BLE001 - a picture must never stop training; reported once
            self.failed = True
            log.warning("curves.png not written (%s: %s); training goes on without it (draw it later with "
                        "python -m vit_ms.plot %s)", type(err).__name__, err, self.run_dir)
        else:
            self.drawn += 1
        self.seconds += time.time() - start

    def _drawing_loop(self) -> None:
        while True:
            self.draw()
            with self._lock:
                if not self._pending or self.failed:
                    self._thread = None
                    return
                self._pending = False

    def update(self, record: Optional[dict] = None) -> None:
        """metrics.jsonl has a new record (the drawing reads the file, so `record` itself is not needed)."""
        if not self.background:
            self.draw()
            return
        with self._lock:
            if self._thread is not None:
                self._pending = True
                return
            self._thread = threading.Thread(target=self._drawing_loop, name="curves.png", daemon=True)
            self._thread.start()

    def wait(self) -> None:
        """Block until the drawing in progress (and one queued behind it) is done."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def close(self) -> None:
        self.wait()
        if self.drawn:
            log.info("curves.png: %s (drawn %d times, %.2f s each on average)", self.run_dir / "curves.png",
                     self.drawn, self.seconds / self.drawn)


# TensorBoard

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

    def __init__(self, run_dir: Path, purge_step: Optional[int] = None):
        # purge_step: a resumed run hides the points an earlier run wrote at this step and after, so each
        # epoch's point is shown once (the rows metrics.jsonl keeps)
        self.writer = require_tensorboardx().SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge_step)

    def update(self, record: dict) -> None:
        for key, value in record.items():
            if key not in SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key), value, global_step=record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
