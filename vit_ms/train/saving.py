"""What a run writes into its directory while it trains: checkpoints (now, or waiting for proof), the pruning
of old epoch checkpoints, and metrics.jsonl. Main rank only: on other ranks (`run_dir` None) every call does
nothing.

    saver = RunSaver(train_step, run_dir, state, meta, keep_last=3, epoch_interval=1)
    saver.save("last.ckpt", verified=False)    # weights nothing has tested yet: waits (`PendingSaves`)
    saver.save_epoch(epoch, verified=True)     # epoch_0007.ckpt (every epoch_interval epochs), old ones pruned
    saver.append_record({"epoch": 1, ...}, verified=True)   # one JSON line of metrics.jsonl (or waiting)
    saver.commit()                             # the next loss was sane: waiting saves replace the real files
    saver.discard()                            # it diverged: they are deleted
    saver.keep_records(epoch)                  # a resume: metrics.jsonl holds one row per epoch up to `epoch`

Once the state is `closed` (a graceful stop or a divergence) nothing more is written.

Records are true: an epoch's row is appended after its checkpoints were written, and a row whose checkpoints
wait for the next loss waits with them (written on commit, dropped on discard), so metrics.jsonl never holds a
row for weights no checkpoint holds. A resume drops the rows of epochs after its checkpoint's: those epochs are
trained again and get their rows then, one per epoch.

Saves that wait for proof: a checkpoint nothing has checked yet becomes its real file one sane step later.

    pending = PendingSaves()
    pending.stage(network, run_dir / "last.ckpt", state, meta)   # written as .last.pending.partial.ckpt
    pending.commit()      # the next step's loss was sane: renamed over last.ckpt
    pending.discard()     # the next step diverged: deleted, last.ckpt keeps the older, checked weights

A step's loss is computed with the weights the previous step wrote, so the weights saved at the end of step k
are first tested by the loss of step k + 1 (or by an evaluation). Saves that no evaluation checked (every
`checkpoint.interval_steps`, epoch ends without eval) are written in full right away, under a hidden name, and
only renamed into place once the next loss passed the divergence check: a diverged run never leaves its
diverged weights in last.ckpt or an epoch checkpoint. The hidden names end in `.partial.ckpt`, so a start
removes those a killed run left behind (`remove_partial_files`).
"""
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

from ..weights.checkpoint import CheckpointMeta
from .checkpoint import PARTIAL_SUFFIX, TrainState, prune_epoch_checkpoints, save_checkpoint

log = logging.getLogger("vit_ms")


def pending_path(path: Path) -> Path:
    """Where a save to `path` waits: `<dir>/.<stem>.pending.partial.ckpt`."""
    return path.with_name(f".{path.stem}.pending{PARTIAL_SUFFIX}")


class PendingSaves:
    def __init__(self):
        self.staged: Dict[Path, Path] = {}  # real path -> pending file, in the order staged

    def stage(self, network, path: Path, state, meta) -> None:
        save_checkpoint(network, pending_path(path), state, meta)
        self.staged.pop(path, None)
        self.staged[path] = pending_path(path)

    def drop(self, path: Path) -> None:
        """Forget (and delete) a waiting save to `path`: a newer, checked save to the same file supersedes it."""
        staged = self.staged.pop(path, None)
        if staged is not None:
            staged.unlink(missing_ok=True)

    def commit(self) -> List[Path]:
        """Rename every waiting save into place; returns the real paths written."""
        done = []
        for path, staged in self.staged.items():
            os.replace(staged, path)
            done.append(path)
        self.staged = {}
        return done

    def discard(self) -> None:
        for staged in self.staged.values():
            staged.unlink(missing_ok=True)
        self.staged = {}


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
        self.waiting_records: List[dict] = []  # rows of epochs whose checkpoints wait in `pending`

    def save(self, name: str, verified: bool = True) -> None:
        """Write `name` now, or (not `verified`: weights no loss or evaluation has tested) stage it."""
        if self.run_dir is None or self.state.closed:
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
        if self.run_dir is not None and not self.state.closed:
            prune_epoch_checkpoints(self.run_dir, self.keep_last)

    def commit(self) -> List[dict]:
        """The waiting saves passed the check: rename them into place (and prune epoch checkpoints), then write
        the records that waited with them; returns those records."""
        if self.pending.commit() and self.run_dir is not None and self.keep_last > 0:
            prune_epoch_checkpoints(self.run_dir, self.keep_last)
        records, self.waiting_records = self.waiting_records, []
        return [r for r in records if self.write_record(r)]

    def discard(self) -> None:
        self.pending.discard()
        self.waiting_records = []

    def append_record(self, record: dict, verified: bool = True) -> List[dict]:
        """One row of metrics.jsonl, after the epoch's checkpoints were saved: written now, or (not `verified`)
        with the saves that wait; returns the records written now."""
        if not verified and self.pending.staged:
            self.waiting_records.append(record)
            return []
        return [record] if self.write_record(record) else []

    def write_record(self, record: dict) -> bool:
        if self.run_dir is None or self.state.closed:
            return False
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return True

    def keep_records(self, epoch: int) -> None:
        """Rewrite metrics.jsonl with one row per epoch up to `epoch` (the last line of each), dropping the rows
        of later epochs: the checkpoint a run resumes from holds no training after `epoch`."""
        path = self.run_dir / "metrics.jsonl" if self.run_dir is not None else None
        if path is None or not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        by_epoch: Dict[int, str] = {}
        for line in lines:
            try:
                row_epoch = int(json.loads(line)["epoch"])
            except (ValueError, KeyError, TypeError):
                continue  # not a row this trainer wrote: dropped below
            if row_epoch <= epoch:
                by_epoch[row_epoch] = line
        kept = [by_epoch[e] for e in sorted(by_epoch)]
        if kept == lines:
            return
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
        log.info("metrics.jsonl: kept %d row(s), one per epoch up to epoch %d, and dropped %d line(s) describing "
                 "training the checkpoint does not hold", len(kept), epoch, len(lines) - len(kept))
