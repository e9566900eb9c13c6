"""vit_ms.data.mindrecord (converter) and mindrecord_source (data.format: mindrecord): round trip, resumable
conversion, shards, per-epoch order and mid-epoch resume, and train.py / eval.py on a conversion."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mindspore.dataset as ds
import numpy as np
import pytest

import vit_ms.data.mindrecord as mindrecord
from test_data import batches, make_cfg, no_random_aug, write_bad
from tiny import tiny_overrides
from vit_ms.data import Feed, create_dataset, scan_split
from vit_ms.data.decode import read_encoded
from vit_ms.data.mindrecord import convert_folder
from vit_ms.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN, N_VAL = 24, 12


def records(out: Path, split: str) -> list:
    """Every record of a conversion, in stored order: (path, label, image bytes)."""
    files = sorted(str(p) for p in (out / split).glob("*.mindrecord"))
    dataset = ds.MindDataset(files, columns_list=["path", "label", "image"], shuffle=False)
    return [(str(p), int(l), i.tobytes()) for p, l, i in dataset.create_tuple_iterator(num_epochs=1,
                                                                                         output_numpy=True)]


@pytest.fixture
def converted(tiny_imagenet, tmp_path):
    out = tmp_path / "mr"
    convert_folder(tiny_imagenet, out, samples_per_shard=10, show_progress=False)
    return tiny_imagenet, out


def mr_cfg(out: Path, **data):
    cfg = make_cfg(out, **data)
    cfg.data.format = "mindrecord"
    return cfg


def signatures(epoch) -> list:
    return [hashlib.md5(img.tobytes()).hexdigest()[:12] for images, _ in epoch for img in images]


def test_round_trip_labels_and_bytes_exactly_with_bad_files_listed(tiny_imagenet, tmp_path):
    bad = write_bad(tiny_imagenet / "train" / "class_2", "truncated")
    out = tmp_path / "mr"
    result = convert_folder(tiny_imagenet, out, samples_per_shard=10, show_progress=False)
    assert len(result["train"]["shards"]) == 3 and len(result["val"]["shards"]) == 2
    for split, count in (("train", N_TRAIN), ("val", N_VAL)):
        index = scan_split(tiny_imagenet, split, classes=["class_0", "class_1", "class_2"])
        got = records(out, split)
        assert len(got) == count
        for (path, label), (rel, stored_label, image) in zip(index.samples, got):
            assert rel == os.path.relpath(path, tiny_imagenet / split) and stored_label == label
            assert image == read_encoded(path, 10**9).tobytes()  # JPEGs: the file itself, byte for byte
            if path.endswith(".jpg"):
                assert image == Path(path).read_bytes()
    assert (out / "train" / "classes.txt").read_text().split() == ["class_0", "class_1", "class_2"]
    listed = (out / "train" / "bad_files.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{bad}\t") and "truncated" in listed[0]


def test_conversion_resumes_after_an_interruption(tiny_imagenet, tmp_path, monkeypatch):
    out = tmp_path / "mr"
    real = mindrecord._write_shard
    written = []

    def fail_on_second(file, rows):
        if len(written) == 1:
            raise KeyboardInterrupt  # killed while writing shard 1
        written.append(file)
        real(file, rows)

    monkeypatch.setattr(mindrecord, "_write_shard", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        convert_folder(tiny_imagenet, out, splits=["train"], samples_per_shard=10, show_progress=False)
    progress = json.loads((out / "train" / "progress.json").read_text())
    assert list(progress["shards"]) == ["0"] and not progress["complete"]
    with pytest.raises(DataError, match="not finished"):
        create_dataset(mr_cfg(out).data, "train", Feed(image_size=32, batch_size=4))
    first_shard = out / "train" / "train-00000.mindrecord"
    stamp = first_shard.stat().st_mtime_ns
    monkeypatch.setattr(mindrecord, "_write_shard", lambda file, rows: (written.append(file), real(file, rows)))
    convert_folder(tiny_imagenet, out, splits=["train"], samples_per_shard=10, show_progress=False)
    assert [Path(f).name for f in written[1:]] == ["train-00001.mindrecord", "train-00002.mindrecord"]
    assert first_shard.stat().st_mtime_ns == stamp  # not written again
    assert [r[0] for r in records(out, "train")] == [os.path.relpath(p, tiny_imagenet / "train")
                                                     for p, _ in scan_split(tiny_imagenet, "train").samples]
    with pytest.raises(DataError, match="holds a conversion of other data"):  # other settings: refused, not mixed
        convert_folder(tiny_imagenet, out, splits=["train"], samples_per_shard=8, show_progress=False)


def test_a_conversion_of_other_data_is_refused_not_mixed(tiny_imagenet, tmp_path, monkeypatch):
    """Same class names and image counts, other files: the recorded fingerprint tells them apart, finished or not."""
    from vit_ms.data.demo import write_synthetic_folder

    other = write_synthetic_folder(tmp_path / "other", num_classes=3, train_per_class=8, val_per_class=4,
                                   image_size=32, seed=1)
    out = tmp_path / "mr"
    convert_folder(tiny_imagenet, out, splits=["train"], samples_per_shard=10, show_progress=False)
    with pytest.raises(DataError, match=r"holds a conversion of other data.*remove .*or choose another --out"):
        convert_folder(other, out, splits=["train"], samples_per_shard=10, show_progress=False)
    real, written = mindrecord._write_shard, []

    def killed_in_the_second(file, rows):
        if written:
            raise KeyboardInterrupt
        written.append(real(file, rows))

    monkeypatch.setattr(mindrecord, "_write_shard", killed_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        convert_folder(other, tmp_path / "mr2", splits=["train"], samples_per_shard=10, show_progress=False)
    monkeypatch.setattr(mindrecord, "_write_shard", real)
    with pytest.raises(DataError, match="holds a conversion of other data"):  # resumed on another --root
        convert_folder(tiny_imagenet, tmp_path / "mr2", splits=["train"], samples_per_shard=10, show_progress=False)
    convert_folder(other, tmp_path / "mr2", splits=["train"], samples_per_shard=10, show_progress=False)
    (tiny_imagenet / "train" / "class_0" / "0000.jpg").write_bytes(
        (tiny_imagenet / "train" / "class_0" / "0002.jpg").read_bytes())  # a file changed: another source
    with pytest.raises(DataError, match="holds a conversion of other data"):
        convert_folder(tiny_imagenet, out, splits=["train"], samples_per_shard=10, show_progress=False)


@pytest.mark.parametrize("damage", ["truncated shard", "deleted index", "deleted shard"])
def test_damaged_or_missing_shards_are_named(converted, damage):
    _, out = converted
    shard = out / "train" / "train-00001.mindrecord"
    if damage == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:1000])
    elif damage == "deleted index":
        os.unlink(f"{shard}.db")
    else:
        os.unlink(shard)
    named = f"{shard}.db" if damage == "deleted index" else str(shard)
    with pytest.raises(DataError, match="truncated, damaged" if damage == "truncated shard" else "missing") as err:
        create_dataset(mr_cfg(out).data, "train", Feed.of(mr_cfg(out), 4))
    assert f"'{named}'" in str(err.value) and "python -m vit_ms.mindrecord" in str(err.value)


def test_shards_take_about_their_images_size_on_disk(converted):
    _, out = converted
    for shard in (out / "train").glob("*.mindrecord"):
        images = sum(len(image) for _, _, image in records(out, "train")) / 3  # 3 shards of about 8 images
        assert shard.stat().st_size < 64 * 1024 + 4 * images, shard.stat().st_size  # not 2 x 64 MiB pages


def test_mindrecord_pipeline_matches_the_folder_pipeline(converted):
    folder_root, out = converted
    for split, training in (("train", True), ("val", False)):
        cfg = no_random_aug(make_cfg(folder_root, shuffle=False))
        mcfg = no_random_aug(mr_cfg(out, shuffle=False))
        (a,) = batches(create_dataset(cfg.data, split, Feed.of(cfg, 4))[0])
        dataset, info = create_dataset(mcfg.data, split, Feed.of(mcfg, 4))
        (b,) = batches(dataset)
        assert info.num_samples == (N_TRAIN if training else N_VAL) and info.class_names == ["class_0", "class_1",
                                                                                             "class_2"]
        assert signatures(a) == signatures(b)  # same images, same transforms, same order without shuffle
        assert [l.tolist() for _, l in a] == [l.tolist() for _, l in b]


def test_two_shards_read_disjoint_samples(converted):
    _, out = converted
    cfg = no_random_aug(mr_cfg(out))
    train = [signatures(batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4, num_shards=2, shard_id=r))[0])[0])
             for r in range(2)]
    assert len(train[0]) == len(train[1]) == N_TRAIN // 2 and not set(train[0]) & set(train[1])
    val = [signatures(batches(create_dataset(cfg.data, "val", Feed.of(cfg, 4, num_shards=5, shard_id=r))[0])[0])
           for r in range(5)]
    assert [len(v) for v in val] == [3, 3, 2, 2, 2] and len(set(sum(val, []))) == N_VAL  # each once, no padding


def test_shuffled_every_epoch_and_resumed_mid_epoch(converted):
    _, out = converted
    cfg = no_random_aug(mr_cfg(out))
    full = [signatures(e) for e in batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4))[0], num_epochs=3)]
    assert full[0] != full[1] and sorted(full[0]) == sorted(full[1])  # a new order, the same images
    again = [signatures(e) for e in batches(create_dataset(cfg.data, "train", Feed.of(cfg, 4))[0], num_epochs=2)]
    assert again == full[:2]  # the order follows (train.seed, epoch)
    dataset, info = create_dataset(cfg.data, "train", Feed.of(cfg, 4, start_epoch=1, skip_steps=2))
    it = dataset.create_tuple_iterator(num_epochs=3, output_numpy=True)  # epochs counted from 0, as Model.train
    resumed = [signatures([(img, lab) for img, lab in it]) for _ in range(2)]
    assert resumed == [full[1][2 * 4:], full[2]]
    cfg.data.re_prob, cfg.data.mixup, cfg.data.cutmix = 0.5, 0.8, 1.0  # per-batch draws resume too
    whole = list(create_dataset(cfg.data, "train", Feed.of(cfg, 4, start_epoch=1))[0].create_tuple_iterator(
        num_epochs=2, output_numpy=True))  # epoch 1
    dataset, _ = create_dataset(cfg.data, "train", Feed.of(cfg, 4, start_epoch=1, skip_steps=2))
    resumed = list(dataset.create_tuple_iterator(num_epochs=2, output_numpy=True))
    assert len(resumed) == len(whole) - 2 and len(whole) == 6
    for (images, labels), (expected_images, expected_labels) in zip(resumed, whole[2:]):
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)


def test_deterministic_resume_with_real_augmentation(converted):
    from test_data import assert_resumed_equal, real_augmentation

    _, out = converted
    cfg = real_augmentation(mr_cfg(out))
    whole = list(create_dataset(cfg.data, "train", Feed.of(cfg, 4, start_epoch=1))[0].create_tuple_iterator(
        num_epochs=2, output_numpy=True))  # epochs 1 and 2 (counted from 0)
    dataset, _ = create_dataset(cfg.data, "train", Feed.of(cfg, 4, start_epoch=1, skip_steps=2))
    resumed = list(dataset.create_tuple_iterator(num_epochs=2, output_numpy=True))
    assert_resumed_equal(resumed, whole[2:])


def test_class_names_keep_their_spaces_through_the_conversion(tiny_imagenet, tmp_path):
    """A folder-trained checkpoint's class names ("class_1 " with its space) label the converted split."""
    for split in ("train", "val"):
        os.rename(tiny_imagenet / split / "class_1", tiny_imagenet / split / "class_1 ")
    out = tmp_path / "mr"
    convert_folder(tiny_imagenet, out, samples_per_shard=100, show_progress=False)
    names = ["class_0", "class_1 ", "class_2"]
    cfg = mr_cfg(out)
    _, info = create_dataset(cfg.data, "val", Feed.of(cfg, 4), classes=names, classes_source="a checkpoint")
    assert info.class_names == names and info.num_samples == N_VAL


def test_wrong_root_and_checkpoint_classes(converted, tmp_path):
    folder_root, out = converted
    with pytest.raises(DataError, match="not a MindRecord conversion"):
        create_dataset(mr_cfg(folder_root).data, "train", Feed(image_size=32, batch_size=4))
    cfg = no_random_aug(mr_cfg(out, shuffle=False))
    (plain,) = batches(create_dataset(cfg.data, "val", Feed.of(cfg, 12))[0])
    reordered = ["class_2", "class_0", "class_1"]  # a checkpoint's list in another order: labels by name
    (mapped,) = batches(create_dataset(cfg.data, "val", Feed.of(cfg, 12), classes=reordered, classes_source="ckpt")[0])
    assert [reordered[i] for i in mapped[0][1]] == [f"class_{i}" for i in plain[0][1]]
    with pytest.raises(DataError, match="class_2"):
        create_dataset(cfg.data, "val", Feed.of(cfg, 4), classes=["class_0", "class_1"], classes_source="ckpt")


@pytest.mark.slow
def test_train_eval_and_resume_from_mindrecord(converted, tmp_path):
    _, out = converted
    args = ["--config", "demo.yaml"]
    for item in [f"data.root={out}", "data.format=mindrecord", f"output_dir={tmp_path}", "run_name=r",
                 "train.batch_size=4", "data.num_parallel_workers=1", "train.epochs=1",
                 *tiny_overrides(depth=1, num_classes=3)]:
        args += ["--set", item]

    def run(script, *extra):
        proc = subprocess.run([sys.executable, str(ROOT / script), *extra], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc

    run("train.py", *args)
    # MindDataset moved to epoch 1; the cosine is rebuilt for 2 epochs (--allow-changes)
    out = run("train.py", *args, "--set", "train.epochs=2", "--resume", "auto", "--allow-changes")
    assert "resumed from" in out.stderr + out.stdout
    recs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in recs] == [(1, 6), (2, 12)]
    metrics = json.loads(run("eval.py", "--ckpt", str(tmp_path / "r" / "last.ckpt")).stdout.strip().splitlines()[-1])
    assert metrics["num_images"] == N_VAL and metrics["top1"] == pytest.approx(recs[-1]["val_top1"])


def test_the_converter_command_answers_help_without_a_warning():
    proc = subprocess.run([sys.executable, "-m", "vit_ms.mindrecord", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--samples-per-shard" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr
