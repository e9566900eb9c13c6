"""Checkpoints: atomic writes, corruption detection, fit errors, retention and --resume auto."""
import os
import time

import mindspore as ms
import numpy as np
import pytest

from vit_ms.train import checkpoint as ckpt
from vit_ms.train.checkpoint import TrainState
from vit_ms.errors import CheckpointError
from tiny import tiny_model


def tiny(num_classes=3, image_size=32):
    return tiny_model(num_classes, image_size, depth=1)


def test_save_then_load_round_trips_weights_and_state(tmp_path):
    model = tiny()
    state = TrainState(epoch=2, step_in_epoch=5, global_step=17, best_top1=0.75)
    ckpt.save_checkpoint(model, tmp_path / "last.ckpt", state)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
    other = tiny()
    loaded_state = ckpt.load_model_weights(other, tmp_path / "last.ckpt")
    assert loaded_state == state
    for a, b in zip(model.get_parameters(), other.get_parameters()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny()
    ckpt.save_checkpoint(model, tmp_path / "last.ckpt", TrainState(epoch=1))
    before = (tmp_path / "last.ckpt").read_bytes()

    def dies_half_way(net, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ms, "save_checkpoint", dies_half_way)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last.ckpt.*No space left.*unchanged"):
        ckpt.save_checkpoint(model, tmp_path / "last.ckpt", TrainState(epoch=2))
    assert (tmp_path / "last.ckpt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_start_removes_what_killed_saves_left_and_nothing_else(tmp_path):
    from vit_ms.fs import temp_path
    left = [".last.partial.ckpt", ".best.partial.tmp", temp_path(tmp_path / "config.yaml").name,
            temp_path(tmp_path / "metrics.jsonl").name]  # ours, MindSpore's own temp, atomic_writer's
    kept = ["last.ckpt", "config.yaml", "metrics.jsonl", "notes.tmp.txt", ".lock"]
    for name in left + kept:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".cache.tmp").mkdir()  # a folder is not a leftover file
    assert sorted(p.name for p in ckpt.remove_partial_files(tmp_path)) == sorted(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [".cache.tmp"])


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_corrupt_checkpoint_is_detected_and_named(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    ckpt.save_checkpoint(tiny(), path, TrainState())
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(len(data))}[damage])
    with pytest.raises(CheckpointError, match=r"checkpoint '.*last.ckpt' is (corrupt|empty)"):
        ckpt.read_checkpoint(path)


def test_flipped_byte_fails_the_crc(tmp_path):
    path = tmp_path / "last.ckpt"
    ckpt.save_checkpoint(tiny(), path, TrainState())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        ckpt.read_checkpoint(path)


def test_fit_errors_name_keys_shapes_and_the_fix(tmp_path):
    path = tmp_path / "a.ckpt"
    ckpt.save_checkpoint(tiny(num_classes=5, image_size=48), path, TrainState())
    with pytest.raises(CheckpointError) as err:
        ckpt.load_model_weights(tiny(num_classes=3, image_size=32), path)
    text = str(err.value)
    assert "last.ckpt" not in text and "a.ckpt" in text
    assert "head.weight: weights (5, 32) vs model (3, 32)" in text
    assert "model.num_classes=5" in text and "model.image_size" in text
    deeper = tiny_model(3, 32, depth=2)
    with pytest.raises(CheckpointError, match=r"(?s)missing from the weights \(\d+\): blocks.1.*model.name"):
        ckpt.load_model_weights(deeper, tmp_path / "a.ckpt")


def test_optimizer_state_is_not_an_unexpected_key(tmp_path):
    model = tiny()
    opt = ms.nn.Adam(model.trainable_params())
    net = ms.nn.TrainOneStepCell(ms.nn.WithLossCell(model, ms.nn.MSELoss()), opt)
    ckpt.save_checkpoint(net, tmp_path / "t.ckpt", TrainState(global_step=3))
    assert ckpt.load_model_weights(tiny(), tmp_path / "t.ckpt").global_step == 3


def test_pruning_keeps_newest_epochs_and_never_best_or_last(tmp_path):
    for name in ["best.ckpt", "last.ckpt"] + [f"epoch_{e:04d}.ckpt" for e in range(1, 6)]:
        (tmp_path / name).write_bytes(b"x")
    ckpt.prune_epoch_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "epoch_0004.ckpt", "epoch_0005.ckpt",
                                                         "last.ckpt"]


def test_resume_auto_skips_a_corrupt_newest_checkpoint(tmp_path):
    model = tiny()
    ckpt.save_checkpoint(model, tmp_path / "epoch_0001.ckpt", TrainState(epoch=1))
    time.sleep(0.05)
    ckpt.save_checkpoint(model, tmp_path / "last.ckpt", TrainState(epoch=2))
    assert ckpt.find_resume_checkpoint(tmp_path) == tmp_path / "last.ckpt"
    (tmp_path / "last.ckpt").write_bytes((tmp_path / "last.ckpt").read_bytes()[:100])
    assert ckpt.find_resume_checkpoint(tmp_path) == tmp_path / "epoch_0001.ckpt"
    assert ckpt.find_resume_checkpoint(tmp_path / "nothing_here") is None
