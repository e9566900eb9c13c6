"""The story of a served checkpoint, from its run directory when it is there (runs/<name>/ as train.py leaves it).

    story = RunStory.find("runs/demo/best.ckpt")    # None for a published name, an export, a lone file
    story.summary()                                  # what GET /v1/run answers: plan, last epoch, per-class rows
    story.picture("curves")                          # Path of curves.png (or confusion.png), None when absent

What is read: `plan.json` and `metrics.jsonl` (train.py), `curves.png` (redrawn every epoch), and
`eval/<checkpoint name>/per_class.csv` and `confusion.png` (written by `python eval.py --ckpt <checkpoint>`).
Each is optional: the summary says which are missing and the command that makes them.
"""
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ..figures.run_curves import read_records  # the one reader of metrics.jsonl (the last line for an epoch wins)

PICTURES = {"curves": ("curves.png",), "confusion": ("eval", "{stem}", "confusion.png")}


@dataclass(frozen=True)
class RunStory:
    run_dir: Path
    ckpt: Path

    @classmethod
    def find(cls, spec: str) -> Optional["RunStory"]:
        """The run directory of checkpoint file `spec`: its folder, when train.py's files are in it."""
        path = Path(spec)
        if not path.is_file():
            return None
        folder = path.resolve().parent
        if not any((folder / name).is_file() for name in ("metrics.jsonl", "plan.json", "config.yaml")):
            return None
        return cls(folder, path.resolve())

    def picture(self, name: str) -> Optional[Path]:
        parts = PICTURES.get(name)
        if parts is None:
            return None
        path = self.run_dir.joinpath(*(p.format(stem=self.ckpt.stem) for p in parts))
        return path if path.is_file() else None

    def per_class_rows(self) -> Optional[List[dict]]:
        path = self.run_dir / "eval" / self.ckpt.stem / "per_class.csv"
        if not path.is_file():
            return None
        with open(path, encoding="utf-8", newline="") as f:
            return [{"class": r["class"], "images": int(r["images"]),
                     "top1": float(r["top1"]) if r["top1"] else None,
                     "most_confused_with": r["most_confused_with"]} for r in csv.DictReader(f)]

    def epochs(self) -> List[dict]:
        if not (self.run_dir / "metrics.jsonl").is_file():
            return []
        keep = ("epoch", "train_loss", "val_loss", "val_top1", "val_top5", "ema_val_top1", "lr")
        return [{k: r[k] for k in keep if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])}
                for r in read_records(self.run_dir)]

    def summary(self) -> dict:
        plan_path = self.run_dir / "plan.json"
        plan = json.loads(plan_path.read_text(encoding="utf-8")) if plan_path.is_file() else None
        missing = []
        if self.picture("curves") is None:
            missing.append("curves.png (train.py draws it after each epoch)")
        rows = self.per_class_rows()
        if rows is None:
            missing.append(f"the per-class table (python eval.py --ckpt {self.ckpt.name} in the run directory "
                           f"writes eval/{self.ckpt.stem}/per_class.csv)")
        return {"run_dir": self.run_dir.name, "checkpoint": self.ckpt.name, "plan": plan, "epochs": self.epochs(),
                "per_class": rows, "pictures": [n for n in PICTURES if self.picture(n) is not None],
                "missing": missing}
