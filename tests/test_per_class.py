"""Per-class evaluation: the confusion matrix in ClassificationMetrics (one rank and two), per_class.csv,
the worst classes, confusion.png and where eval writes them."""
import csv
import math

import numpy as np
import pytest
from mindspore import Tensor
from PIL import Image

from vit_ms.errors import UserError
from vit_ms.inference.per_class import (ClassResult, eval_output_dir, per_class_results, worst_classes,
                                        write_per_class_csv)
from vit_ms.figures.confusion import plot_confusion
from vit_ms.train import metrics
from vit_ms.train.metrics import ClassificationMetrics


def numpy_confusion(logits: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    confusion = np.zeros((classes, classes), np.int64)
    for label, pred in zip(labels, logits.argmax(axis=1)):
        confusion[label, pred] += 1
    return confusion


def test_confusion_matrix_matches_numpy_and_counts_sum_to_the_totals():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(37, 6)).astype(np.float32), rng.integers(0, 6, 37)
    metric = ClassificationMetrics(num_classes=6)
    for start in range(0, 37, 8):  # batches of 8, the last one short
        metric.update(Tensor(logits[start:start + 8]), Tensor(labels[start:start + 8].astype(np.int32)))
    out = metric.eval()
    confusion = out.pop("confusion")
    assert confusion.dtype == np.int64 and (confusion == numpy_confusion(logits, labels, 6)).all()
    assert confusion.sum() == out["num_images"] == 37
    assert (confusion.sum(axis=1) == np.bincount(labels, minlength=6)).all()
    assert np.trace(confusion) / 37 == pytest.approx(out["top1"])
    assert "confusion" not in ClassificationMetrics().eval()  # training's metrics stay as they were


def test_two_ranks_all_reduce_the_confusion_matrix_with_the_sums(monkeypatch):
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 4, 20)
    ranks = [ClassificationMetrics(world_size=2, num_classes=4) for _ in range(2)]
    for r, metric in enumerate(ranks):  # rank r scores samples r::2, as the eval shards do
        metric.update(Tensor(logits[r::2]), Tensor(labels[r::2].astype(np.int32)))
    payloads = [np.concatenate([m.sums, m.confusion.ravel()]).astype(np.float32) for m in ranks]

    class SumOverRanks:  # what AllReduce(SUM) returns on every rank
        def __call__(self, tensor):
            assert tensor.shape == (4 + 16,)
            return Tensor(sum(payloads))

    monkeypatch.setattr(metrics.ops, "AllReduce", SumOverRanks)
    for metric in ranks:  # every rank reports the whole split, as one process scoring it all would
        got = metric.eval()
        assert (got["confusion"] == numpy_confusion(logits, labels, 4)).all()
        assert got["num_images"] == 20 and got["top1"] == pytest.approx(np.trace(got["confusion"]) / 20)
        assert got["top1"] == pytest.approx((logits.argmax(axis=1) == labels).mean())


def test_per_class_csv_matches_the_confusion_matrix(tmp_path):
    rng = np.random.default_rng(2)
    names = [f"c{i}" for i in range(7)]
    confusion = rng.integers(0, 9, (7, 7))
    confusion[3] = 0  # a class without validation images
    confusion[5] = 0
    confusion[5, 5] = 4  # a class never confused
    results = per_class_results(confusion, names)
    write_per_class_csv(tmp_path / "per_class.csv", results)
    with open(tmp_path / "per_class.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["class", "images", "top1", "most_confused_with"]
    assert [r[0] for r in rows[1:]] == names
    assert sum(int(r[1]) for r in rows[1:]) == confusion.sum()
    for i, row in enumerate(rows[1:]):
        images = confusion[i].sum()
        assert int(row[1]) == images
        if images == 0:
            assert row[2] == "" and row[3] == ""
            continue
        assert float(row[2]) == pytest.approx(confusion[i, i] / images, abs=1e-6)
        off = np.where(np.arange(7) == i, -1, confusion[i])  # the diagonal left out
        assert row[3] == ("" if off.max() <= 0 else names[int(np.argmax(off))])
    assert rows[6][3] == "" and float(rows[6][2]) == 1.0


def test_worst_classes_lowest_top1_first_without_empty_classes():
    results = [ClassResult("a", 10, 0.9, "b", 1), ClassResult("b", 4, 0.5, "a", 2), ClassResult("c", 0, math.nan, "", 0),
               ClassResult("d", 8, 0.5, "a", 4), ClassResult("e", 3, 1.0, "", 0)]
    assert [r.name for r in worst_classes(results, 3)] == ["d", "b", "a"]
    assert [r.name for r in worst_classes(results, 10)] == ["d", "b", "a", "e"]


@pytest.mark.parametrize("classes", [10, 120])
def test_confusion_png_is_drawn_for_few_and_many_classes(tmp_path, classes):
    rng = np.random.default_rng(3)
    confusion = np.diag(rng.integers(5, 50, classes)) + rng.integers(0, 3, (classes, classes))
    plot_confusion(confusion, [f"class_{i}" for i in range(classes)], tmp_path / "confusion.png")
    with Image.open(tmp_path / "confusion.png") as image:
        assert image.format == "PNG" and min(image.size) >= 400
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 20  # drawn, not blank
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]  # no temporary file left


def test_eval_output_dir_beside_the_checkpoint_or_out(tmp_path, monkeypatch):
    ckpt = tmp_path / "run" / "best.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    assert eval_output_dir(str(ckpt)) == tmp_path / "run" / "eval" / "best"
    assert eval_output_dir(str(ckpt), str(tmp_path / "mine")) == tmp_path / "mine"
    dots = tmp_path / "run" / "...ckpt"  # its stem is "..": not the run directory itself
    dots.write_bytes(b"x")
    assert eval_output_dir(str(dots)) == tmp_path / "run" / "eval" / "___ckpt"
    monkeypatch.chdir(tmp_path)
    assert eval_output_dir("vit_b16_augreg_in21k_ft_in1k").resolve() == (tmp_path / "eval" / "vit_b16_augreg_in21k_ft_in1k")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(UserError, match="pass a writable folder with --out DIR"):
        eval_output_dir(str(ckpt), str(blocked / "sub"))
