"""vit_ms.weights.hub and .load: the weights table, the download cache (sha256, offline message), load_pretrained,
and $VIT_MS_CACHE honoured by every command.

No test reaches the internet: downloads come from a file:// URL or an HTTP server on 127.0.0.1 that serves
a file the test wrote and shuts itself down.
"""
import functools
import hashlib
import http.server
import importlib.util
import re
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from numpy_vit import random_timm_state
from safetensors.numpy import save_file

from vit_ms.config_loader import apply_overrides, config_from_dict
from vit_ms.weights.sources import SOURCE_FORMATS, OPTIMIZER_STATE_KEYS, save_state
from vit_ms.errors import CheckpointError, UserError
import tiny
from vit_ms.weights.hub import PRETRAINED, PretrainedWeights, cache_dir_from_env, file_sha256, resolve_pretrained
from vit_ms.weights.load import load_pretrained
from vit_ms.variants import VARIANTS

REPO = Path(__file__).resolve().parents[1]


def tiny_model(num_classes=10, image_size=32, **kw):
    return tiny.tiny_model(num_classes, image_size, **kw)


def tiny_state(seed=0, classes=10, **kw):
    return random_timm_state(np.random.default_rng(seed), 32, 2, 2, 8, 4, classes, **kw)


@contextmanager
def local_server(folder: Path, lifetime_s: float = 60.0):
    """Serve `folder` on 127.0.0.1 (a free port) until the block ends, or `lifetime_s` at most."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(lifetime_s, server.shutdown)
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def weights_file(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    save_file(tiny_state(), str(folder / "model.safetensors"))
    return folder / "model.safetensors"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------
# The table.


def test_table_entries_are_complete_and_usable_as_config():
    assert len(PRETRAINED) >= 10
    for name, entry in PRETRAINED.items():
        assert entry.model in VARIANTS and entry.source_format in SOURCE_FORMATS, name
        assert entry.url.startswith("https://") and Path(entry.url).suffix in (".safetensors", ".npz", ".ckpt"), name
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256), name
        assert 0 < entry.crop_pct <= 1 and len(entry.mean) == len(entry.std) == 3, name
        cfg = config_from_dict(apply_overrides({}, entry.config_overrides()))  # every override parses and validates
        assert (cfg.model.name, cfg.model.num_classes, cfg.model.image_size) == (entry.model, entry.num_classes,
                                                                                entry.image_size)
    tutorial = config_from_dict(apply_overrides({}, PRETRAINED["vit_b16.mindspore_tutorial"].config_overrides()))
    assert (tutorial.model.gelu, tutorial.model.norm_eps) == ("tanh", 1e-7)
    assert PRETRAINED["vit_b16.augreg_in21k_ft_in1k_jax"].config_overrides()[3] == "model.gelu=tanh"


def test_cache_dir_from_env(tmp_path):
    assert cache_dir_from_env({"VIT_MS_CACHE": str(tmp_path)}) == tmp_path
    assert cache_dir_from_env({}) == Path("~/.cache/vit_ms").expanduser()


# ----------------------------------------------------------------------------------------------------------
# Download, cache, sha256.


def test_download_checks_sha256_and_caches(tmp_path, weights_file):
    good = file_sha256(weights_file)
    with local_server(weights_file.parent) as base:
        url = f"{base}/model.safetensors"
        path = resolve_pretrained(url, tmp_path / "cache", sha256=good, progress=False)
    assert path.parent == tmp_path / "cache" and path.read_bytes() == weights_file.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    assert resolve_pretrained(url, tmp_path / "cache", sha256=good) == path  # server gone: served from the cache


def test_sha256_mismatch_deletes_the_download(tmp_path, weights_file):
    wrong = "0" * 64
    with local_server(weights_file.parent) as base:
        with pytest.raises(CheckpointError) as err:
            resolve_pretrained(f"{base}/model.safetensors", tmp_path / "cache", sha256=wrong, progress=False)
    assert f"expected {wrong}, got {file_sha256(weights_file)}" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_message_names_the_url_and_the_exact_path(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/vit.npz"
    with pytest.raises(UserError) as err:
        resolve_pretrained(url, tmp_path / "cache", progress=False)
    msg = str(err.value)
    target = next(iter(re.findall(r"place the file at exactly (\S+)", msg)))
    assert url in msg and Path(target).parent == tmp_path / "cache" and target.endswith(".npz")
    assert list((tmp_path / "cache").iterdir()) == []  # no partial download left behind
    Path(target).write_bytes(b"fetched elsewhere")  # doing what the message says makes it work offline
    assert resolve_pretrained(url, tmp_path / "cache") == Path(target)


def test_table_name_file_url_and_local_path(tmp_path, weights_file, monkeypatch):
    good = file_sha256(weights_file)
    entry = PretrainedWeights(weights_file.as_uri(), "timm", "vit_ti16", 10, 32, sha256=good)
    monkeypatch.setitem(PRETRAINED, "tiny.test", entry)
    path = resolve_pretrained("tiny.test", tmp_path / "cache")
    assert path == tmp_path / "cache" / "tiny.test.safetensors" and file_sha256(path) == good
    assert resolve_pretrained(str(weights_file), tmp_path / "cache", sha256=good) == weights_file
    with pytest.raises(CheckpointError, match="expected 1111"):
        resolve_pretrained(str(weights_file), sha256="1" * 64)
    with pytest.raises(UserError, match="did you mean 'vit_b16.augreg_in21k_ft_in1k'"):
        resolve_pretrained("vit_b16.augreg_in21k_ft_in1", tmp_path / "cache")


# ----------------------------------------------------------------------------------------------------------
# load_pretrained.


def test_head_of_another_size_is_dropped_and_reinitialised(weights_file):
    source = tiny_state()
    model = tiny_model(num_classes=5)
    report = load_pretrained(model, str(weights_file))
    assert report.head_reinitialised and "10-class head" in str(report)
    np.testing.assert_array_equal(model.blocks[0].attn.qkv.weight.asnumpy(), source["blocks.0.attn.qkv.weight"])
    head = model.head.weight.asnumpy()
    assert head.shape == (5, 32) and 0 < head.std() < 0.05 and not model.head.bias.asnumpy().any()


def test_pre_logits_go_with_a_dropped_head(tmp_path):
    save_file(tiny_state(representation=16), str(tmp_path / "m.safetensors"))
    report = load_pretrained(tiny_model(num_classes=3), str(tmp_path / "m.safetensors"))
    assert "pre-logits" in str(report)
    with pytest.raises(CheckpointError, match="model.representation_size=16"):  # same classes: keep it or say so
        load_pretrained(tiny_model(num_classes=10), str(tmp_path / "m.safetensors"))
    load_pretrained(tiny_model(num_classes=10, representation_size=16), str(tmp_path / "m.safetensors"))


def test_training_checkpoint_optimizer_state_is_ignored(tmp_path):
    state = tiny_state()
    entries = {**state, **{f"adam_m.{k}": v for k, v in state.items()}, **{f"adam_v.{k}": v for k, v in state.items()}}
    entries.update({key: np.zeros((1,), np.float32) for key in OPTIMIZER_STATE_KEYS})
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in entries.items()], str(tmp_path / "last.ckpt"),
                       append_dict={"vit_ms_epoch": 3})
    report = load_pretrained(tiny_model(), str(tmp_path / "last.ckpt"))
    assert report.source_format == "vit_ms" and report.loaded == len(state)
    assert report.ignored_optimizer_state == 2 * len(state) + len(OPTIMIZER_STATE_KEYS) + 1


def test_converted_file_remembers_the_settings_it_needs(tmp_path):
    save_state(tiny_state(), tmp_path / "conv.ckpt", {"gelu": "tanh", "norm_eps": 1e-7})
    report = load_pretrained(tiny_model(), str(tmp_path / "conv.ckpt"))
    assert report.mismatched_overrides == {"gelu": ("erf", "tanh"), "norm_eps": (1e-6, 1e-7)}
    assert not load_pretrained(tiny_model(gelu="tanh", norm_eps=1e-7), str(tmp_path / "conv.ckpt")).mismatched_overrides


def test_a_table_name_loads_end_to_end(tmp_path, weights_file, monkeypatch):
    with local_server(weights_file.parent) as base:
        monkeypatch.setitem(PRETRAINED, "tiny.http", PretrainedWeights(f"{base}/model.safetensors", "timm",
                                                                       "vit_ti16", 10, 32))
        report = load_pretrained(tiny_model(), "tiny.http", cache_dir=tmp_path / "cache", progress=False,
                                 sha256=hashlib.sha256(weights_file.read_bytes()).hexdigest())
    assert report.path == tmp_path / "cache" / "tiny.http.safetensors" and report.loaded == len(tiny_state())


# ----------------------------------------------------------------------------------------------------------
# $VIT_MS_CACHE, honoured by every command that opens a model.


def script_main(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_every_command_opens_published_weights_from_vit_ms_cache(tmp_path, tiny_imagenet, monkeypatch):
    """A table name whose URL cannot be reached, its file already in $VIT_MS_CACHE (as a download leaves it):
    eval.py, infer.py, python -m vit_ms.export, python -m vit_ms.serve and a distillation teacher in train.py all
    load it from there (a command that ignored $VIT_MS_CACHE would try the URL and stop)."""
    from aiohttp import web
    from vit_ms.export import main as export_main
    from vit_ms.serve.cli import main as serve_main

    cache = tmp_path / "cache"
    cache.mkdir()
    save_file(tiny_state(classes=3), str(cache / "tiny.cached.safetensors"))
    monkeypatch.setitem(PRETRAINED, "tiny.cached", PretrainedWeights(
        f"http://127.0.0.1:{closed_port()}/model.safetensors", "timm", "vit_ti16", 3, 32,
        model_overrides=dict(tiny.TINY_ARCH)))
    monkeypatch.setenv("VIT_MS_CACHE", str(cache))
    with pytest.raises(UserError, match="place the file at exactly"):  # the URL really is out of reach
        resolve_pretrained("tiny.cached", tmp_path / "elsewhere", progress=False)
    eager = ["--set", "train.mode=pynative"]
    image = next((tiny_imagenet / "val" / "class_0").iterdir())

    assert script_main("eval")(["--ckpt", "tiny.cached", "--set", f"data.root={tiny_imagenet}", *eager,
                                "--out", str(tmp_path / "eval")]) == 0
    assert script_main("infer")(["--ckpt", "tiny.cached", *eager, str(image)]) == 0
    assert export_main(["--ckpt", "tiny.cached", "--format", "mindir", "--no-check",
                        "--out", str(tmp_path / "tiny.mindir")]) == 0
    assert (tmp_path / "tiny.mindir").is_file()
    served = []
    monkeypatch.setattr(web, "run_app", lambda app, **kw: served.append(app))  # loaded and warmed up: stop there
    assert serve_main(["--ckpt", "tiny.cached", "--port", "0", "--batch-size", "1", *eager]) == 0 and served

    student = [f"--set={s}" for s in tiny.tiny_overrides(num_classes=3, depth=1)]
    # in this process, to see the patched table: without the watcher thread, which blocks SIGTERM/SIGINT for the
    # whole process (and its children) for good
    monkeypatch.setattr("vit_ms.train.stopping.watch_stop_signals", lambda: None)
    assert script_main("train")(["--config", "demo.yaml", *student, *eager, "--set", f"data.root={tiny_imagenet}",
                                 "--set", f"output_dir={tmp_path / 'runs'}", "--set", "run_name=student",
                                 "--set", "train.epochs=1", "--set", "train.steps_per_epoch=1",
                                 "--set", "train.batch_size=4", "--set", "data.num_parallel_workers=1",
                                 "--set", "distill.type=hard", "--set", "distill.teacher=tiny.cached"]) == 0
    assert "distill.teacher: tiny.cached" in (tmp_path / "runs" / "student" / "train.log").read_text(encoding="utf-8")
