"""vit_ms.convert: every source's weights give our ViT the source's own logits; resampling; the strict check; CLI.

Each test writes its source file itself (tiny ViTs: width 32, depth 2, 32 px, patch 8) and compares our
model's logits with an independent reference: mindcv's own forward for mindcv, tests/numpy_vit.py otherwise.
"""
import re
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from numpy_vit import (npz_forward, random_npz_state, random_timm_state, random_tutorial_state, timm_forward,
                       tutorial_forward)
from safetensors.numpy import save_file

from vit_ms.weights.fit import check_fit, infer_architecture, resample_pos_embed
from vit_ms.weights.sources import (OPTIMIZER_STATE_KEYS, SOURCE_FORMATS, convert_npz, convert_state, detect_format,
                                    read_state)
from vit_ms.weights.verify import EVIDENCE, check_layout, check_source_format
from vit_ms.convert import main as convert_main
from vit_ms.errors import CheckpointError, run_cli
import tiny
from vit_ms.weights.load import load_pretrained, model_param_shapes, read_weights

REPO = Path(__file__).resolve().parent.parent
DIM, DEPTH, HEADS, PATCH, GRID, CLASSES = 32, 2, 2, 8, 4, 10
TOLERANCE = 1e-4


def tiny_model(num_classes=CLASSES, image_size=32, **kw):
    return tiny.tiny_model(num_classes, image_size, **kw)


def logits(model, images: np.ndarray) -> np.ndarray:
    model.set_train(False)
    return model(ms.Tensor(images.astype(np.float32))).asnumpy()


def report_diff(name: str, ours: np.ndarray, ref: np.ndarray) -> float:
    diff = float(np.abs(ours.astype(np.float64) - ref).max())
    print(f"parity {name}: max abs diff {diff:.3e} (logits up to {np.abs(ref).max():.2f})")
    return diff


@pytest.fixture()
def images():
    return np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Parity, one source at a time.


def test_timm_safetensors_parity(tmp_path, images):
    state = random_timm_state(np.random.default_rng(0), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES)
    save_file(state, str(tmp_path / "model.safetensors"))
    model = tiny_model()
    report = load_pretrained(model, str(tmp_path / "model.safetensors"))
    assert report.source_format == "timm" and not report.mismatched_overrides
    assert report_diff("timm", logits(model, images), timm_forward(state, images, HEADS)) <= TOLERANCE


@pytest.mark.parametrize("prefix", ["", "opt/target/"])
def test_npz_parity_with_pre_logits(tmp_path, images, prefix):
    params = random_npz_state(np.random.default_rng(2), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES, representation=16,
                              prefix=prefix)
    np.savez(tmp_path / "vit.npz", **params, **({"opt/state/step": np.zeros(1)} if prefix else {}))
    model = tiny_model(representation_size=16, gelu="tanh")
    report = load_pretrained(model, str(tmp_path / "vit.npz"))
    assert report.source_format == "npz" and report.model_overrides == {"gelu": "tanh"}
    assert not report.mismatched_overrides
    ref = npz_forward({k[len(prefix):]: v for k, v in params.items()}, images.transpose(0, 2, 3, 1))  # NHWC
    assert report_diff(f"npz{' (opt/target/)' if prefix else ''}", logits(model, images), ref) <= TOLERANCE


def test_mindcv_parity_against_mindcv_forward(tmp_path, images):
    from mindcv.models.vit import VisionTransformer as MindcvViT

    source = MindcvViT(image_size=32, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                       num_classes=CLASSES)
    rng = np.random.default_rng(3)
    for p in source.get_parameters():  # make norms and biases non-trivial
        mean = 1.0 if p.name.endswith("gamma") else 0.0
        p.set_data(ms.Tensor((mean + 0.2 * rng.standard_normal(p.shape)).astype(np.float32)))
    ms.save_checkpoint(source, str(tmp_path / "mindcv_vit.ckpt"))
    source.set_train(False)
    ref = source(ms.Tensor(images)).asnumpy().astype(np.float64)

    model = tiny_model(gelu="tanh", norm_eps=1e-7)  # mindspore nn.GELU() / nn.LayerNorm defaults
    report = load_pretrained(model, str(tmp_path / "mindcv_vit.ckpt"))
    assert report.source_format == "mindcv" and not report.mismatched_overrides
    assert report_diff("mindcv", logits(model, images), ref) <= TOLERANCE

    default = tiny_model()  # erf GELU, eps 1e-6: loads, but the report says what to set
    report = load_pretrained(default, str(tmp_path / "mindcv_vit.ckpt"))
    assert report.mismatched_overrides == {"gelu": ("erf", "tanh"), "norm_eps": (1e-6, 1e-7)}
    assert "model.gelu=tanh" in str(report)
    wrong = report_diff("mindcv into an erf/1e-6 model (expected to differ)", logits(default, images), ref)
    assert wrong > TOLERANCE


@pytest.mark.parametrize("cls_name", ["cls", "cls_token"])
def test_tutorial_parity(tmp_path, images, cls_name):
    state = random_tutorial_state(np.random.default_rng(4), DIM, DEPTH, PATCH, GRID, CLASSES, cls_name=cls_name)
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(tmp_path / "vit.ckpt"))
    model = tiny_model(gelu="tanh", norm_eps=1e-7)
    report = load_pretrained(model, str(tmp_path / "vit.ckpt"))
    assert report.source_format == "tutorial" and report.model_overrides == {"gelu": "tanh", "norm_eps": 1e-7}
    ref = tutorial_forward(state, images, HEADS)
    assert report_diff(f"tutorial ({cls_name})", logits(model, images), ref) <= TOLERANCE


def test_tutorial_mindvision_prefixes():
    state = random_tutorial_state(np.random.default_rng(5), DIM, 1, PATCH, GRID, CLASSES)
    renamed = {("backbone." + k if not k.startswith("dense.") else "head." + k): v for k, v in state.items()}
    ours = convert_state("tutorial", renamed)
    check_fit(model_param_shapes(tiny_model(depth=1)), ours)


def test_detect_format():
    rng = np.random.default_rng(6)
    timm = random_timm_state(rng, DIM, 1, HEADS, PATCH, GRID, CLASSES)
    assert detect_format(timm, ".safetensors") == "timm"
    assert detect_format(timm, ".ckpt") == "vit_ms"
    assert detect_format(random_npz_state(rng, DIM, 1, HEADS, PATCH, GRID, CLASSES)) == "npz"
    assert detect_format(random_tutorial_state(rng, DIM, 1, PATCH, GRID, CLASSES)) == "tutorial"
    mindcv = {k.replace("norm1.weight", "norm1.gamma"): v for k, v in timm.items()}
    assert detect_format(mindcv) == "mindcv"
    with pytest.raises(CheckpointError, match="--from"):
        detect_format({"encoder.weight": np.zeros(2)})


def test_infer_architecture():
    state = convert_npz(random_npz_state(np.random.default_rng(7), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES,
                                         representation=16))
    arch = infer_architecture(state)
    assert arch == dict(patch_size=PATCH, embed_dim=DIM, depth=DEPTH, in_channels=3, mlp_ratio=4.0, image_size=32,
                        num_classes=CLASSES, representation_size=16, distilled=False, fc_norm=False, variant=None)
    b16 = {"patch_embed.proj.weight": np.zeros((768, 3, 16, 16)), "pos_embed": np.zeros((1, 197, 768)),
           **{f"blocks.{i}.mlp.fc1.weight": np.zeros((3072, 768)) for i in range(12)}}
    assert infer_architecture(b16)["variant"] == "vit_b16" and infer_architecture(b16)["image_size"] == 224


# ----------------------------------------------------------------------------------------------------------
# Position-embedding resampling.


def test_resample_same_grid_is_exact_and_class_token_is_untouched():
    pos = np.random.default_rng(8).standard_normal((1, 17, 8)).astype(np.float32)
    assert np.array_equal(resample_pos_embed(pos, (4, 4)), pos)
    up = resample_pos_embed(pos, (6, 6))
    assert up.shape == (1, 37, 8) and up.dtype == pos.dtype
    assert np.array_equal(up[:, :1], pos[:, :1])
    wide = resample_pos_embed(pos, (3, 5))
    assert wide.shape == (1, 16, 8) and np.array_equal(wide[:, :1], pos[:, :1])


def test_resample_matches_torch_bicubic():
    # torch.nn.functional.interpolate(tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4), mode="bicubic",
    # align_corners=False): what timm's resample_abs_pos_embed computes (without antialias).
    torch_out = np.array([[0.68359375, 1.015625, 1.5625, 1.89453125],
                          [1.34765625, 1.6796875, 2.2265625, 2.55859375],
                          [2.44140625, 2.7734375, 3.3203125, 3.65234375],
                          [3.10546875, 3.4375, 3.984375, 4.31640625]])
    pos = np.concatenate([np.full((1, 1, 1), 9.0), np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)], axis=1)
    out = resample_pos_embed(pos, (4, 4))
    assert out[0, 0, 0] == 9.0
    np.testing.assert_allclose(out[0, 1:, 0].reshape(4, 4), torch_out, atol=1e-7)
    constant = resample_pos_embed(np.ones((1, 10, 3)), (5, 7))  # weights sum to one everywhere
    np.testing.assert_allclose(constant, 1.0, atol=1e-12)


def test_weights_load_at_a_new_image_size(tmp_path, images):
    state = random_timm_state(np.random.default_rng(9), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES)
    save_file(state, str(tmp_path / "model.safetensors"))
    model = tiny_model(image_size=48)  # 6x6 grid instead of 4x4
    report = load_pretrained(model, str(tmp_path / "model.safetensors"))
    assert report.pos_embed_resampled and "4x4 to a 6x6" in str(report)
    pos = model.pos_embed.asnumpy()
    assert pos.shape == (1, 37, DIM) and np.array_equal(pos[:, :1], state["pos_embed"][:, :1])
    big = np.random.default_rng(10).standard_normal((2, 3, 48, 48)).astype(np.float32)
    out = logits(model, big)
    assert out.shape == (2, CLASSES) and np.isfinite(out).all()


# ----------------------------------------------------------------------------------------------------------
# The strict check.


def test_check_fit_names_keys_and_fixes():
    shapes = model_param_shapes(tiny_model())
    state = random_timm_state(np.random.default_rng(11), DIM, 1, HEADS, PATCH, 6, 7)  # depth 1, 48 px, 7 classes
    state["fc_extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as err:
        check_fit(shapes, state)
    msg = str(err.value)
    assert "missing from the weights (12): blocks.1." in msg
    assert "unexpected in the weights (1): fc_extra.weight" in msg
    assert "head.weight: weights (7, 32) vs model (10, 32)" in msg
    assert "pos_embed: weights (1, 37, 32) vs model (1, 17, 32)" in msg
    assert "depth 1" in msg and "pick that model.name" in msg
    assert "model.num_classes=7" in msg and "--num-classes" in msg
    assert "set model.image_size=48 (this run has 32)" in msg and "resample" in msg
    assert "python -m vit_ms.convert" in msg


def test_position_grid_hint_names_the_patch_size_when_the_image_size_already_matches():
    shapes = model_param_shapes(tiny_model())  # patch 8 at 32 px: a 4x4 grid
    state = {k: v.asnumpy() for k, v in tiny_model(patch_size=16).parameters_dict().items()}  # 16 px: 2x2
    with pytest.raises(CheckpointError) as err:
        check_fit(shapes, state)
    assert "16-pixel patches (2x2): set model.patch_size=16" in str(err.value)
    assert "model.image_size" not in str(err.value)  # 32 is what the run already has


def test_check_fit_pre_logits_hint_and_optimizer_state_ignored():
    shapes = model_param_shapes(tiny_model())
    state = random_timm_state(np.random.default_rng(12), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES, representation=16)
    with pytest.raises(CheckpointError, match="model.representation_size=16"):
        check_fit(shapes, state)
    del state["pre_logits.fc.weight"], state["pre_logits.fc.bias"]
    with pytest.raises(CheckpointError, match="the head reads 16 features"):
        check_fit(shapes, state)
    state["head.weight"] = np.zeros((CLASSES, DIM), np.float32)
    state.update({f"adam_m.{k}": v for k, v in list(state.items())})
    state.update({key: np.zeros(1, np.float32) for key in OPTIMIZER_STATE_KEYS})
    check_fit(shapes, state)  # optimizer state is not "unexpected"


def test_timm_avg_pool_fc_norm_parity_and_hints(tmp_path, images):
    """timm global_pool='avg' (MAE/BEiT-style): no final norm, LayerNorm of the mean patch token, then the head."""
    state = random_timm_state(np.random.default_rng(14), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES, fc_norm=True)
    assert "norm.weight" not in state and infer_architecture(state)["fc_norm"]
    save_file(state, str(tmp_path / "mae.safetensors"))
    with pytest.raises(CheckpointError, match="set model.global_pool=avg and model.fc_norm=true"):
        load_pretrained(tiny_model(), str(tmp_path / "mae.safetensors"))
    model = tiny_model(global_pool="avg", fc_norm=True)
    assert load_pretrained(model, str(tmp_path / "mae.safetensors")).source_format == "timm"
    assert report_diff("timm fc_norm", logits(model, images), timm_forward(state, images, HEADS)) <= TOLERANCE
    assert "fc_norm.weight" in model.no_weight_decay() and model.norm is None


def test_convert_cli_reads_fc_norm_from_the_weights(tmp_path, capsys):
    state = random_timm_state(np.random.default_rng(15), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES, fc_norm=True)
    save_file(state, str(tmp_path / "mae.safetensors"))
    out = tmp_path / "mae.ckpt"
    assert convert_main(["--src", str(tmp_path / "mae.safetensors"), "--out", str(out), "--model", "vit_ti16",
                         "--embed-dim", str(DIM), "--depth", str(DEPTH), "--num-heads", str(HEADS),
                         "--patch-size", str(PATCH)]) == 0
    printed = capsys.readouterr().out
    assert "--set model.global_pool=avg" in printed and "--set model.fc_norm=true" in printed


def test_unsupported_sources_say_why(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_state(tmp_path / "model.pth")


# ----------------------------------------------------------------------------------------------------------
# The source format is checked against the file, not trusted.


def source_files(tmp_path: Path) -> dict:
    """One tiny file per format: {format: path}."""
    rng = np.random.default_rng(16)
    timm = random_timm_state(rng, DIM, 1, HEADS, PATCH, GRID, CLASSES)

    def ckpt(state, name):
        ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(tmp_path / name))
        return tmp_path / name

    save_file(timm, str(tmp_path / "model.safetensors"))
    np.savez(tmp_path / "vit.npz", **random_npz_state(rng, DIM, 1, HEADS, PATCH, GRID, CLASSES))
    mindcv = {re.sub(r"norm(\d?)\.weight$", r"norm\1.gamma", re.sub(r"norm(\d?)\.bias$", r"norm\1.beta", k)): v
              for k, v in timm.items()}
    return {"timm": tmp_path / "model.safetensors", "npz": tmp_path / "vit.npz",
            "mindcv": ckpt(mindcv, "mindcv.ckpt"), "vit_ms": ckpt(timm, "ours.ckpt"),
            "tutorial": ckpt(random_tutorial_state(rng, DIM, 1, PATCH, GRID, CLASSES), "tutorial.ckpt")}


def test_a_given_format_must_match_the_file(tmp_path):
    files = source_files(tmp_path)
    assert set(files) == set(SOURCE_FORMATS) == set(EVIDENCE)
    for actual, path in files.items():
        assert read_weights(str(path), source_format=actual).source_format == actual
        assert read_weights(str(path)).source_format == actual  # auto agrees
        for claimed in set(SOURCE_FORMATS) - {actual}:
            with pytest.raises(CheckpointError) as err:
                read_weights(str(path), source_format=claimed)
            message = str(err.value)
            assert f"'{path}' was given as {claimed} weights but looks like {actual} weights" in message, message
            assert f"use --from {actual} (or --from auto)" in message


def test_mindcv_layernorm_names_are_the_evidence():
    timm_keys = ["patch_embed.proj.weight", "blocks.0.norm1.weight", "blocks.0.norm1.bias", "norm.weight"]
    check_source_format(timm_keys, ".ckpt", "vit_ms", Path("x.ckpt"))
    with pytest.raises(CheckpointError, match="looks like vit_ms weights: it has our names with LayerNorm "
                                              "weight/bias in a MindSpore .ckpt.*e.g. 'blocks.0.norm1.weight'"):
        check_source_format(timm_keys, ".ckpt", "mindcv", Path("x.ckpt"))
    with pytest.raises(CheckpointError, match="does not look like mindcv weights.*first keys: encoder.weight"):
        check_source_format(["encoder.weight"], ".ckpt", "mindcv", Path("x.ckpt"))


def test_a_transposed_layout_is_refused_by_key(tmp_path):
    state = random_timm_state(np.random.default_rng(17), DIM, 2, HEADS, PATCH, GRID, CLASSES)
    check_layout(state, "timm", Path("m.safetensors"))
    flax_like = {**state, "blocks.1.attn.qkv.weight": state["blocks.1.attn.qkv.weight"].T}  # (D, 3D)
    with pytest.raises(CheckpointError, match=r"'blocks.1.attn.qkv.weight' has shape \(32, 96\), but a ViT of "
                                              r"width 32 \(from the patch embedding\) stores it as \(96, 32\)"):
        check_layout(flax_like, "timm", Path("m.safetensors"))
    narrow = {**state, "blocks.0.mlp.fc2.weight": state["blocks.0.mlp.fc2.weight"][:, :64]}  # (D, H) with H=128
    with pytest.raises(CheckpointError, match=r"'blocks.0.mlp.fc2.weight' has shape \(32, 64\).*\(32, 128\)"):
        check_layout(narrow, "timm", Path("m.safetensors"))
    save_file(flax_like, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not in the timm layout"):
        read_weights(str(tmp_path / "model.safetensors"))


def test_cli_refuses_timm_weights_given_as_mindcv(tmp_path):
    save_file(random_timm_state(np.random.default_rng(18), DIM, 1, HEADS, PATCH, GRID, CLASSES),
              str(tmp_path / "model.safetensors"))
    args = ["--from", "mindcv", "--src", str(tmp_path / "model.safetensors"), "--model", "vit_ti16",
            "--out", str(tmp_path / "x.ckpt")]
    out = subprocess.run([sys.executable, "-m", "vit_ms.convert", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "was given as mindcv weights but looks like timm weights" in out.stderr
    assert "model.gelu=tanh" not in out.stdout + out.stderr and not (tmp_path / "x.ckpt").exists()


# ----------------------------------------------------------------------------------------------------------
# The command line.


def test_cli_end_to_end(tmp_path, images):
    params = random_npz_state(np.random.default_rng(14), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES)
    np.savez(tmp_path / "vit.npz", **params)
    arch = ["--model", "vit_ti16", "--patch-size", "8", "--embed-dim", "32", "--depth", "2", "--num-heads", "2"]
    out = subprocess.run([sys.executable, "-m", "vit_ms.convert", "--from", "npz", "--src", str(tmp_path / "vit.npz"),
                          *arch, "--out", str(tmp_path / "same.ckpt")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and "model.gelu=tanh" in out.stdout and "model.num_classes=10" in out.stdout

    model = tiny_model(gelu="tanh")
    report = load_pretrained(model, str(tmp_path / "same.ckpt"))
    assert report.source_format == "vit_ms" and report.model_overrides == {"gelu": "tanh"}
    ref = npz_forward(params, images.transpose(0, 2, 3, 1))
    assert report_diff("npz via CLI .ckpt", logits(model, images), ref) <= TOLERANCE

    # another head: left out of the file, initialised at load
    assert convert_main(["--src", str(tmp_path / "vit.npz"), *arch, "--num-classes", "5",
                         "--out", str(tmp_path / "five.ckpt")]) == 0
    written, recorded = read_state(tmp_path / "five.ckpt")
    assert "head.weight" not in written and recorded == {"gelu": "tanh"}
    five = tiny_model(num_classes=5, gelu="tanh")
    report = load_pretrained(five, str(tmp_path / "five.ckpt"))
    assert report.head_reinitialised and not report.mismatched_overrides
    np.testing.assert_array_equal(five.blocks[1].mlp.fc2.weight.asnumpy(),
                                  params["Transformer/encoderblock_1/MlpBlock_3/Dense_1/kernel"].T)


def test_cli_reports_a_wrong_model(tmp_path, capsys):
    np.savez(tmp_path / "vit.npz", **random_npz_state(np.random.default_rng(15), DIM, DEPTH, HEADS, PATCH, GRID, 3))
    code = run_cli(convert_main, ["--src", str(tmp_path / "vit.npz"), "--model", "vit_ti16", "--patch-size", "8",
                                  "--embed-dim", "32", "--depth", "1", "--num-heads", "2",
                                  "--out", str(tmp_path / "x.ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and "unexpected in the weights" in err and "depth 2" in err
    assert not (tmp_path / "x.ckpt").exists()


def test_mae_encoder_fine_tunes_with_a_fresh_fc_norm(tmp_path):
    """An MAE pre-trained encoder (final norm, no head) into an fc_norm model: the norm is dropped, fc_norm and the
    head start fresh, everything else loads."""
    state = random_timm_state(np.random.default_rng(16), DIM, DEPTH, HEADS, PATCH, GRID, CLASSES)
    del state["head.weight"], state["head.bias"]
    save_file(state, str(tmp_path / "mae_pretrain.safetensors"))
    model = tiny_model(global_pool="avg", fc_norm=True)
    report = load_pretrained(model, str(tmp_path / "mae_pretrain.safetensors"))
    assert report.head_reinitialised and any("fc_norm" in note and "MAE" in note for note in report.notes)
    params = {p.name: p.asnumpy() for p in model.get_parameters()}
    np.testing.assert_array_equal(params["fc_norm.weight"], np.ones(DIM))
    np.testing.assert_array_equal(params["fc_norm.bias"], np.zeros(DIM))
    np.testing.assert_array_equal(params["blocks.1.mlp.fc2.weight"], state["blocks.1.mlp.fc2.weight"])
