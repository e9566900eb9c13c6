"""What a run writes into its directory while it trains: checkpoints (now, or waiting for proof) and
metrics.jsonl. Main rank only: on other ranks (`run_dir` None) every call does nothing.

    saver = RunSaver(train_step, run_dir, state, meta, keep_last=3, epoch_interval=1)
    saver.save("last.ckpt", verified=False)    # weights nothing has tested yet: waits (see `pending`)
    saver.save_epoch(epoch, verified=True)     # epoch_0007.ckpt (every epoch_interval epochs), old ones pruned
    saver.commit()                             # the next loss was sane: waiting saves replace the real files
    saver.discard()                            # it diverged: they are deleted
    saver.append_record({"epoch": 1, ...})     # one JSON line of metrics.jsonl

Once `closed` (a graceful stop or a divergence) nothing more is written.
"""
import json
from pathlib import Path
from typing import Optional

from ..weights.checkpoint import CheckpointMeta
from .checkpoint import TrainState, prune_epoch_checkpoints, save_checkpoint
from .pending import PendingSaves


class RunSaver:
    def __init__(self, network, run_dir: Optional[Path], state: TrainState, meta: Optional[CheckpointMeta] = None,
                 keep_last: int = 0, epoch_interval: int = 1):
        self.network = network  # the train step: weights, optimizer and loss-scale state
        self.run_dir = run_dir  # None on ranks other than 0
        self.state = state
        self.meta = meta or CheckpointMeta()  # config, plan and class names: every checkpoint can rebuild its model
        self.keep_last = keep_last  # epoch checkpoints kept (checkpoint.keep_last; 0: none written)
        self.epoch_interval = max(epoch_interval, 1)  # checkpoint.interval_epochs
        self.pending = PendingSaves()
        self.closed = False

    def save(self, name: str, verified: bool = True) -> None:
        """Write `name` now, or (not `verified`: weights no loss or evaluation has tested) stage it."""
        if self.run_dir is None or self.closed:
            return
        path = self.run_dir / name
        if verified:
            self.pending.drop(path)  # a checked save supersedes a waiting one of the same file
            save_checkpoint(self.network, path, self.state, self.meta)
        else:
            self.pending.stage(self.network, path, self.state, self.meta)

    def save_epoch(self, epoch: int, verified: bool) -> None:
        """epoch_NNNN.ckpt after every `epoch_interval` epochs, the newest `keep_last` kept."""
        if epoch % self.epoch_interval or self.keep_last <= 0:
            return
        self.save(f"epoch_{epoch:04d}.ckpt", verified)
        if self.run_dir is not None and not self.closed:
            prune_epoch_checkpoints(self.run_dir, self.keep_last)

    def commit(self) -> None:
        """The waiting saves passed the check: rename them into place (and prune epoch checkpoints)."""
        if self.pending.commit() and self.run_dir is not None and self.keep_last > 0:
            prune_epoch_checkpoints(self.run_dir, self.keep_last)

    def discard(self) -> None:
        self.pending.discard()

    def append_record(self, record: dict) -> None:
        if self.run_dir is None or self.closed:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
