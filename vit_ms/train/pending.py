"""Saves that wait for proof: a checkpoint nothing has checked yet becomes its real file one sane step later.

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
import os
from pathlib import Path
from typing import Dict, List

from .checkpoint import PARTIAL_SUFFIX, save_checkpoint


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
