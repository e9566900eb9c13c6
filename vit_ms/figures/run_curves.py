"""Training curves from `metrics.jsonl`: one run's `curves.png`, or several runs overlaid for comparison (the
command line: `python -m vit_ms.plot`, vit_ms/plot.py).

Four panels against the epoch: loss (train, val), validation accuracy (top-1, top-5, and the EMA model's
columns when a run records them), learning rate, and throughput (images/s). A single run's loss panel also
carries the optimizer step on its top axis. The trainer writes `curves.png` into the run directory at every epoch
end (`vit_ms.train.pictures`).
"""
import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import UserError
from .canvas import matplotlib_module, new_figure, save_figure

# (title, y label, column pattern, log scale); a column is plotted in the first panel whose pattern it matches
PANELS = (
    ("loss", "cross-entropy", re.compile(r"loss$"), False),  # train_loss, val_loss (ema_val_loss, ...)
    ("validation accuracy", "top-k", re.compile(r"top[15]$"), False),  # val_top1, val_top5 (and EMA columns)
    ("learning rate", "lr", re.compile(r"^lr$"), True),
    ("throughput", "images/s", re.compile(r"^images_per_sec$"), False),
)
STYLES = (("ema", "-."), ("top5", ":"), ("top1", "-"), ("val", "--"))  # first part of the key found wins


def read_records(run_dir: os.PathLike) -> List[dict]:
    """The epoch records of `<run_dir>/metrics.jsonl`, one per epoch (the last line for an epoch wins, e.g.
    after resuming from an earlier checkpoint), sorted by epoch."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"'{path}' not found: give a run directory written by train.py (runs/<run_name>)")
    by_epoch: Dict[int, dict] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise UserError(f"'{path}' line {number} is not JSON ({err}); remove or repair that line") from err
        by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def _series(records: Sequence[dict], key: str):
    """(epochs, values) where `key` holds a finite number."""
    points = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float))
              and np.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _style(key: str) -> str:
    parts = key.split("_")
    return next((style for part, style in STYLES if part in parts), "-")


def plot_runs(runs: Dict[str, Sequence[dict]], out: os.PathLike, title: str = "") -> Path:
    """Draw the runs' records (`{label: records}`) into one PNG at `out`; returns its path."""
    fig = new_figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2)
    colours = matplotlib_module().rcParams["axes.prop_cycle"].by_key()["color"]
    single = len(runs) == 1
    for ax, (panel, ylabel, pattern, log_scale) in zip(axes.flat, PANELS):
        drawn = 0
        for r, (label, records) in enumerate(runs.items()):
            keys = sorted({k for rec in records for k in rec if pattern.search(k)})
            for k, key in enumerate(keys):
                epochs, values = _series(records, key)
                if not epochs:
                    continue
                colour = colours[(k if single else r) % len(colours)]
                ax.plot(epochs, values, _style(key), color=colour, marker="." if len(epochs) < 30 else None,
                        label=key if single else f"{label}: {key}")
                drawn += 1
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
            if log_scale:
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
        if single and ax is axes.flat[0]:  # one step axis: each costs about 0.1 s per drawing
            _step_axis(ax, next(iter(runs.values())))
    fig.suptitle(title or ", ".join(runs))
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.07, top=0.87, hspace=0.45, wspace=0.25)  # tight_layout: 2x slower
    return save_figure(fig, out)


def _step_axis(ax, records: Sequence[dict]) -> None:
    """The optimizer step on the top axis (epoch 0 = step 0; linear between epoch ends)."""
    epochs = np.array([0] + [r["epoch"] for r in records], float)
    steps = np.array([0] + [r.get("step", 0) for r in records], float)
    if len(epochs) < 2 or np.any(np.diff(steps) <= 0):
        return
    top = ax.secondary_xaxis("top", functions=(lambda e: np.interp(e, epochs, steps),
                                               lambda s: np.interp(s, steps, epochs)))
    top.set_xlabel("step", fontsize=8)
    top.tick_params(labelsize=7)


def plot_run(run_dir: os.PathLike, out: Optional[os.PathLike] = None) -> Path:
    """`curves.png` of one run (into the run directory unless `out` says otherwise)."""
    run_dir = Path(run_dir)
    return plot_runs({run_dir.name: read_records(run_dir)}, out or run_dir / "curves.png")


def run_labels(run_dirs: Sequence[str]) -> List[str]:
    """Each run's folder name; the path as given where two names collide."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [name if names.count(name) == 1 else str(d) for name, d in zip(names, run_dirs)]
