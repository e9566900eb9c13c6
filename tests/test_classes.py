"""Class identity travels with the weights: eval and resume compare the checkpoint's class names with the folders.

One tiny run is trained once (module fixture); each test copies its dataset and changes the class folders.
"""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from tiny import tiny_overrides

from vit_ms.data.demo import write_synthetic_folder
from vit_ms.errors import run_cli
from vit_ms.inference.evaluate import run_evaluation
from vit_ms.models import VisionTransformer, resolve_architecture
from vit_ms.config_loader import config_from_dict
from vit_ms.train.checkpoint import TrainState, save_checkpoint
from vit_ms.weights.checkpoint import CheckpointMeta, model_weights, read_checkpoint, read_meta

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["class_0", "class_1", "class_2"]
TINY = tiny_overrides(depth=1, num_classes=3) + ["train.batch_size=4", "data.num_parallel_workers=1",
                                                 "train.epochs=1", "run_name=r"]


def settings(*items):
    return [arg for item in items for arg in ("--set", item)]


def train(data: Path, out: Path, *args):
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", "demo.yaml",
           *settings(f"data.root={data}", f"output_dir={out}", *TINY), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset, run directory) of one epoch of training on 3 classes x 8 images."""
    base = tmp_path_factory.mktemp("classes")
    data = write_synthetic_folder(base / "data", num_classes=3, train_per_class=8, val_per_class=4, image_size=32,
                                  seed=0)
    proc = train(data, base / "runs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, base / "runs" / "r"


def renamed_copy(data: Path, dest: Path, old: str, new: str, splits=("val",)) -> Path:
    shutil.copytree(data, dest)
    for split in splits:
        (dest / split / old).rename(dest / split / new)
    return dest


def eval_main():
    spec = importlib.util.spec_from_file_location("eval_script", ROOT / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_eval_on_a_renamed_class_folder_fails_naming_it(trained, tmp_path, capsys, keep_mindspore_mode):
    data, run_dir = trained
    renamed = renamed_copy(data, tmp_path / "data", "class_1", "class_9")  # same count, another name
    code = run_cli(eval_main(), ["--ckpt", str(run_dir / "last.ckpt"), "--set", f"data.root={renamed}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"class folder 'class_9' of '{renamed / 'val'}' is not among the 3 classes of the checkpoint" in err
    assert "did you mean 'class_1'?" in err  # the recorded name the folder replaced


def test_resume_on_a_renamed_class_fails_and_keeps_classes_txt(trained, tmp_path):
    data, run_dir = trained
    renamed = renamed_copy(data, tmp_path / "data", "class_2", "class_b", splits=("train", "val"))
    out = tmp_path / "runs"
    shutil.copytree(run_dir, out / "r")
    classes_txt = (out / "r" / "classes.txt").read_bytes()
    last = (out / "r" / "last.ckpt").read_bytes()
    proc = train(renamed, out, "--resume", "auto", *settings("train.epochs=2"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"class folder 'class_b' of '{renamed / 'train'}' is not among the 3 classes of the checkpoint" \
           in proc.stderr
    assert (out / "r" / "classes.txt").read_bytes() == classes_txt == b"class_0\nclass_1\nclass_2\n"
    assert (out / "r" / "last.ckpt").read_bytes() == last
    assert len((out / "r" / "metrics.jsonl").read_text().splitlines()) == 1  # nothing trained


def permuted_checkpoint(src: Path, dest: Path, order, names) -> None:
    """`src`'s model with head rows in `order` (row i of the new head = row order[i] of the old), recording
    `names` as its class list."""
    params = read_checkpoint(src)
    meta = read_meta(params)
    model = VisionTransformer(resolve_architecture(config_from_dict(meta.config).model))
    weights = model_weights(params)
    for key in ("head.weight", "head.bias"):
        weights[key] = ms.Parameter(ms.Tensor(weights[key].asnumpy()[list(order)]), name=key)
    ms.load_param_into_net(model, weights, strict_load=True)
    save_checkpoint(model, dest, TrainState(), CheckpointMeta(meta.config, meta.plan, list(names)))


def test_same_classes_recorded_in_another_order_score_the_same(trained, tmp_path, keep_mindspore_mode):
    data, run_dir = trained
    overrides = [f"data.root={data}"]
    original = run_evaluation(str(run_dir / "last.ckpt"), overrides=overrides).metrics
    assert original["top1"] >= 0.5  # a trained model, so a label shift would show

    order = [2, 0, 1]  # new class i is old class order[i]
    permuted = tmp_path / "permuted.ckpt"
    permuted_checkpoint(run_dir / "last.ckpt", permuted, order, [CLASSES[i] for i in order])
    result = run_evaluation(str(permuted), overrides=overrides).metrics
    assert result["top1"] == original["top1"] and result["num_images"] == original["num_images"] == 12
    assert result["loss"] == pytest.approx(original["loss"], rel=1e-5)

    # the control: the same permuted head labelled in folder order scores differently
    shifted = tmp_path / "shifted.ckpt"
    permuted_checkpoint(run_dir / "last.ckpt", shifted, order, CLASSES)
    assert run_evaluation(str(shifted), overrides=overrides).metrics["top1"] < original["top1"] - 0.3


def test_reference_top1_from_numpy_matches_eval(trained, keep_mindspore_mode):
    """Independent of vit_ms's pipeline: logits of the val images, argmax against the folder's class."""
    from vit_ms.data import load_image_rgb, preprocess_eval

    data, run_dir = trained
    params = read_checkpoint(run_dir / "last.ckpt")
    cfg = config_from_dict(read_meta(params).config)
    model = VisionTransformer(resolve_architecture(cfg.model))
    ms.load_param_into_net(model, model_weights(params), strict_load=True)
    model.set_train(False)
    paths = sorted((data / "val").glob("*/*"))
    x = np.stack([preprocess_eval(load_image_rgb(p, cfg.data.max_image_pixels), cfg.data, cfg.model.image_size)
                  for p in paths])
    predicted = model(ms.Tensor(x)).asnumpy().argmax(axis=1)
    labels = np.array([CLASSES.index(p.parent.name) for p in paths])
    expected = float((predicted == labels).mean())
    assert run_evaluation(str(run_dir / "last.ckpt"), overrides=[f"data.root={data}"]).metrics["top1"] == \
        pytest.approx(expected)


def test_eval_of_weights_with_another_head_describes_the_real_mismatch(trained, tmp_path, capsys,
                                                                      keep_mindspore_mode):
    """A 10-class checkpoint that records no class names, on 3 class folders: the head cannot be changed at
    evaluation, so the message names both counts instead of suggesting model.num_classes=3."""
    data, run_dir = trained
    meta = read_meta(read_checkpoint(run_dir / "last.ckpt"))
    config = {**meta.config, "model": {**meta.config["model"], "num_classes": 10}}
    ten = tmp_path / "ten.ckpt"
    save_checkpoint(VisionTransformer(resolve_architecture(config_from_dict(config).model)), ten, TrainState(),
                    CheckpointMeta(config, None, None))
    code = run_cli(eval_main(), ["--ckpt", str(ten), "--set", f"data.root={data}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"'{ten}' has a 10-class head but its labels would come from the 3 class folders of " \
           f"'{data / 'train'}' (it records no class names to match by)" in err
    assert "these weights were trained on other classes" in err and "model.num_classes=10 but" not in err
