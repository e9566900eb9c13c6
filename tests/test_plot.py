"""Training curves: metrics.jsonl -> curves.png (vit_ms.figures.run_curves, python -m vit_ms.plot), and the trainer's
CurvesWriter, which never lets a drawing failure reach the run."""
import json
import logging
import sys

import numpy as np
import pytest
from PIL import Image

from vit_ms.errors import UserError
from vit_ms import plot
from vit_ms.figures import run_curves
from vit_ms.train.pictures import CurvesWriter


def write_metrics(run_dir, epochs=4, ema=False, extra_lines=()):
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for e in range(1, epochs + 1):
        record = {"epoch": e, "step": 10 * e, "lr": 1e-3 / e, "train_loss": 2.0 / e, "val_loss": 1.5 / e,
                  "val_top1": 0.2 * e, "val_top5": 0.25 * e, "images_per_sec": 100.0 + e, "epoch_seconds": 1.0,
                  "skipped_steps": 0}
        if ema:
            record["ema_val_top1"] = 0.21 * e
        lines.append(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines + list(extra_lines)) + "\n")
    return run_dir


def assert_drawn_png(path, min_size=(600, 400)):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels[:: max(len(pixels) // 20000, 1)]}
    assert len(colours) > 50  # lines, text and several series colours, not a blank page


def test_records_keep_the_last_line_of_each_epoch_in_order(tmp_path):
    run = write_metrics(tmp_path / "r", epochs=3, extra_lines=[json.dumps({"epoch": 2, "step": 20, "lr": 5.0})])
    records = run_curves.read_records(run)
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[1] == {"epoch": 2, "step": 20, "lr": 5.0}


def test_one_run_draws_all_panels_with_ema_columns(tmp_path, monkeypatch):
    run = write_metrics(tmp_path / "r", ema=True)
    drawn = []
    original = run_curves._series
    monkeypatch.setattr(run_curves, "_series", lambda records, key: drawn.append(key) or original(records, key))
    path = run_curves.plot_run(run)
    assert path == run / "curves.png"
    assert_drawn_png(path)
    assert sorted(drawn) == ["ema_val_top1", "images_per_sec", "lr", "train_loss", "val_loss", "val_top1",
                             "val_top5"]
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "metrics.jsonl"]  # no temporary file left


def test_cli_overlays_runs_labelled_by_name(tmp_path, capsys):
    a, b = write_metrics(tmp_path / "a"), write_metrics(tmp_path / "b", epochs=6, ema=True)
    out = tmp_path / "cmp.png"
    assert plot.main([str(a), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert_drawn_png(out)
    other = str(tmp_path / "x" / "a")
    assert run_curves.run_labels([str(a), other, str(b)]) == [str(a), other, "b"]


def test_cli_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"metrics.jsonl' not found: give a run directory written by train.py"):
        plot.main([str(tmp_path / "nothing")])
    run = write_metrics(tmp_path / "r", extra_lines=["{not json"])
    with pytest.raises(UserError, match=r"line 5 is not JSON .*; remove or repair that line"):
        plot.main([str(run)])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match="no epoch records yet in empty"):
        plot.main([str(tmp_path / "empty")])


def test_curves_writer_draws_each_epoch_in_the_background(tmp_path, monkeypatch):
    run = write_metrics(tmp_path / "r", epochs=1)
    writer = CurvesWriter(run)
    writer.update()
    writer.wait()
    first = (run / "curves.png").read_bytes()
    write_metrics(run, epochs=3)
    writer.update()
    writer.close()  # waits for the drawing
    assert (run / "curves.png").read_bytes() != first and writer.drawn == 2 and not writer.failed

    import threading

    release, calls = threading.Event(), []
    original = writer.draw
    monkeypatch.setattr(writer, "draw", lambda: (calls.append(1), release.wait(10), original()))
    for _ in range(3):  # epochs end faster than drawings: one runs, one more is queued, none is lost
        writer.update()
    release.set()
    writer.wait()
    assert len(calls) == 2 and writer.drawn == 4 and writer._thread is None


@pytest.mark.parametrize("failure", ["matplotlib missing", "unwritable"])
def test_a_drawing_failure_is_logged_once_and_never_raised(tmp_path, monkeypatch, caplog, failure):
    run = write_metrics(tmp_path / "r")
    if failure == "matplotlib missing":
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
        expected = "needs the matplotlib package: pip install matplotlib"
    else:
        (run / "curves.png").mkdir()  # the picture cannot replace a folder
        expected = "curves.png"
    writer = CurvesWriter(run)
    with caplog.at_level(logging.WARNING, logger="vit_ms"):
        for _ in range(3):
            writer.update()
            writer.wait()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "curves.png not written" in warnings[0] and expected in warnings[0]
    assert "python -m vit_ms.plot" in warnings[0] and writer.failed and writer.drawn == 0
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary file left behind
