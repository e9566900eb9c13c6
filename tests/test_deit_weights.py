"""DeiT's distilled ViT (model.distilled): the two-head model against a numpy reference, timm's and Facebook's
distilled weights through every loading path, and the moves between plain and distilled weights.

Tiny ViTs as in test_convert.py (width 32, depth 2, 32 px, patch 8); each test writes its own weights file.
"""
import mindspore as ms
import numpy as np
import pytest
from numpy_vit import random_timm_state, timm_forward
from safetensors.numpy import save_file

import tiny
from vit_ms.config_loader import apply_overrides, config_from_dict
from vit_ms.errors import CheckpointError
from vit_ms.convert import main as convert_main
from vit_ms.weights.fit import check_fit, infer_architecture
from vit_ms.weights.hub import PRETRAINED
from vit_ms.weights.load import load_pretrained, model_param_shapes
from vit_ms.weights.sources import read_state

DIM, DEPTH, HEADS, PATCH, GRID, CLASSES = 32, 2, 2, 8, 4, 10
TOLERANCE = 1e-4


def distilled_state(seed: int = 0, classes: int = CLASSES):
    return random_timm_state(np.random.default_rng(seed), DIM, DEPTH, HEADS, PATCH, GRID, classes, distilled=True)


def run(model, images: np.ndarray, train: bool = False):
    model.set_train(train)
    out = model(ms.Tensor(images.astype(np.float32)))
    return tuple(o.asnumpy() for o in out) if isinstance(out, tuple) else out.asnumpy()


def max_diff(ours, ref) -> float:
    diff = float(np.abs(np.asarray(ours, np.float64) - ref).max())
    print(f"parity: max abs diff {diff:.3e}")
    return diff


@pytest.fixture()
def images():
    return np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)


def test_distilled_model_shapes_and_no_weight_decay():
    model = tiny.tiny_model(CLASSES, distilled=True)
    shapes = model_param_shapes(model)
    assert shapes["dist_token"] == (1, 1, DIM) and shapes["pos_embed"] == (1, GRID * GRID + 2, DIM)
    assert shapes["head_dist.weight"] == (CLASSES, DIM) and shapes["head_dist.bias"] == (CLASSES,)
    assert "dist_token" in model.no_weight_decay() and "head_dist.weight" not in model.no_weight_decay()
    assert "dist_token" not in model_param_shapes(tiny.tiny_model(CLASSES))


@pytest.mark.parametrize("source", ["timm", "facebook"])
def test_distilled_weights_parity_eval_average_and_training_heads(tmp_path, images, source):
    """timm's deit_*_distilled_* and Facebook's DistilledVisionTransformer state dicts use the same names; the
    Facebook file is its 'model' entry re-saved (the reader refuses pickles)."""
    state = distilled_state()
    name = "model.safetensors" if source == "timm" else "deit_distilled.safetensors"
    save_file(state, str(tmp_path / name))
    model = tiny.tiny_model(CLASSES, distilled=True)
    report = load_pretrained(model, str(tmp_path / name))
    assert report.source_format == "timm" and not report.head_reinitialised and report.loaded == len(state)
    assert max_diff(run(model, images), timm_forward(state, images, HEADS)) <= TOLERANCE
    cls_ref, dist_ref = timm_forward(state, images, HEADS, both_heads=True)
    cls, dist = run(model, images, train=True)
    assert max_diff(cls, cls_ref) <= TOLERANCE and max_diff(dist, dist_ref) <= TOLERANCE
    assert np.abs(cls_ref - dist_ref).max() > 0.1  # the heads differ, so the average is a real test


def test_infer_architecture_and_strict_check_hints():
    state = distilled_state()
    arch = infer_architecture(state)
    assert arch["distilled"] and arch["image_size"] == GRID * PATCH and arch["num_classes"] == CLASSES
    with pytest.raises(CheckpointError, match="model.distilled=true") as err:
        check_fit(model_param_shapes(tiny.tiny_model(CLASSES)), state)
    assert "dist_token" in str(err.value) and "head_dist.weight" in str(err.value)
    plain = random_timm_state(np.random.default_rng(2), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES)
    with pytest.raises(CheckpointError, match="model.distilled=false"):
        check_fit(model_param_shapes(tiny.tiny_model(CLASSES, distilled=True)), plain)


def test_new_image_size_resamples_behind_both_prefix_tokens(tmp_path):
    state = distilled_state(3)
    save_file(state, str(tmp_path / "model.safetensors"))
    model = tiny.tiny_model(CLASSES, image_size=48, distilled=True)
    report = load_pretrained(model, str(tmp_path / "model.safetensors"))
    pos = model.pos_embed.asnumpy()
    assert report.pos_embed_resampled and pos.shape == (1, 36 + 2, DIM)
    np.testing.assert_array_equal(pos[:, :2], state["pos_embed"][:, :2])  # class and distillation rows untouched


def test_another_head_size_reinitialises_both_heads(tmp_path):
    save_file(distilled_state(4), str(tmp_path / "model.safetensors"))
    model = tiny.tiny_model(3, distilled=True)
    report = load_pretrained(model, str(tmp_path / "model.safetensors"))
    assert report.head_reinitialised and "heads are freshly initialised" in str(report)
    assert np.all(model.head_dist.bias.asnumpy() == 0) and np.all(model.head.bias.asnumpy() == 0)


def test_plain_weights_start_a_distilled_model_and_back(tmp_path, images):
    plain = random_timm_state(np.random.default_rng(5), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES)
    save_file(plain, str(tmp_path / "plain.safetensors"))
    model = tiny.tiny_model(CLASSES, distilled=True)
    report = load_pretrained(model, str(tmp_path / "plain.safetensors"))
    assert "copies of the class token's" in str(report)
    np.testing.assert_array_equal(model.dist_token.asnumpy(), plain["cls_token"])
    np.testing.assert_array_equal(model.head_dist.weight.asnumpy(), plain["head.weight"])
    started = dict(plain)
    started.update({"dist_token": plain["cls_token"], "head_dist.weight": plain["head.weight"],
                    "head_dist.bias": plain["head.bias"],
                    "pos_embed": np.concatenate([plain["pos_embed"][:, :1], plain["pos_embed"]], axis=1)})
    assert max_diff(run(model, images), timm_forward(started, images, HEADS)) <= TOLERANCE
    distilled = distilled_state(6)
    save_file(distilled, str(tmp_path / "distilled.safetensors"))
    student = tiny.tiny_model(CLASSES)
    report = load_pretrained(student, str(tmp_path / "distilled.safetensors"))
    assert "dropped the weights' distillation token" in str(report)
    reference = {k: v for k, v in distilled.items() if k not in ("dist_token", "head_dist.weight", "head_dist.bias")}
    reference["pos_embed"] = np.concatenate([distilled["pos_embed"][:, :1], distilled["pos_embed"][:, 2:]], axis=1)
    assert max_diff(run(student, images), timm_forward(reference, images, HEADS)) <= TOLERANCE


def test_converter_cli_keeps_the_distilled_model(tmp_path, images, capsys):
    state = distilled_state(7)
    save_file(state, str(tmp_path / "model.safetensors"))
    arch = ["--model", "vit_ti16", "--patch-size", "8", "--embed-dim", "32", "--depth", "2", "--num-heads", "2"]
    assert convert_main(["--src", str(tmp_path / "model.safetensors"), *arch, "--out", str(tmp_path / "d.ckpt")]) == 0
    assert "--set model.distilled=true" in capsys.readouterr().out
    written, _ = read_state(tmp_path / "d.ckpt")
    assert {"dist_token", "head_dist.weight"} <= set(written)
    model = tiny.tiny_model(CLASSES, distilled=True)
    load_pretrained(model, str(tmp_path / "d.ckpt"))
    assert max_diff(run(model, images), timm_forward(state, images, HEADS)) <= TOLERANCE


def test_table_lists_deit_distilled_weights_as_distilled_configs():
    names = [n for n in PRETRAINED if "deit_distilled" in n]
    assert {"vit_ti16.deit_distilled_in1k", "vit_s16.deit_distilled_in1k", "vit_b16.deit_distilled_in1k",
            "vit_b16_384.deit_distilled_in1k"} <= set(names)
    for name in names:
        entry = PRETRAINED[name]
        assert "_distilled_patch16_" in entry.url and entry.url.endswith(".fb_in1k/resolve/main/model.safetensors")
        cfg = config_from_dict(apply_overrides({}, entry.config_overrides()))
        assert cfg.model.distilled and cfg.data.crop_pct == (0.875 if entry.image_size == 224 else 1.0)
