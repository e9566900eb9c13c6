"""TensorBoard scalars (train.tensorboard): tags, values and steps read back from the event file; the message
when the optional tensorboardX package is missing."""
import struct
import sys

import pytest

from vit_ms.errors import ConfigError
from vit_ms.train.pictures import TensorBoardScalars, require_tensorboardx, scalar_tag


def read_scalars(log_dir):
    """{(tag, step): value} from the TFRecord-framed event files (length, crc, Event proto, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    found = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                found[(value.tag, event.step)] = value.simple_value
    return found


def test_tags_group_the_metrics_columns():
    assert [scalar_tag(k) for k in ("train_loss", "val_top1", "ema_val_top5", "lr", "images_per_sec")] == [
        "train/loss", "val/top1", "ema_val/top5", "train/lr", "train/images_per_sec"]


def test_epoch_records_become_scalars_at_their_step(tmp_path):
    pytest.importorskip("tensorboardX")
    records = [{"epoch": 1, "step": 6, "lr": 0.001, "train_loss": 1.5, "val_top1": 0.25, "val_images": 12,
                      "epoch_seconds": 2.0, "skipped_steps": 0},
               {"epoch": 2, "step": 12, "lr": 0.0005, "train_loss": 1.25, "val_top1": 0.5, "val_images": 12,
                "epoch_seconds": 2.0, "skipped_steps": 0}]
    writer = TensorBoardScalars(tmp_path)
    for record in records:
        writer.update(record)
    writer.close()
    assert read_scalars(tmp_path / "tensorboard") == {
        ("train/lr", 6): pytest.approx(0.001), ("train/loss", 6): 1.5, ("val/top1", 6): 0.25,
        ("train/lr", 12): pytest.approx(0.0005), ("train/loss", 12): 1.25, ("val/top1", 12): 0.5}


def test_missing_package_names_it_and_the_setting(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ConfigError, match=r"train.tensorboard=true needs the tensorboardX package, which is not "
                                          r"installed: pip install tensorboardX \(or set train.tensorboard=false\)"):
        require_tensorboardx()


def test_a_resumed_run_tells_tensorboard_to_hide_the_points_after_its_checkpoint(tmp_path):
    """Resumed at step 6: the new event file opens with a session restart at step 7, so TensorBoard drops the
    earlier run's points at steps 7 and after (the epochs trained again), and each epoch is drawn once."""
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    first = TensorBoardScalars(tmp_path)
    for step in (6, 12):
        first.update({"epoch": step // 6, "step": step, "train_loss": 1.0})
    first.close()
    resumed = TensorBoardScalars(tmp_path, purge_step=6 + 1)
    resumed.update({"epoch": 2, "step": 12, "train_loss": 0.5})
    resumed.close()
    restarts = []
    for path in (tmp_path / "tensorboard").glob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                restarts.append(event.step)
    assert restarts == [7]  # only the resumed writer restarts the session
