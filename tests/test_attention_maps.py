"""Attention maps: the model's own attention probabilities (against a numpy ViT), attention rollout (against
a loop-by-loop numpy rollout), map sizes, a model forced to look at one patch, and infer.py --attention-maps."""
import importlib.util
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from numpy_vit import random_timm_state, timm_forward
from tiny import tiny_model
from tiny_run import write_tiny_run
from vit_ms.errors import run_cli
from vit_ms.inference.attention_maps import (attention_rollout, class_token_map, maps_for_batch, output_names,
                                             to_image_size)

ROOT = Path(__file__).resolve().parent.parent
DIM, DEPTH, HEADS, PATCH, GRID = 32, 3, 2, 8, 4  # 32 px images: 16 patches + the class token

pytestmark = pytest.mark.usefixtures("keep_mindspore_mode")  # maps run in PyNative


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


def model_with(state):
    model = tiny_model(num_classes=3, depth=DEPTH)
    ms.load_param_into_net(model, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in state.items()},
                           strict_load=True)
    model.set_train(False)
    return model


def numpy_rollout(probs):
    """Abnar & Zuidema's rollout, one image and one layer at a time, written without vectorising."""
    depth, (b, heads, n, _) = len(probs), probs[0].shape
    out = np.zeros((b, n, n))
    for i in range(b):
        joint = np.eye(n)
        for layer in range(depth):
            a = sum(probs[layer][i, h] for h in range(heads)) / heads + np.eye(n)
            a = np.stack([row / row.sum() for row in a])
            joint = a @ joint
        out[i] = joint
    return out


def test_probabilities_are_the_models_and_rollout_matches_numpy(pynative):
    state = random_timm_state(np.random.default_rng(0), DIM, DEPTH, HEADS, PATCH, GRID, 3)
    model = model_with(state)
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    probs = [p.asnumpy() for p in model.attention_probabilities(ms.Tensor(x))]
    reference = []
    logits = timm_forward(state, x, HEADS, attention=reference)
    assert len(probs) == DEPTH and probs[0].shape == (2, HEADS, 17, 17)
    for ours, theirs in zip(probs, reference, strict=True):  # the probabilities of the model's own forward pass
        np.testing.assert_allclose(ours, theirs, atol=2e-5)
    assert probs[0].std() > 0.01  # not uniform: the weights make the test meaningful
    np.testing.assert_allclose(model(ms.Tensor(x)).asnumpy(), logits, atol=1e-3)  # unchanged forward
    rollout = attention_rollout(probs)
    np.testing.assert_allclose(rollout, numpy_rollout(probs), atol=1e-6)
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0, atol=1e-9)


def test_maps_have_the_image_size(pynative):
    model = model_with(random_timm_state(np.random.default_rng(2), DIM, DEPTH, HEADS, PATCH, GRID, 3))
    x = np.random.default_rng(3).normal(size=(3, 3, 32, 32)).astype(np.float32)
    rollout, last, logits = maps_for_batch(model, x, PATCH)
    assert rollout.shape == last.shape == (3, 32, 32) and logits.shape == (3, 3)
    for maps in (rollout, last):  # scaled to [0, 1] per image (bilinear between patch centres)
        assert maps.min() >= 0.0 and maps.max() <= 1.0 and (maps.reshape(3, -1).max(axis=1) > 0.9).all()
    small = to_image_size(np.arange(16.0).reshape(4, 4), 32)
    assert small.shape == (32, 32) and small[0, 0] < small[16, 16] < small[31, 31]


def one_patch_state(target: int):
    """Weights under which every query of every head attends to token `target` and the blocks change nothing:
    only that token's position embedding is non-zero, the keys read its first feature, the queries are a
    constant bias along the same direction, attention output and MLP output are zeroed."""
    state = {k: np.zeros_like(v) for k, v in random_timm_state(np.random.default_rng(0), DIM, DEPTH, HEADS, PATCH,
                                                                GRID, 3).items()}
    state["pos_embed"][0, target, :2] = [1.0, -1.0]  # LayerNorm of it: +-sqrt(D/2) in features 0 and 1
    head_dim = DIM // HEADS
    for i in range(DEPTH):
        p = f"blocks.{i}."
        state[p + "norm1.weight"][:] = 1.0
        state[p + "norm2.weight"][:] = 1.0
        for h in range(HEADS):
            state[p + "attn.qkv.bias"][h * head_dim] = 10.0  # q: the same for every token
            state[p + "attn.qkv.weight"][DIM + h * head_dim, 0] = 10.0  # k: large only for the target token
    state["norm.weight"][:] = 1.0
    return state


@pytest.mark.parametrize("patch", [5, 14])
def test_attention_forced_onto_one_patch_peaks_there(pynative, patch):
    model = model_with(one_patch_state(1 + patch))  # token 0 is the class token
    x = np.random.default_rng(4).normal(size=(1, 3, 32, 32)).astype(np.float32)
    probs = [p.asnumpy() for p in model.attention_probabilities(ms.Tensor(x))]
    assert all(p[0, :, :, 1 + patch].min() > 0.99 for p in probs)  # as the weights say
    grid_map = class_token_map(attention_rollout(probs), (GRID, GRID))[0]
    assert np.unravel_index(grid_map.argmax(), grid_map.shape) == divmod(patch, GRID)
    rollout, last, _ = maps_for_batch(model, x, PATCH)
    row, col = divmod(patch, GRID)
    for maps in (rollout[0], last[0]):  # the peak lies inside that patch's 8x8 pixels
        y, x_ = np.unravel_index(maps.argmax(), maps.shape)
        assert row * PATCH <= y < (row + 1) * PATCH and col * PATCH <= x_ < (col + 1) * PATCH


def test_output_names_stay_apart():
    paths = [Path("val/1/0017.png"), Path("val/7/0017.png"), Path("a.jpg"), Path("b/0017.jpg")]
    assert output_names(paths) == ["0017.png", "0017_1.png", "a.png", "0017_2.png"]


def infer_main():
    spec = importlib.util.spec_from_file_location("infer", ROOT / "infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("amp", [[], ["--set", "amp.level=O1"]])
def test_infer_writes_one_picture_per_readable_image(tmp_path, capsys, monkeypatch, amp):
    monkeypatch.chdir(tmp_path)  # MindSpore's O1 rewrite writes its generated source under ./rewritten_network
    run = write_tiny_run(tmp_path)
    out = tmp_path / "maps"
    assert run_cli(infer_main(), ["--ckpt", str(run.ckpt_a), str(run.images), "--attention-maps", str(out), *amp]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and f"wrote 4 attention map(s) to {out}" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    with Image.open(out / "a.png") as image:
        assert image.format == "PNG" and image.size[0] > 2 * image.size[1]  # three panels side by side


def test_attention_maps_need_a_checkpoint(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "x.png")
    assert run_cli(infer_main(), ["--model", str(model), str(tmp_path / "images"), "--attention-maps",
                                  str(tmp_path / "maps")]) == 2
    err = capsys.readouterr().err
    assert "--attention-maps needs a checkpoint" in err and "--ckpt" in err and not (tmp_path / "maps").exists()


@pytest.mark.parametrize("where", ["an existing file", "under a file"])
def test_attention_maps_onto_a_file_stop_before_labelling(tmp_path, capsys, where):
    run = write_tiny_run(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    out = notes if where == "an existing file" else notes / "maps"
    assert run_cli(infer_main(), ["--ckpt", str(run.ckpt_a), str(run.images), "--attention-maps", str(out)]) == 2
    captured = capsys.readouterr()
    assert f"cannot write the attention maps to --attention-maps '{out}': '{notes}' is a file" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""  # nothing labelled first


def test_both_attention_cores_give_the_same_probabilities(pynative):
    from vit_ms.models.attention import DotProductAttention, FlashAttention

    qkv = ms.Tensor(np.random.default_rng(5).normal(size=(2, 5, 3 * 8)).astype(np.float32))  # (B, N, 3D)
    written_out = DotProductAttention(num_heads=2, head_dim=4).probabilities(qkv).asnumpy()  # (B, H, N, N)
    fused = FlashAttention(num_heads=2, head_dim=4).probabilities(qkv.astype(ms.float16)).asnumpy()
    q, k, _ = qkv.asnumpy().reshape(2, 5, 3, 2, 4).transpose(2, 0, 3, 1, 4)  # (B, H, N, Dh) each
    scores = q @ k.transpose(0, 1, 3, 2) / 2.0
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(written_out, expected, atol=1e-6)
    assert fused.dtype == np.float32
    np.testing.assert_allclose(fused, expected, atol=5e-3)  # float16 inputs
