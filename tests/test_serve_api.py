"""The serving API (vit_ms.serve.app) over the tiny checkpoint: every endpoint, every refused input, the token,
the run directory's story, an exported model; the server still answers after each refusal."""
import base64
import builtins
import http.client
import io
import logging
import resource
import socket
import struct
import time
import urllib.parse
import zlib
from dataclasses import replace

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from serve_fixtures import AppThread, call, multipart, write_run_story
from tiny_run import CLASSES, reference_logits, write_tiny_run
from vit_ms.data.images import decode_image_bytes
from vit_ms.inference.attention_maps import displayable, maps_for_batch
from vit_ms.inference.predict import softmax
from vit_ms.serve.app import Settings, build_app
from vit_ms.serve.model import load_served_model, overlay_png
from vit_ms.serve.run_info import RunStory
from vit_ms.serve.uploads import Limits

MAX_PIXELS = 4096  # data.max_image_pixels for these tests: a 100x100 image is "huge"
LIMITS = Limits(max_body_bytes=64 * 1024, max_images=4)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    mode = ms.get_context("mode")
    run = write_tiny_run(tmp_path_factory.mktemp("serve"))
    write_run_story(run.ckpt_a.parent, run.ckpt_a.stem, run.config)
    model = load_served_model(str(run.ckpt_a), max_batch=4, overrides=[f"data.max_image_pixels={MAX_PIXELS}"])
    model.warm_up()
    run.expected = softmax(reference_logits(run.config, run.ckpt_a, run.good))  # (4, 3): the model, computed directly
    yield run, model
    ms.set_context(mode=mode)


@pytest.fixture(scope="module")
def server(served):
    run, model = served
    with AppThread(build_app(model, Settings(LIMITS, max_wait_ms=2.0), RunStory.find(str(run.ckpt_a)))) as url:
        yield url


def expected_probs(run, paths):
    return run.expected[[run.good.index(p) for p in paths]]  # (n, 3)


def post_image(url, data, kind="image/png", query=""):
    return call(f"{url}/v1/predict{query}", data=data, headers={"Content-Type": kind})


def assert_still_serving(url, run):
    status, body = post_image(url, run.good[0].read_bytes())
    assert status == 200
    top = body["results"][0]["topk"][0]
    assert top["class"] == CLASSES[int(expected_probs(run, run.good[:1])[0].argmax())]
    assert call(f"{url}/healthz") == (200, {"status": "ok"})


def test_healthz_and_page(server):
    assert call(f"{server}/healthz") == (200, {"status": "ok"})
    status, page = call(f"{server}/")
    assert status == 200 and b"Drop images here" in page and b"/static/app.js" in page
    for name in ("app.js", "style.css"):
        status, text = call(f"{server}/static/{name}")
        assert status == 200 and len(text) > 500
    assert b"http" not in call(f"{server}/")[1].replace(b"http-equiv", b"")  # nothing fetched from elsewhere


def test_model_describes_the_checkpoint(server, served):
    run, _ = served
    status, info = call(f"{server}/v1/model")
    assert status == 200
    assert info["classes"] == CLASSES
    assert info["architecture"]["name"] == "vit_ti16" and info["architecture"]["depth"] == 2
    assert info["source"] == {"kind": "checkpoint", "spec": str(run.ckpt_a)}
    assert info["weights"] == "raw"
    assert info["config"]["model"]["num_classes"] == 3 and info["config"]["data"]["max_image_pixels"] == MAX_PIXELS
    assert info["attention"] is True and info["attention_note"] is None
    assert info["server"]["batch_sizes"] == [1, 2, 4]
    assert info["server"]["max_images"] == 4 and info["server"]["token_required"] is False


def test_predict_raw_body_matches_the_model(server, served):
    run, _ = served
    status, body = post_image(server, run.good[1].read_bytes(), "image/jpeg", "?topk=2")
    assert status == 200
    (result,) = body["results"]
    probs = expected_probs(run, run.good[1:2])[0]
    order = np.argsort(-probs)[:2]
    assert [t["class"] for t in result["topk"]] == [CLASSES[i] for i in order]
    np.testing.assert_allclose([t["prob"] for t in result["topk"]], probs[order], atol=1e-5)
    assert result["attention"] is None and result["batch"]["images"] >= 1
    assert result["time_ms"]["request"] >= result["time_ms"]["decode"] > 0


def test_predict_several_images_multipart_in_order(server, served):
    run, _ = served
    body, headers = multipart([(p.name, p.read_bytes()) for p in run.good[:3]])
    status, answer = call(f"{server}/v1/predict?topk=10", data=body, headers=headers)
    assert status == 200
    assert [r["name"] for r in answer["results"]] == [p.name for p in run.good[:3]]
    probs = expected_probs(run, run.good[:3])
    for result, p in zip(answer["results"], probs):
        assert len(result["topk"]) == 3  # topk=10 gives every class of a 3-class model
        got = {t["index"]: t["prob"] for t in result["topk"]}
        np.testing.assert_allclose([got[i] for i in range(3)], p, atol=1e-5)


def test_attention_overlay_for_a_checkpoint(server, served):
    run, model = served
    status, body = post_image(server, run.good[0].read_bytes(), query="?attention=1")
    assert status == 200
    (result,) = body["results"]
    assert result["attention"].startswith("data:image/png;base64,")
    overlay = Image.open(io.BytesIO(base64.b64decode(result["attention"].split(",", 1)[1])))
    assert overlay.size == (32, 32) and overlay.mode == "RGB"
    np.testing.assert_allclose(result["topk"][0]["prob"], expected_probs(run, run.good[:1])[0].max(), atol=1e-5)
    # the same picture as the attention-map figures' rollout, computed block by block (infer.py's path)
    x = model.preprocess(decode_image_bytes(run.good[0].read_bytes(), MAX_PIXELS))  # (3, 32, 32)
    rollout, _, _ = maps_for_batch(model.network, x[None], patch_size=8)  # (1, 32, 32)
    reference = Image.open(io.BytesIO(overlay_png(displayable(x, model.cfg.data.mean, model.cfg.data.std),
                                                  rollout[0])))
    assert np.abs(np.asarray(overlay, np.int16) - np.asarray(reference, np.int16)).max() <= 1


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def png_of(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(out, format="PNG")
    return out.getvalue()


BAD_INPUTS = {
    "not an image": (lambda run: (run.text_file.read_bytes(), "image/png"), 422, "not a readable image"),
    "truncated": (lambda run: (run.corrupt.read_bytes(), "image/jpeg"), 422, "truncated"),
    "empty body": (lambda run: (b"", "image/png"), 400, "holds no image"),
    "huge image": (lambda run: (png_of(100, 100), "image/png"), 422, f"data.max_image_pixels={MAX_PIXELS}"),
    "decompression bomb": (lambda run: (png_claiming(200_000, 200_000), "image/png"), 422, "decompression"),
    "oversized body": (lambda run: (b"\0" * (LIMITS.max_body_bytes + 1), "image/png"), 413, "over the server's"),
    "other content type": (lambda run: (b"a=1", "application/x-www-form-urlencoded"), 415, "not accepted"),
    "malformed multipart": (lambda run: (b"--x\r\nnonsense", "multipart/form-data; boundary=y"), 400, "multipart"),
    "garbage part header": (lambda run: (b"--y\r\n\x00garbage\x7f no colon\r\n\r\ndata\r\n--y--\r\n",
                                         "multipart/form-data; boundary=y"), 400, "malformed multipart"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_and_the_server_goes_on(server, served, case):
    run, _ = served
    make, status, words = BAD_INPUTS[case]
    data, kind = make(run)
    got, body = post_image(server, data, kind)
    assert got == status, body
    assert words.lower() in body["error"].lower()
    assert_still_serving(server, run)


def test_too_many_images_and_a_bad_one_among_good(server, served):
    run, _ = served
    body, headers = multipart([(p.name, p.read_bytes()) for p in run.good] + [("fifth.png", png_of(8, 8))])
    status, answer = call(f"{server}/v1/predict", data=body, headers=headers)
    assert status == 413 and "more than 4 images" in answer["error"]
    body, headers = multipart([("ok.png", run.good[0].read_bytes()), ("notes.txt", run.text_file.read_bytes())])
    status, answer = call(f"{server}/v1/predict", data=body, headers=headers)
    assert status == 422 and "image 2 ('notes.txt')" in answer["error"]
    assert_still_serving(server, run)


def test_oversized_body_without_content_length_is_cut_off(server, served):
    """A chunked upload (no Content-Length) is counted while it streams in."""
    run, _ = served
    address = urllib.parse.urlsplit(server)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    chunks = (b"\0" * 8192 for _ in range(LIMITS.max_body_bytes // 8192 + 2))
    connection.request("POST", "/v1/predict", body=chunks, headers={"Content-Type": "image/png"},
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and b"over the server's limit" in response.read()
    connection.close()
    assert_still_serving(server, run)


def test_bad_query_and_unknown_route(server, served):
    run, _ = served
    status, body = post_image(server, run.good[0].read_bytes(), query="?topk=zero")
    assert status == 400 and "topk='zero'" in body["error"]
    assert call(f"{server}/v1/nothing")[0] == 404
    assert_still_serving(server, run)


def test_a_failing_model_call_answers_500_and_serving_goes_on(server, served, monkeypatch):
    run, model = served
    calls = {"n": 0}
    real = model.predictor.run

    def fail_once(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("device lost")
        return real(x)

    monkeypatch.setattr(model.predictor, "run", fail_once)
    status, body = post_image(server, run.good[0].read_bytes())
    assert status == 500 and "internal error" in body["error"]
    assert_still_serving(server, run)


def test_uploads_are_never_written_to_disk(server, served, monkeypatch):
    run, _ = served
    written = []
    real_open = builtins.open

    def watching_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            written.append(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watching_open)
    body, headers = multipart([(p.name, p.read_bytes()) for p in run.good[:2]])
    assert call(f"{server}/v1/predict", data=body, headers=headers)[0] == 200
    assert post_image(server, run.good[0].read_bytes())[0] == 200
    assert written == []


def test_run_story(server, served):
    run, _ = served
    status, story = call(f"{server}/v1/run")
    assert status == 200
    assert story["checkpoint"] == "a.ckpt" and story["pictures"] == ["curves"]
    assert story["plan"]["arch"]["depth"] == 2
    assert [e["val_top1"] for e in story["epochs"]] == [0.5, 0.75]
    assert [(r["class"], r["images"], r["most_confused_with"]) for r in story["per_class"]] == \
        [("cat", 4, ""), ("dog", 4, "cat"), ("bird", 4, "dog")]
    assert story["per_class"][1]["top1"] == pytest.approx(0.75)
    assert story["missing"] == []
    status, png = call(f"{server}/v1/run/curves.png")
    assert status == 200 and png == (run.ckpt_a.parent / "curves.png").read_bytes()
    status, body = call(f"{server}/v1/run/confusion.png")
    assert status == 404 and "no confusion.png" in body["error"]


def test_token(served):
    run, model = served
    with AppThread(build_app(model, Settings(token="s3cret"))) as url:
        status, body = call(f"{url}/v1/model")
        assert status == 401 and "Authorization: Bearer" in body["error"]
        assert call(f"{url}/v1/model", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert post_image(url, run.good[0].read_bytes())[0] == 401
        status, info = call(f"{url}/v1/model", headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and info["server"]["token_required"] is True
        assert call(f"{url}/healthz")[0] == 200 and call(f"{url}/")[0] == 200
        status, body = call(f"{url}/v1/run", headers={"Authorization": "Bearer s3cret"})
        assert status == 404 and "no run directory" in body["error"]


@pytest.mark.parametrize("fmt", ["onnx", "mindir"])
def test_exported_model(served, tmp_path, fmt):
    """An export serves the same probabilities, at its fixed batch, and says plainly it has no attention maps."""
    from vit_ms.inference.to_mindir_onnx import export

    run, _ = served
    path, _ = export(str(run.ckpt_a), fmt, batch=1, out=str(tmp_path / f"a.{fmt}"), check=False)
    model = load_served_model(str(path), max_batch=8)
    assert model.batch_sizes == [1]
    model.warm_up()
    with AppThread(build_app(model, Settings())) as url:
        status, info = call(f"{url}/v1/model")
        assert info["source"]["kind"] == "exported" and info["source"]["format"] == fmt
        assert info["attention"] is False and "only the logits" in info["attention_note"]
        assert info["classes"] == CLASSES and info["weights"] is None
        body, headers = multipart([(p.name, p.read_bytes()) for p in run.good[:3]])
        status, answer = call(f"{url}/v1/predict?attention=1&topk=3", data=body, headers=headers)
        assert status == 200 and "only the logits" in answer["attention_note"]
        for result, p in zip(answer["results"], expected_probs(run, run.good[:3])):
            assert result["attention"] is None and result["batch"]["padded_to"] == 1
            got = {t["index"]: t["prob"] for t in result["topk"]}
            np.testing.assert_allclose([got[i] for i in range(3)], p, atol=1e-4)


def open_model(model, max_image_pixels: int):
    """The same compiled model with another data.max_image_pixels (the fixture's is tiny)."""
    data = replace(model.predictor.data, max_image_pixels=max_image_pixels)
    return replace(model, predictor=replace(model.predictor, data=data))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decoded_pixels_are_bounded_by_the_model_input(served):
    """A 12000x12000 PNG of ~140 KB is under Pillow's limit but 450 MB of RGB: refused from its header (16x the
    32 px input a side is 512); a large JPEG is answered from a reduced-scale decode. Memory does not grow."""
    run, model = served
    model = open_model(model, 178956970)
    out = io.BytesIO()
    Image.new("RGB", (12000, 12000), (10, 20, 30)).save(out, format="PNG")
    bomb = out.getvalue()
    assert len(bomb) < 1_000_000
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), np.uint8)).save(jpeg, "JPEG")
    before = peak_rss_mb()
    with AppThread(build_app(model, Settings(Limits(max_body_bytes=4 << 20), max_wait_ms=2.0))) as url:
        status, info = call(f"{url}/v1/model")
        assert info["server"]["max_image_pixels"] == 512 ** 2
        assert info["server"]["pixels_in_flight"] == 2 * 512 ** 2
        body, headers = multipart([(f"bomb{i}.png", bomb) for i in range(4)])
        status, answer = call(f"{url}/v1/predict", data=body, headers=headers)
        assert status == 422 and "12000x12000 = 144000000 pixels is over this server's limit" in answer["error"]
        status, answer = post_image(url, jpeg.getvalue(), "image/jpeg")
        assert status == 200 and len(answer["results"]) == 1
        status, info = call(f"{url}/v1/model")
        assert 0 < info["server"]["pixels_in_flight_peak"] <= 512 ** 2
        assert_still_serving(url, run)
    assert peak_rss_mb() - before < 200  # decoding one bomb in full would add over 1 GB


def test_a_client_leaving_mid_body_is_one_info_line(server, served):
    run, _ = served
    records = []
    catcher = logging.Handler(logging.DEBUG)
    catcher.emit = records.append
    watched = [logging.getLogger(name) for name in ("vit_ms", "aiohttp")]
    levels = [logger.level for logger in watched]
    for logger in watched:
        logger.addHandler(catcher)
        logger.setLevel(logging.DEBUG)
    try:
        address = urllib.parse.urlsplit(server)
        with socket.create_connection((address.hostname, address.port), timeout=10) as client:
            client.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 5000\r\n\r\n" + b"\0" * 100)
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while not any("left during POST /v1/predict" in r.getMessage() for r in records):
            assert time.monotonic() < deadline, [r.getMessage() for r in records]
            time.sleep(0.05)
        assert_still_serving(server, run)
    finally:
        for logger, level in zip(watched, levels):
            logger.removeHandler(catcher)
            logger.setLevel(level)
    gone = [r for r in records if "left during" in r.getMessage()]
    assert [r.levelno for r in gone] == [logging.INFO] and gone[0].exc_info is None
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING or r.exc_info] == []


RAW_REQUESTS = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "header without a colon": b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "broken chunked encoding": b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(RAW_REQUESTS))
def test_malformed_http_is_a_4xx_and_the_server_goes_on(server, served, case):
    run, _ = served
    address = urllib.parse.urlsplit(server)
    with socket.create_connection((address.hostname, address.port), timeout=10) as client:
        client.sendall(RAW_REQUESTS[case])
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:300]
    assert_still_serving(server, run)
