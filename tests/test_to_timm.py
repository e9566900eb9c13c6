"""Weights out (python -m vit_ms.convert --to timm): the folder's files, an exact round trip through our timm reader,
logits of the written weights against the numpy reference, raw / EMA choice, the distilled model, refusals."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from numpy_vit import timm_forward
from safetensors.numpy import load_file

import tiny
from vit_ms.config import config_to_dict
from vit_ms.config_loader import load_config
from vit_ms.convert import main as convert_main
from vit_ms.errors import UserError
from vit_ms.convert import export_timm
from vit_ms.train.checkpoint import TrainState, save_checkpoint
from vit_ms.weights.checkpoint import CheckpointMeta
from vit_ms.weights.load import load_pretrained, read_weights

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["cat", "dog", "bird"]


def write_checkpoint(path: Path, distilled: bool = False, ema: bool = False, seed: int = 0, heads=None, **model):
    """A checkpoint as train.py writes it: weights, config, class names, the trained `heads` (None: those of the
    config, i.e. the class head alone without a teacher) and, with `ema`, averaged weights."""
    overrides = tiny.tiny_overrides(num_classes=3, distilled=str(distilled).lower(), **model)
    cfg = load_config(None, overrides + ["data.interpolation=bilinear", "data.crop_pct=0.9"])
    ms.set_seed(seed)
    net = tiny.tiny_model(3, distilled=distilled, **model)
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():  # not the initialisation: every tensor distinct, biases and norms too
        p.set_data(ms.Tensor((0.2 * rng.standard_normal(p.shape) + (p.name.endswith("norm1.weight"))).astype(
            np.float32)))
    save_checkpoint(net, path, TrainState(best_weights="ema" if ema else "raw"),
                    CheckpointMeta(config_to_dict(cfg), None, CLASSES, heads))
    if ema:  # add ema.<name> entries (vit_ms.train.ema) holding other weights
        params = ms.load_checkpoint(str(path))
        entries = [{"name": k, "data": v} for k, v in params.items() if not isinstance(v, str)]
        entries += [{"name": "ema." + p.name, "data": ms.Tensor(p.asnumpy() * 0.5)} for p in net.get_parameters()]
        entries.append({"name": "ema.num_updates", "data": ms.Tensor(np.array([4], np.int32))})
        ms.save_checkpoint(entries, str(path), append_dict={k: v for k, v in params.items() if isinstance(v, str)})
    return net, cfg


def our_logits(net, images):
    net.set_train(False)
    return net(ms.Tensor(images)).asnumpy()


@pytest.fixture()
def images():
    return np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("distilled", [False, True])
def test_round_trip_is_exact_and_the_files_are_what_timm_reads(tmp_path, images, distilled):
    net, _ = write_checkpoint(tmp_path / "best.ckpt", distilled=distilled,
                              heads=["head", "head_dist"] if distilled else None)  # a teacher taught head_dist
    assert convert_main(["--to", "timm", str(tmp_path / "best.ckpt"), str(tmp_path / "hf")]) == 0
    written = load_file(str(tmp_path / "hf" / "model.safetensors"))
    ours = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert set(written) == set(ours) and all(np.array_equal(written[k], ours[k]) for k in ours)
    assert ("dist_token" in written and "head_dist.weight" in written) == distilled
    back = read_weights(str(tmp_path / "hf" / "model.safetensors"))  # our timm reader
    assert back.source_format == "timm" and all(np.array_equal(back.state[k], ours[k]) for k in ours)
    print(f"timm layout ({'distilled' if distilled else 'plain'}): numpy reference vs ours "
          f"{np.abs(timm_forward(written, images, heads=2) - our_logits(net, images)).max():.2e}")
    assert np.abs(timm_forward(written, images, heads=2) - our_logits(net, images)).max() <= 1e-4

    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    arch = "deit_tiny_distilled_patch16_224" if distilled else "vit_tiny_patch16_224"
    assert config["architecture"] == arch and config["num_classes"] == 3 and config["num_features"] == 32
    assert config["model_args"] == dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
                                        qkv_bias=True, global_pool="token", fc_norm=False, class_token=True)
    pc = config["pretrained_cfg"]
    assert pc["input_size"] == [3, 32, 32] and pc["interpolation"] == "bilinear" and pc["crop_pct"] == 0.9
    assert pc["mean"] == [0.485, 0.456, 0.406] and pc["std"] == [0.229, 0.224, 0.225]
    assert pc["classifier"] == (["head", "head_dist"] if distilled else "head") and pc["num_classes"] == 3
    assert config["label_names"] == CLASSES and pc["first_conv"] == "patch_embed.proj"

    model = tiny.tiny_model(3, distilled=distilled)  # the folder itself loads as model.pretrained
    report = load_pretrained(model, str(tmp_path / "hf"))
    assert report.loaded == len(ours) and np.array_equal(our_logits(model, images), our_logits(net, images))


def test_an_untaught_head_dist_is_written_as_the_class_head(tmp_path, images, capsys):
    net, _ = write_checkpoint(tmp_path / "best.ckpt", distilled=True)  # no teacher: head_dist never trained
    assert convert_main(["--to", "timm", str(tmp_path / "best.ckpt"), str(tmp_path / "hf")]) == 0
    assert "head_dist was trained by no teacher" in capsys.readouterr().err
    written = load_file(str(tmp_path / "hf" / "model.safetensors"))
    ours = {p.name: p.asnumpy() for p in net.get_parameters()}
    for part in ("weight", "bias"):  # timm's (head(cls) + head_dist(dist)) / 2 is then head(cls)
        assert np.array_equal(written[f"head.{part}"], 2 * ours[f"head.{part}"])
        assert not written[f"head_dist.{part}"].any() and ours[f"head_dist.{part}"].any()
    assert all(np.array_equal(written[k], ours[k]) for k in ours if not k.startswith(("head.", "head_dist.")))
    net.average_heads = False  # as vit_ms predicts with this checkpoint: the class head alone
    assert np.abs(timm_forward(written, images, heads=2) - our_logits(net, images)).max() <= 1e-4
    model = tiny.tiny_model(3, distilled=True)  # read back, the folder averages its two heads to the same logits
    load_pretrained(model, str(tmp_path / "hf"))
    assert np.abs(our_logits(model, images) - our_logits(net, images)).max() <= 1e-5


def test_raw_or_ema_weights_by_choice(tmp_path):
    net, _ = write_checkpoint(tmp_path / "last.ckpt", ema=True)
    raw = {p.name: p.asnumpy() for p in net.get_parameters()}
    export_timm(str(tmp_path / "last.ckpt"), tmp_path / "best")  # the checkpoint records EMA as its best
    export_timm(str(tmp_path / "last.ckpt"), tmp_path / "raw", weights="raw")
    export_timm(str(tmp_path / "last.ckpt"), tmp_path / "ema", weights="ema")
    for folder, scale in (("best", 0.5), ("raw", 1.0), ("ema", 0.5)):
        got = load_file(str(tmp_path / folder / "model.safetensors"))
        assert all(np.array_equal(got[k], raw[k] * np.float32(scale)) for k in raw), folder


@pytest.mark.parametrize("full", ["model.safetensors", "config.json"])
def test_a_full_disk_leaves_the_folder_as_it_was_and_no_temp_file(tmp_path, monkeypatch, full):
    write_checkpoint(tmp_path / "a.ckpt")
    export_timm(str(tmp_path / "a.ckpt"), tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    write_checkpoint(tmp_path / "b.ckpt", seed=1)
    fsync = os.fsync

    def no_space(fd):  # the kernel reports a full disk when the temp file of `full` is synced
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f".{full}.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(UserError, match=r"could not write .*out.*No space left on device; choose a writable"):
        export_timm(str(tmp_path / "b.ckpt"), tmp_path / "out", force=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert set(after) == set(before) == {"model.safetensors", "config.json"}  # no temp file beside them
    assert after["model.safetensors"] == before["model.safetensors"] or full == "config.json"  # else new, whole
    assert after["config.json"] == before["config.json"]


def test_refusals_name_the_fix(tmp_path):
    write_checkpoint(tmp_path / "a.ckpt")
    export_timm(str(tmp_path / "a.ckpt"), tmp_path / "out")
    with pytest.raises(UserError, match="already holds model.safetensors, config.json.*--force"):
        export_timm(str(tmp_path / "a.ckpt"), tmp_path / "out")
    export_timm(str(tmp_path / "a.ckpt"), tmp_path / "out", force=True)
    write_checkpoint(tmp_path / "eps.ckpt", norm_eps=1e-7)
    with pytest.raises(UserError, match="model.norm_eps=1e-07: timm's ViT uses LayerNorm eps 1e-6"):
        export_timm(str(tmp_path / "eps.ckpt"), tmp_path / "eps")
    write_checkpoint(tmp_path / "pre.ckpt", representation_size=16)
    with pytest.raises(UserError, match="no pre-logits layer"):
        export_timm(str(tmp_path / "pre.ckpt"), tmp_path / "pre")
    assert not (tmp_path / "eps" / "model.safetensors").exists()
    with pytest.raises(UserError, match="holds no EMA weights"):
        export_timm(str(tmp_path / "a.ckpt"), tmp_path / "x", weights="ema")


def test_cli_in_a_process_prints_the_timm_call(tmp_path):
    write_checkpoint(tmp_path / "a.ckpt", gelu="tanh")
    proc = subprocess.run([sys.executable, "-m", "vit_ms.convert", "--to", "timm", str(tmp_path / "a.ckpt"),
                           str(tmp_path / "hf"), "--weights", "raw"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "timm.create_model('vit_tiny_patch16_224', pretrained=True, num_classes=3" in proc.stdout
    assert "act_layer='gelu_tanh'" in proc.stdout and "model.safetensors', num_classes=3))" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "vit_ms.convert", "--to", "timm", str(tmp_path / "missing.ckpt"),
                          str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_help_shows_weights_in_and_out(capsys):
    """`python -m vit_ms.convert -h` is one page for both directions; `--to timm -h` is the weights-out page."""
    with pytest.raises(SystemExit) as done:
        convert_main(["-h"])
    page = capsys.readouterr().out
    assert done.value.code == 0
    assert "--src SRC" in page and "--model MODEL" in page  # weights in
    assert "weights out (--to timm CKPT OUT" in page and "--to {timm}" in page and "--weights {raw,ema}" in page
    with pytest.raises(SystemExit):
        convert_main(["--to", "timm", "-h"])
    out_page = capsys.readouterr().out
    assert "ckpt" in out_page and "--src" not in out_page
