"""`curves.png` in the run directory, redrawn from metrics.jsonl after every epoch (main rank only).

The drawing runs in a background thread, so training does not wait for it (about 1 s of CPU per drawing on a
loaded 2-core machine); when an epoch ends while the previous drawing is still running, the next drawing
starts as soon as it is done, and the end of training waits for the last one. Drawing never fails a run:
the first error (matplotlib missing, an unwritable file, anything matplotlib raises) is logged once as a
warning, and the run goes on without curves.
"""
import logging
import threading
import time
from pathlib import Path
from typing import Optional

from mindspore.train import Callback

from ..figures.run_curves import plot_run

log = logging.getLogger("vit_ms")


class CurvesWriter(Callback):
    """Redraw `<run_dir>/curves.png`; must come after the callback that appends the epoch's record."""

    def __init__(self, run_dir: Path, background: bool = True):
        super().__init__()
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

    def on_train_epoch_end(self, run_context):
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

    def on_train_end(self, run_context):
        self.wait()
        if self.drawn:
            log.info("curves.png: %s (drawn %d times, %.2f s each on average)", self.run_dir / "curves.png",
                     self.drawn, self.seconds / self.drawn)
