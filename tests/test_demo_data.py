"""vit_ms.data.demo: the digits folder (counts, classes, idempotent, atomic) and the synthetic folder."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vit_ms import demo as demo_command
from vit_ms.data import demo as demo_data
from vit_ms.data import load_image_rgb, scan_split
from vit_ms.errors import DataError, run_cli


def count_per_class(split_dir):
    return {d.name: len(list(d.glob("*.png"))) for d in sorted(split_dir.iterdir())}


def test_digits_folder_counts_classes_and_split(tmp_path):
    root = demo_data.write_digits_folder(tmp_path / "digits", image_size=16)
    train, val = count_per_class(root / "train"), count_per_class(root / "val")
    assert sorted(train) == sorted(val) == [str(d) for d in range(10)]
    assert sum(train.values()) + sum(val.values()) == 1797
    for digit in train:  # stratified: 20% of each class, rounded
        assert val[digit] == round((train[digit] + val[digit]) * 0.2)
    marker = json.loads((root / demo_data.MARKER).read_text())
    assert marker["counts"] == {"train": sum(train.values()), "val": sum(val.values())}
    image = load_image_rgb(next((root / "val" / "3").glob("*.png")), max_pixels=10_000)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8 and image.max() > 128
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]  # the temporary folder is gone
    index = scan_split(root, "train", "error")
    assert index.classes == [str(d) for d in range(10)] and not index.bad


def test_digits_folder_is_idempotent_and_rewritten_for_other_parameters(tmp_path, monkeypatch):
    root = demo_data.write_digits_folder(tmp_path / "digits", image_size=8, seed=1)
    first = sorted(p.name for p in (root / "val" / "0").iterdir())
    marker_time = (root / demo_data.MARKER).stat().st_mtime_ns

    def must_not_load():
        raise AssertionError("a complete folder must not be written again")

    monkeypatch.setattr("sklearn.datasets.load_digits", must_not_load)
    assert demo_data.write_digits_folder(root, image_size=8, seed=1) == root
    assert (root / demo_data.MARKER).stat().st_mtime_ns == marker_time
    monkeypatch.undo()
    demo_data.write_digits_folder(root, image_size=8, seed=2)  # other parameters: replaced
    assert sorted(p.name for p in (root / "val" / "0").iterdir()) != first
    assert json.loads((root / demo_data.MARKER).read_text())["params"]["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]


def test_digits_folder_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("user data")
    with pytest.raises(DataError, match="not a folder written by python -m vit_ms.demo"):
        demo_data.write_digits_folder(tmp_path / "mine")
    assert (tmp_path / "mine" / "keep.txt").exists()


def test_synthetic_folder_mixes_formats_and_is_learnable_from_colour(tmp_path):
    root = demo_data.write_synthetic_folder(tmp_path / "synth", num_classes=4, train_per_class=6, val_per_class=3,
                                            image_size=24, seed=0)
    train, val = scan_split(root, "train", "error"), scan_split(root, "val", "error")
    assert len(train.samples) == 24 and len(val.samples) == 12 and len(train.classes) == 4
    assert {p.rsplit(".", 1)[1] for p, _ in train.samples} == {"jpg", "png"}
    assert Image.open(train.samples[0][0]).size == (24, 24)

    def mean_colour(path):
        return load_image_rgb(path, 10_000).reshape(-1, 3).mean(axis=0)  # (3,)

    centroids = np.stack([np.mean([mean_colour(p) for p, c in train.samples if c == k], axis=0) for k in range(4)])
    for path, label in val.samples:  # nearest class colour classifies every validation image
        assert np.argmin(np.linalg.norm(centroids - mean_colour(path), axis=1)) == label


def test_cli_writes_both_kinds_and_names_a_bad_size(tmp_path, capsys):
    assert demo_command.main(["--out", str(tmp_path / "s"), "--kind", "synthetic", "--num-classes", "2",
                           "--train-per-class", "2", "--val-per-class", "1", "--image-size", "16"]) == 0
    assert "4 train / 2 val" in capsys.readouterr().out
    assert demo_command.main(["--out", str(tmp_path / "d"), "--image-size", "8"]) == 0
    counts = json.loads((tmp_path / "d" / demo_data.MARKER).read_text())["counts"]
    assert f"{counts['train']} train / {counts['val']} val" in capsys.readouterr().out
    assert run_cli(demo_command.main, ["--out", str(tmp_path / "e"), "--image-size", "4"]) == 2
    assert "error: --image-size 4 must be at least 8 (the digits are 8x8)" in capsys.readouterr().err


def test_generate_writes_a_missing_root_only_when_asked(tmp_path):
    from vit_ms.config import DataConfig

    missing = tmp_path / "nested" / "digits"
    assert demo_data.generate_if_missing(DataConfig(root=str(missing))) is False  # generate off: nothing written
    assert not missing.exists()
    assert demo_data.generate_if_missing(DataConfig(root=str(missing), generate="digits")) is True
    marker = json.loads((missing / demo_data.MARKER).read_text())
    assert marker["params"]["image_size"] == 32 and sum(marker["counts"].values()) == 1797
    mine = tmp_path / "mine"
    mine.mkdir()  # an existing folder is never touched, even an empty one
    assert demo_data.generate_if_missing(DataConfig(root=str(mine), generate="digits")) is False
    assert list(mine.iterdir()) == []


def test_the_run_setup_writes_the_demo_set_and_other_configs_name_the_fix(tmp_path):
    from vit_ms.config_loader import load_config
    from vit_ms.data import Feed, create_dataset
    from vit_ms.data.setup import prepare_data

    root = tmp_path / "digits"
    cfg = load_config("demo.yaml", [f"data.root={root}"])
    assert cfg.data.generate == "digits" and load_config("vit_ti16.yaml").data.generate == ""
    with pytest.raises(DataError, match="does not exist"):  # building a dataset writes nothing
        create_dataset(cfg.data, "val", Feed.of(cfg, 64))
    prepare_data(cfg.data)
    _, info = create_dataset(cfg.data, "val", Feed.of(cfg, 64))
    assert info.class_names == [str(d) for d in range(10)] and info.num_samples == 359
    cfg = load_config("demo.yaml", [f"data.root={tmp_path / 'elsewhere'}", "data.generate="])
    prepare_data(cfg.data)
    with pytest.raises(DataError) as err:
        create_dataset(cfg.data, "train", Feed.of(cfg, 8))
    message = str(err.value)
    assert "elsewhere' does not exist" in message and "--set data.generate=digits" in message
    assert f"python -m vit_ms.demo --out {tmp_path / 'elsewhere'}" in message


def test_the_demo_command_writes_the_folder_without_a_warning(tmp_path):
    """`python -m vit_ms.demo` (vit_ms/demo.py) writes the folder, and Python warns of no module run twice."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "vit_ms.demo", "--out",
                           str(tmp_path / "s"), "--kind", "synthetic", "--num-classes", "2", "--train-per-class", "1",
                           "--val-per-class", "1", "--image-size", "8"], cwd=repo, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "found in sys.modules" not in proc.stderr and (tmp_path / "s" / "val").is_dir()
