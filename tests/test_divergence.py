"""Divergence: the detector against numpy's median, the loop's step checks, waiting saves and checked evals.

The end-to-end runs (an lr=1e6 run, a diverging resume) are in test_train.py.
"""
import hashlib
import math

import numpy as np
import pytest
from loop_helpers import make_loop

from vit_ms.errors import DivergenceError
from vit_ms.train.checkpoint import train_state
from vit_ms.train.loop import MEDIAN_FLOOR, WINDOW, DivergenceDetector
from vit_ms.weights.checkpoint import read_checkpoint


def test_limit_is_factor_times_the_numpy_median_of_the_last_window_losses():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.5, 7.0, 3 * WINDOW)
    detector = DivergenceDetector(factor=20.0)
    assert detector.limit() is None and detector.check(1e30) is None  # no history: no ratio test yet
    for i, loss in enumerate(losses):
        detector.record(loss)
        window = losses[max(0, i + 1 - WINDOW): i + 1]
        assert detector.limit() == pytest.approx(20.0 * np.median(window), rel=1e-12)
    limit = 20.0 * np.median(losses[-WINDOW:])
    assert detector.check(limit * 0.999) is None
    assert "jumped to" in detector.check(limit * 1.001)
    assert f"median {np.median(losses[-WINDOW:]):.6g} of the last {WINDOW} training losses" in \
        detector.check(limit * 1.001)


def test_non_finite_always_stops_and_factor_zero_turns_the_ratio_test_off():
    detector = DivergenceDetector(factor=0)
    detector.record(1.0)
    assert detector.limit() is None and detector.check(1e30) is None
    assert detector.check(math.nan) == "the loss became nan"
    assert detector.check(math.inf, "the validation loss") == "the validation loss became inf"


def test_a_tiny_median_counts_as_the_floor():
    detector = DivergenceDetector(factor=1e4)
    for _ in range(5):
        detector.record(1e-6)
    assert detector.limit() == pytest.approx(1e4 * MEDIAN_FLOOR)
    assert detector.check(50.0) is None and detector.check(101.0) is not None


def setup(tmp_path, evaluate=None, eval_interval=1):
    """Steps of 4 an epoch, 3 epochs, last.ckpt after every step, a dynamic loss scale."""
    return make_loop(tmp_path, interval_steps=1, evaluate=evaluate, eval_interval=eval_interval)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_save_waits_for_the_next_sane_loss_and_a_diverged_one_is_dropped(tmp_path):
    loop, ms = setup(tmp_path)
    ms.steps(loss=1.1)  # step 1 saves last.ckpt, unchecked: it waits
    assert not (tmp_path / "last.ckpt").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".last.pending.partial.ckpt"]
    ms.steps(loss=1.0)  # step 2's loss tests step 1's weights: committed; step 2's waits
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).global_step == 1
    kept = digest(tmp_path / "last.ckpt")
    ms.steps(loss=5.0, skipped=1)  # skipped by the dynamic loss scale: no evidence
    assert (tmp_path / ".last.pending.partial.ckpt").exists() and digest(tmp_path / "last.ckpt") == kept
    with pytest.raises(DivergenceError, match=r"diverged at global step 4 \(epoch 1, step 4\): the loss jumped to "
                                              r"20000\.5, .*safe to resume from, is '.*last\.ckpt'"):
        ms.steps(loss=20000.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"] and digest(tmp_path / "last.ckpt") == kept
    assert loop.state.closed
    loop.end_epoch()  # nothing more is written after a divergence
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_non_finite_first_loss_names_no_safe_checkpoint(tmp_path):
    loop, ms = setup(tmp_path)
    with pytest.raises(DivergenceError, match=r"at global step 1 .*the loss became nan.*no checkpoint had been "
                                              r"saved .* then start again"):
        ms.steps(loss=math.nan)
    assert not list(tmp_path.iterdir())


def test_a_diverged_evaluation_writes_no_best_last_or_metrics(tmp_path):
    val_losses = iter([1.2, 3e5])
    loop, ms = setup(tmp_path, evaluate=lambda: {"top1": 0.9, "top5": 1.0, "loss": next(val_losses), "num_images": 4})
    for _ in range(4):  # the epoch ends after step 4: val loss 1.2, best, epoch and last written at once
        ms.steps(loss=1.0)
    assert {"best.ckpt", "epoch_0001.ckpt", "last.ckpt", "metrics.jsonl"} <= {p.name for p in tmp_path.iterdir()}
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    for _ in range(3):
        ms.steps(loss=1.0)
    with pytest.raises(DivergenceError, match=r"in the evaluation after epoch 2 \(global step 8\): the validation "
                                              r"loss jumped to 300000"):
        ms.steps(loss=1.0)
    after = {p.name: digest(p) for p in tmp_path.iterdir()}
    assert after.keys() == before.keys()  # no epoch_0002.ckpt, nothing pending
    assert all(after[name] == before[name] for name in ["best.ckpt", "epoch_0001.ckpt", "metrics.jsonl"])
    # last.ckpt: the step-7 save, which step 8's sane loss checked; not the weights the evaluation rejected
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (1, 3)


def test_an_epoch_end_without_eval_waits_for_the_next_step(tmp_path):
    loop, ms = make_loop(tmp_path, eval_interval=2)
    for _ in range(4):  # epoch 1 of 3 ends, no eval: its saves wait, and its metrics row with them
        ms.steps(loss=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".epoch_0001.pending.partial.ckpt",
                                                          ".last.pending.partial.ckpt"]
    ms.steps(loss=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001.ckpt", "last.ckpt", "metrics.jsonl"]
    assert train_state(read_checkpoint(tmp_path / "last.ckpt")).position == (1, 0)
