"""Inference: image discovery, class names, batching and padding, top-k, and infer.py end to end."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from tiny_run import CLASSES, reference_logits, write_tiny_run
from vit_ms.config import DataConfig
from vit_ms.errors import DataError, UserError, run_cli
from vit_ms.inference.to_mindir_onnx import export
from vit_ms.loader.exported import config_for_export
from vit_ms.inference.predict import Predictor, class_names_for, collect_images, softmax, top_k

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_tiny_run(tmp_path_factory.mktemp("predict"))


pytestmark = pytest.mark.usefixtures("keep_mindspore_mode")  # exports switch to graph mode


def infer_main():
    spec = importlib.util.spec_from_file_location("infer", ROOT / "infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def infer_subprocess(*args):
    return subprocess.run([sys.executable, str(ROOT / "infer.py"), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "GLOG_v": "3"})


def json_lines(stdout: str) -> dict:
    return {Path(r["path"]).name: r for r in map(json.loads, stdout.splitlines())}


# ----------------------------------------------------------------------------------------------------------
# Pieces


def test_collect_images_walks_folders_and_keeps_named_files(run, tmp_path):
    files, notes = collect_images([str(run.images), str(run.text_file), str(run.good[0])])
    names = [f.name for f in files]
    assert names == ["a.png", "b.jpg", "c.png", "e_corrupt.jpg", "d.jpg", "notes.txt"]  # sorted walk, then files
    assert notes == [f"{run.images}: left out 1 file(s) without an image extension"]
    (tmp_path / "empty").mkdir()
    assert collect_images([str(tmp_path / "empty")]) == ([], [f"{tmp_path / 'empty'}: no image files"])
    with pytest.raises(DataError, match="path not found: 'nope.jpg'"):
        collect_images([str(run.good[0]), "nope.jpg"])


def test_class_names_precedence_and_checks(run, tmp_path):
    names_file = tmp_path / "names.txt"
    names_file.write_text("x\ny\n\nz\n")
    assert class_names_for(3, str(names_file), ["s1", "s2", "s3"]) == (["x", "y", "z"], None)
    assert class_names_for(3, None, ["s1", "s2", "s3"]) == (["s1", "s2", "s3"], None)
    names, note = class_names_for(3, None, None, "'x.ckpt'")
    assert names == ["0", "1", "2"] and "showing class indices" in note and "'x.ckpt'" in note
    with pytest.raises(UserError, match="lists 3 class names but the model has 4 classes"):
        class_names_for(4, str(names_file))
    with pytest.raises(UserError, match="cannot read class names"):
        class_names_for(3, str(tmp_path / "missing.txt"))


def test_softmax_and_top_k():
    probs = softmax(np.array([[1000.0, 1001.0, 999.0]], np.float32))[0]  # large logits stay finite
    assert np.isclose(probs.sum(), 1.0) and probs.argmax() == 1
    top = top_k(probs, 5, ["a", "b", "c"])  # k above the class count gives every class
    assert [t["class"] for t in top] == ["b", "a", "c"] and [t["index"] for t in top] == [1, 0, 2]
    assert top[0]["prob"] == round(float(probs[1]), 6)


def fake_predictor(calls, **kwargs) -> Predictor:
    """A Predictor whose network returns each image's mean pixel as logit 0 and records batch shapes."""
    def run(x):
        calls.append(x.shape[0])
        return np.stack([x.mean(axis=(1, 2, 3)), np.zeros(len(x))], axis=1)

    return Predictor(run, DataConfig(crop_pct=1.0), image_size=32, num_classes=2, **kwargs)


def test_fixed_batch_pads_the_last_batch_and_drops_the_padding(run):
    calls = []
    predictor = fake_predictor(calls, fixed_batch=3, pad=True)
    skipped = []
    paths = run.good + [run.corrupt, run.text_file]
    results = list(predictor.predict(paths, None, lambda p, e: skipped.append(p)))
    assert [p for p, _ in results] == run.good and calls == [3, 3]  # 4 images -> 3 + (1 + 2 padding)
    assert skipped == [run.corrupt, run.text_file]
    assert all(np.isclose(probs.sum(), 1.0) for _, probs in results)
    with pytest.raises(UserError, match="takes batches of exactly 3"):
        list(predictor.predict(paths, 2))


def test_any_batch_export_and_pynative_do_not_pad(run):
    calls = []
    list(fake_predictor(calls, pad=False).predict(run.good, 3))
    assert calls == [3, 1]
    calls.clear()
    list(fake_predictor(calls, pad=True).predict(run.good[:2], 16))  # graph mode: one shape, capped at the count
    assert calls == [2]


def test_on_bad_image_error_stops_at_the_first_bad_file(run):
    predictor = fake_predictor([])
    predictor.data.on_bad_image = "error"
    with pytest.raises(DataError, match="e_corrupt.jpg.*or set data.on_bad_image=skip"):
        list(predictor.predict([run.corrupt] + run.good, None))


def test_skipped_files_get_the_reason_without_advice_to_skip_them(run, labelled_a):
    reasons = dict(line.split(": ", 1) for line in labelled_a.stderr.splitlines() if line.startswith("skipped "))
    assert reasons[f"skipped {run.corrupt}"].startswith("cannot be read (OSError: Truncated")
    assert reasons[f"skipped {run.text_file}"].startswith("not a readable image")
    assert "on_bad_image" not in labelled_a.stderr  # infer already skips: telling the user to skip misleads


def test_export_config_comes_from_the_sidecar_and_must_agree(run, tmp_path):
    path, _ = export(str(run.ckpt_a), "onnx", batch=2, out=str(tmp_path / "m.onnx"), check=False)
    cfg, sidecar = config_for_export(str(path))
    assert (cfg.model.name, cfg.model.image_size, cfg.model.num_classes) == ("vit_ti16", 32, 3)
    assert (cfg.data.interpolation, cfg.data.mean) == ("bilinear", run.config.data.mean)
    cfg, _ = config_for_export(str(path), None, ["data.crop_pct=0.5"])  # preprocessing may be overridden
    assert cfg.data.crop_pct == 0.5
    with pytest.raises(UserError, match=r"model.image_size=64 \(export: 32\)"):
        config_for_export(str(path), None, ["model.image_size=64"])
    with pytest.raises(UserError, match="model.name='vit_b16'"):
        config_for_export(str(path), "vit_b16.yaml")
    with pytest.raises(UserError, match="does not exist"):
        config_for_export(str(tmp_path / "none.onnx"))


# ----------------------------------------------------------------------------------------------------------
# infer.py


@pytest.fixture(scope="module")
def labelled_a(run):
    """infer.py --ckpt a.ckpt on the image folder and the text file, --topk 2 --json."""
    return infer_subprocess("--config", run.config_path, "--ckpt", run.ckpt_a, run.images, run.text_file,
                            "--topk", "2", "--json")


def test_infer_labels_images_with_the_given_checkpoint(run, labelled_a):
    assert labelled_a.returncode == 0, labelled_a.stderr
    rows = json_lines(labelled_a.stdout)
    assert sorted(rows) == ["a.png", "b.jpg", "c.png", "d.jpg"]
    assert all(len(r["topk"]) == 2 and r["topk"][0]["class"] in CLASSES for r in rows.values())
    assert f"skipped {run.corrupt}:" in labelled_a.stderr and f"skipped {run.text_file}:" in labelled_a.stderr
    assert "left out 1 file(s) without an image extension" in labelled_a.stderr

    ms.set_context(mode=ms.PYNATIVE_MODE)
    expected = softmax(reference_logits(run.config, run.ckpt_a, run.good))
    for path, probs in zip(run.good, expected):
        top = rows[path.name]["topk"]
        assert top[0]["index"] == int(probs.argmax()) and abs(top[0]["prob"] - probs.max()) < 1e-5

    b = infer_subprocess("--config", run.config_path, "--ckpt", run.ckpt_b, run.good[0], "--topk", "3", "--json")
    prob_a = {t["class"]: t["prob"] for t in rows["a.png"]["topk"]}
    prob_b = {t["class"]: t["prob"] for t in json_lines(b.stdout)["a.png"]["topk"]}
    assert any(abs(prob_b[c] - prob_a[c]) > 1e-3 for c in prob_a)  # other weights, other answer


def test_infer_with_exported_models_matches_the_checkpoint(run, labelled_a, tmp_path):
    top1 = {name: r["topk"][0] for name, r in json_lines(labelled_a.stdout).items()}
    for fmt, batch in (("onnx", 3), ("mindir", "dynamic")):  # onnx: 4 images = 3 + 1 padded to 3
        path, _ = export(str(run.ckpt_a), fmt, batch=batch, out=str(tmp_path / f"m.{fmt}"))
        result = infer_subprocess("--model", path, run.images, "--topk", "1", "--json")
        assert result.returncode == 0, result.stderr
        assert f"skipped {run.corrupt}:" in result.stderr
        got = {name: r["topk"][0] for name, r in json_lines(result.stdout).items()}
        assert got.keys() == top1.keys()
        for name in got:
            assert got[name]["class"] == top1[name]["class"] and abs(got[name]["prob"] - top1[name]["prob"]) < 1e-5


def test_infer_text_output_and_errors(run, capsys):
    main = infer_main()
    assert run_cli(main, ["--config", str(run.config_path), "--ckpt", str(run.ckpt_a), str(run.good[0]),
                          "--topk", "1", "--set", "train.mode=pynative"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{run.good[0]}: ") and line.split(": ")[1].split()[0] in CLASSES

    assert run_cli(main, ["--config", str(run.config_path), "--ckpt", str(run.ckpt_a), "missing_dir"]) == 2
    assert "path not found: 'missing_dir'" in capsys.readouterr().err

    assert run_cli(main, ["--config", str(run.config_path), "--ckpt", str(run.ckpt_a), str(run.corrupt),
                          str(run.text_file)]) == 2  # nothing could be labelled
    err = capsys.readouterr().err
    assert "skipped" in err and "none of the 2 image file(s) could be labelled" in err

    bad_ckpt = run.images.parent / "truncated.ckpt"
    bad_ckpt.write_bytes(run.ckpt_a.read_bytes()[:1000])
    assert run_cli(main, ["--config", str(run.config_path), "--ckpt", str(bad_ckpt), str(run.good[0])]) == 2
    err = capsys.readouterr().err
    assert f"'{bad_ckpt}'" in err and "corrupt" in err and "Traceback" not in err


def test_infer_rejects_inconsistent_flags(run, capsys):
    main = infer_main()
    for argv, message in ((["x.jpg"], "exactly one of --ckpt"),
                          (["--model", "m.onnx", "--ckpt", "c.ckpt", "x.jpg"], "exactly one of --ckpt"),
                          (["--model", "m.onnx", "--topk", "0", "x.jpg"], "--topk must be at least 1"),
                          (["--model", "m.onnx", "--batch-size", "0", "x.jpg"], "--batch-size must be at least 1")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err



@pytest.mark.parametrize("distill_type, averaged", [("none", False), ("hard", True)])
def test_a_distillation_head_no_teacher_trained_is_left_out_of_predictions(tmp_path, distill_type, averaged, capsys):
    """model.distilled=true without a teacher trains the class head alone (DeiT): the checkpoint records it, and
    infer.py (like eval, export and serve, through vit_ms.loader.open_model) answers with the class head alone."""
    from PIL import Image
    from tiny import tiny_overrides
    from vit_ms.config import config_to_dict
    from vit_ms.config_loader import load_config
    from vit_ms.data import load_image_rgb, preprocess_eval
    from vit_ms.loader.opener import open_model
    from vit_ms.models import VisionTransformer, resolve_architecture
    from vit_ms.train.checkpoint import TrainState, save_checkpoint
    from vit_ms.weights.checkpoint import CheckpointMeta, read_checkpoint, read_meta

    sets = tiny_overrides(num_classes=3, distilled="true") + ["train.mode=pynative"]
    sets += [] if distill_type == "none" else [f"distill.type={distill_type}", "distill.teacher=t.ckpt"]
    cfg = load_config(None, sets)
    ms.set_seed(7)
    model = VisionTransformer(resolve_architecture(cfg.model))
    model.head_dist.weight.set_data(ms.Tensor(np.full(model.head_dist.weight.shape, 0.5, np.float32)))  # far off
    save_checkpoint(model, tmp_path / "d.ckpt", TrainState(), CheckpointMeta(config_to_dict(cfg), None, CLASSES))
    params = read_checkpoint(tmp_path / "d.ckpt")
    assert json.loads(params["vit_ms_trained_heads"]) == (["head", "head_dist"] if averaged else ["head"])
    del params["vit_ms_trained_heads"]  # a checkpoint written before the key: the heads follow from its config
    assert read_meta(params).trained_heads == (["head", "head_dist"] if averaged else ["head"])

    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    model.set_train(False)
    tokens = model.forward_features(ms.Tensor(x))  # (B, 2+N, D)
    cls, dist = model.head(tokens[:, 0]).asnumpy(), model.head_dist(tokens[:, 1]).asnumpy()  # (B, K) each
    expected = (cls + dist) / 2 if averaged else cls
    opened = open_model(str(tmp_path / "d.ckpt"), tmp_path / "cache")
    np.testing.assert_allclose(opened.network(ms.Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(cls, (cls + dist) / 2, atol=1e-3)  # the two answers differ: the test can tell them apart

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    assert infer_main()(["--ckpt", str(tmp_path / "d.ckpt"), "--json", "--topk", "3", "--set", "train.mode=pynative",
                         str(image)]) == 0
    probs = {t["index"]: t["prob"] for t in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["topk"]}
    pixels = preprocess_eval(load_image_rgb(image, cfg.data.max_image_pixels), cfg.data, 32)[None]  # (1, 3, 32, 32)
    tokens = model.forward_features(ms.Tensor(pixels))
    head = model.head(tokens[:, 0]).asnumpy()
    logits = (head + model.head_dist(tokens[:, 1]).asnumpy()) / 2 if averaged else head
    np.testing.assert_allclose([probs[i] for i in range(3)], softmax(logits)[0], atol=1e-4)


def test_a_mindcv_model_opens_with_its_published_weights_from_the_cache(tmp_path):
    """`mindcv:<model>` opens for eval, infer and the server too: mindcv's published weights come through our
    download cache (here already there, as a download leaves them), not mindcv's own folder."""
    import hashlib
    import urllib.parse

    import mindcv.models
    from mindcv.models.registry import get_pretrained_cfg
    from vit_ms.loader.opener import open_model

    url = get_pretrained_cfg("resnet18")["url"]
    name = Path(urllib.parse.urlparse(url).path)
    tag = hashlib.sha256(url.encode()).hexdigest()[:10]  # where vit_ms.weights.hub caches a URL
    cached = tmp_path / "cache" / f"{name.stem}-{tag}{name.suffix}"
    cached.parent.mkdir()
    ms.set_seed(3)
    source = mindcv.models.create_model("resnet18", num_classes=1000)
    ms.save_checkpoint(source, str(cached))
    opened = open_model("mindcv:resnet18", tmp_path / "cache", overrides=["model.image_size=32",
                                                                          "train.mode=pynative"])
    assert opened.source.kind == "mindcv" and opened.cfg.model.num_classes == 1000
    x = ms.Tensor(np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32))
    source.set_train(False)
    np.testing.assert_allclose(opened.network(x).asnumpy(), source(x).asnumpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="--weights ema needs one of our training checkpoints"):
        open_model("mindcv:resnet18", tmp_path / "cache", weights="ema")
