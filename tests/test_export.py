"""Export: MindIR and ONNX files reproduce the checkpoint's logits, batch modes, the sidecar, the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from tiny_run import CLASSES, reference_logits, write_tiny_run
from vit_ms.inference import to_mindir_onnx as export_mod
from vit_ms.errors import UserError
from vit_ms.inference.to_mindir_onnx import ExportError, check_request, export, resolve_out
from vit_ms.loader.exported import open_exported_runner, read_sidecar, sidecar_path

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_tiny_run(tmp_path_factory.mktemp("export"))


pytestmark = pytest.mark.usefixtures("keep_mindspore_mode")  # exports switch to graph mode


def preprocessed(run) -> np.ndarray:
    from vit_ms.data import load_image_rgb, preprocess_eval

    cfg = run.config
    return np.stack([preprocess_eval(load_image_rgb(p, cfg.data.max_image_pixels), cfg.data, cfg.model.image_size)
                     for p in run.good])  # (4, 3, 32, 32)


@pytest.mark.parametrize("fmt", ["mindir", "onnx"])
def test_export_reproduces_checkpoint_logits_on_images(run, tmp_path, fmt):
    path, sidecar = export(str(run.ckpt_a), fmt, batch=4, out=str(tmp_path / "tiny"))
    assert path == tmp_path / f"tiny.{fmt}" and path.is_file()
    assert sidecar["parity_max_abs_diff"] <= TOL
    ms.set_context(mode=ms.PYNATIVE_MODE)
    expected = reference_logits(run.config, run.ckpt_a, run.good)
    got = open_exported_runner(path, fmt)(preprocessed(run))
    assert got.shape == (4, len(CLASSES))
    assert np.abs(got - expected).max() <= TOL


def test_onnx_graph_has_exact_erf_and_named_io(run, tmp_path):
    import onnx

    path, _ = export(str(run.ckpt_a), "onnx", batch=2, out=str(tmp_path / "tiny.onnx"), check=False)
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("Erf") == run.config.model.depth and "Softsign" not in ops
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["logits"]
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 3, 32, 32]


def test_dynamic_mindir_takes_any_batch(run, tmp_path):
    path, sidecar = export(str(run.ckpt_a), "mindir", batch="dynamic", out=str(tmp_path / "dyn"))
    assert sidecar["batch"] == "dynamic" and sidecar["input"]["shape"] == ["batch", 3, 32, 32]
    ms.set_context(mode=ms.PYNATIVE_MODE)
    x = preprocessed(run)
    expected = reference_logits(run.config, run.ckpt_a, run.good)
    runner = open_exported_runner(path, "mindir")
    for size in (1, 3):
        assert np.abs(runner(x[:size]) - expected[:size]).max() <= TOL


def test_onnx_dynamic_batch_is_rejected_with_the_alternatives():
    with pytest.raises(ExportError, match="--format mindir --batch dynamic"):
        check_request("onnx", "dynamic", "auto")
    with pytest.raises(ExportError, match="model.attention=fused"):
        check_request("onnx", 2, "fused")
    with pytest.raises(ExportError, match="positive integer or 'dynamic'"):
        export_mod.parse_batch("0")


def test_sidecar_contents(run, tmp_path):
    path, _ = export(str(run.ckpt_a), "onnx", batch=3, out=str(tmp_path / "s.onnx"), check=False)
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path) == tmp_path / "s.onnx.json"
    d = run.config.data
    assert sidecar["class_names"] == CLASSES
    assert (sidecar["format"], sidecar["file"], sidecar["model"], sidecar["num_classes"]) == \
        ("onnx", "s.onnx", "vit_ti16", 3)
    assert (sidecar["image_size"], sidecar["mean"], sidecar["std"], sidecar["crop_pct"], sidecar["interpolation"]) \
        == (32, d.mean, d.std, d.crop_pct, "bilinear")
    assert sidecar["batch"] == 3 and sidecar["onnx_opset"] == 11
    assert sidecar["input"]["name"] == "images" and sidecar["input"]["shape"] == [3, 3, 32, 32]
    assert sidecar["input"]["layout"] == "NCHW" and sidecar["input"]["dtype"] == "float32"
    assert sidecar["output"] == {"name": "logits", "shape": [3, 3], "dtype": "float32",
                                 "meaning": "logits (apply softmax for probabilities)"}
    assert sidecar["mindspore_version"] == ms.__version__ and sidecar["parity_max_abs_diff"] is None
    assert read_sidecar(path)["model"] == "vit_ti16"


def test_a_checkpoint_alone_is_enough_to_export(run, tmp_path):
    lone = tmp_path / "lone.ckpt"  # no config.yaml or classes.txt beside it: the checkpoint records both
    lone.write_bytes(run.ckpt_a.read_bytes())
    _, sidecar = export(str(lone), "mindir", batch=1, check=False)
    assert sidecar["class_names"] == CLASSES and sidecar["image_size"] == 32
    assert (tmp_path / "lone.mindir.json").is_file()


def test_a_checkpoint_without_a_recorded_config_needs_one(run, tmp_path):
    import mindspore as ms

    from vit_ms.train.checkpoint import load_model_weights
    from tiny import tiny_model

    model = tiny_model(num_classes=3)
    load_model_weights(model, run.ckpt_a)
    bare = tmp_path / "bare.ckpt"  # as written before checkpoints recorded their config
    ms.save_checkpoint(model, str(bare))
    with pytest.raises(UserError, match="records no config.*pass --config"):
        export(str(bare), "mindir", batch=1, check=False)
    _, sidecar = export(str(bare), "mindir", batch=1, check=False, config_path=str(run.config_path))
    assert sidecar["class_names"] is None


def test_failed_parity_removes_the_file(run, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "open_exported_runner", lambda *a: lambda x: np.zeros((len(x), 3), np.float32))
    with pytest.raises(ExportError, match="does not reproduce the model"):
        export(str(run.ckpt_a), "mindir", batch=1, out=str(tmp_path / "bad.mindir"))
    assert not (tmp_path / "bad.mindir").exists() and not (tmp_path / "bad.mindir.json").exists()


def test_erf_rewrite_refuses_when_placeholder_count_differs(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Softsign", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "g.onnx"))
    with pytest.raises(ExportError, match="expected 2 GELU placeholders"):
        export_mod._finish_onnx(tmp_path / "g.onnx", erf_nodes=2)


def test_output_path_rules(tmp_path):
    assert resolve_out(None, "runs/x/best.ckpt", "onnx") == Path("runs/x/best.onnx")
    assert resolve_out("out/vit", "c.ckpt", "mindir") == Path("out/vit.mindir")
    assert resolve_out("vit.MINDIR", "c.ckpt", "mindir") == Path("vit.mindir")
    with pytest.raises(ExportError, match="suffix of another format"):
        resolve_out("vit.onnx", "c.ckpt", "mindir")


def test_read_sidecar_errors(tmp_path):
    model = tmp_path / "m.onnx"
    with pytest.raises(UserError, match="no sidecar"):
        read_sidecar(model)
    sidecar_path(model).write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        read_sidecar(model)
    sidecar_path(model).write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(UserError, match="lacks model, num_classes"):
        read_sidecar(model)


def test_unreadable_exported_files_and_missing_onnxruntime(tmp_path, monkeypatch):
    for name, fmt in (("junk.mindir", "mindir"), ("junk.onnx", "onnx")):
        (tmp_path / name).write_bytes(b"junk" * 8)
        with pytest.raises(UserError, match=f"not a readable {'MindIR' if fmt == 'mindir' else 'ONNX'} file"):
            open_exported_runner(tmp_path / name, fmt)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match="pip install onnxruntime"):
        open_exported_runner(tmp_path / "junk.onnx", "onnx")


def test_cli_exports_and_reports_parity(run, tmp_path):
    out = tmp_path / "cli.onnx"
    result = subprocess.run([sys.executable, "-m", "vit_ms.export", "--config", str(run.config_path), "--ckpt",
                             str(run.ckpt_a), "--format", "onnx", "--batch", "2", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "GLOG_v": "3"})
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and "max |logit difference|" in result.stdout
    assert read_sidecar(out)["batch"] == 2
    rejected = subprocess.run([sys.executable, "-m", "vit_ms.export", "--config", str(run.config_path), "--ckpt",
                               str(run.ckpt_a), "--format", "onnx", "--batch", "dynamic"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "GLOG_v": "3"})
    assert rejected.returncode == 2 and "not supported for ONNX" in rejected.stderr
    assert "Traceback" not in rejected.stderr


def test_an_exported_graph_opens_only_where_a_graph_runs(run, tmp_path):
    """infer.py --model and the server run an exported file (vit_ms.loader.opener.open_model with exported=True);
    eval, the exporter and a teacher need a model to rebuild and name the checkpoint to give instead."""
    from vit_ms.loader.opener import open_model

    path, _ = export(str(run.ckpt_a), "onnx", batch=2, out=str(tmp_path / "g.onnx"), check=False)
    opened = open_model(str(path), None, exported=True)
    assert opened.network is None and opened.sidecar["batch"] == 2 and opened.class_names == ["cat", "dog", "bird"]
    assert opened.cfg.model.num_classes == 3 and opened.source.kind == "exported"
    with pytest.raises(UserError, match=r"is an exported ONNX graph, not a model to rebuild: run it with infer.py "
                                        r"--model"):
        open_model(str(path), None)
    with pytest.raises(UserError, match="an exported file holds one set of weights"):
        open_model(str(path), None, weights="ema", exported=True)
