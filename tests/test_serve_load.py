"""Load on loopback: 32 concurrent clients, a fixed number of requests, with batching and without (batch size 1);
50 stalled uploads; the bodies' budget; a mix of huge, large and small uploads at once.

Asserts that no request is lost or failed and that every answer is the model's; prints p50/p99 latency and
images/s side by side (numbers, not assertions: the machine is shared). The tiny model keeps it cheap.
"""
import asyncio
import io
import socket
import time
from dataclasses import replace

import numpy as np
from PIL import Image

import mindspore as ms
import pytest

from serve_fixtures import AppThread, call
from tiny_run import CLASSES, reference_logits, write_tiny_run
from vit_ms import loadgen
from vit_ms.errors import run_cli
from vit_ms.serve.app import BATCHER, BODIES, LINGER_S, PIXELS, Settings, build_app
from vit_ms.serve.loadgen import run_load
from vit_ms.serve.model import load_served_model
from vit_ms.serve.uploads import Limits

CLIENTS, REQUESTS = 32, 256
STALLED, BODY_TIMEOUT_S = 50, 1.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    mode = ms.get_context("mode")
    run = write_tiny_run(tmp_path_factory.mktemp("load"))
    model = load_served_model(str(run.ckpt_a), max_batch=4)
    model.warm_up()
    yield run, model
    ms.set_context(mode=mode)


def test_stalled_uploads_are_answered_408_and_closed_in_bounded_time(tiny_model):
    """50 clients send their headers and part of a body, then nothing: each gets 408 and its connection is closed
    within the body timeout (plus the linger), and the server answers others meanwhile; 10 clients that never finish
    their headers are closed within the body timeout too."""
    run, model = tiny_model
    with AppThread(build_app(model, Settings(Limits(body_timeout_s=BODY_TIMEOUT_S)))) as url:
        port = int(url.rsplit(":", 1)[1])
        began = time.monotonic()
        stalled = []
        for _ in range(STALLED):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 100000\r\n\r\n" + b"\0" * 1000)
            stalled.append(client)
        headers_only = []  # and 10 that never finish their headers
        for _ in range(10):
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
            headers_only.append(client)
        assert call(f"{url}/healthz")[0] == 200  # not blocked by them
        for client in headers_only:
            assert client.recv(65536) == b""  # closed without an answer (timeout=10 s raises instead)
            client.close()
        answers = []
        for client in stalled:
            received = b""
            while chunk := client.recv(65536):  # until the server closes (timeout=10 s raises instead)
                received += chunk
            answers.append(received)
            client.close()
        seconds = time.monotonic() - began
    assert all(a.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in a for a in answers), answers[0]
    print(f"\n{STALLED} stalled uploads closed after {seconds:.1f} s (body timeout {BODY_TIMEOUT_S} s)")
    assert seconds < BODY_TIMEOUT_S + LINGER_S + 3


def test_a_mix_of_uploads_keeps_decoded_pixels_within_the_budget(tiny_model):
    """Huge PNGs (refused from the header), large JPEGs (decoded at reduced scale) and good images, 24 clients at
    once: every answer is 200 or 422, and the pixels held never pass the budget."""
    run, model = tiny_model
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (1200, 1600, 3), np.uint8)).save(big, "JPEG")
    huge = io.BytesIO()
    Image.new("RGB", (6000, 6000)).save(huge, "PNG")
    payloads = [(big.getvalue(), "image/jpeg"), (huge.getvalue(), "image/png")] + \
        [(p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg") for p in run.good]
    app = build_app(model, Settings(Limits(max_body_bytes=4 << 20), max_wait_ms=2.0))
    with AppThread(app) as url:
        result = asyncio.run(run_load(url, payloads, clients=24, requests=96))
        assert call(f"{url}/healthz")[0] == 200
    budget, bodies = app[PIXELS], app[BODIES]
    assert budget.held == 0 and 0 < budget.peak <= budget.total == 2 * 512 ** 2
    assert bodies.held == 0 and 0 < bodies.peak <= bodies.total == 4 * (4 << 20)
    assert len(result.latencies_ms) == 96 - 16  # the huge PNGs: 16 of 96 requests
    assert set(result.failures) == {result.failures[0]} and result.failures[0].startswith("422: ")
    assert "6000x6000 = 36000000 pixels is over this server's limit of 262144" in result.failures[0]


@pytest.mark.slow
def test_load_with_and_without_batching(tmp_path):
    mode = ms.get_context("mode")
    run = write_tiny_run(tmp_path)
    batched = load_served_model(str(run.ckpt_a), max_batch=8)
    batched.warm_up()
    one_by_one = replace(batched, batch_sizes=[1])  # the same compiled model, batching off
    expected = reference_logits(run.config, run.ckpt_a, run.good).argmax(axis=1)  # (4,) the model's top-1
    payloads = [(p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg") for p in run.good]

    results = {}
    for label, model in (("batching off (batch 1)", one_by_one), ("batching on (up to 8)", batched)):
        app = build_app(model, Settings(max_wait_ms=2.0))
        with AppThread(app) as url:
            if label.startswith("batching on"):
                results["one at a time"] = asyncio.run(run_load(url, payloads, clients=1, requests=64))
            results[label] = asyncio.run(run_load(url, payloads, clients=CLIENTS, requests=REQUESTS))
            batcher = app[BATCHER]
        assert batcher.images == REQUESTS + (64 if label.startswith("batching on") else 0)
        if model is one_by_one:
            assert batcher.calls == batcher.images
        else:
            assert batcher.calls < batcher.images  # concurrent requests shared model calls
    ms.set_context(mode=mode)

    print()
    for label, result in results.items():
        print(result.line(f"{label:24s}: "))
        assert result.failures == []
        assert len(result.latencies_ms) == result.requests  # none lost
        assert result.top1 == {i: {CLASSES[c]} for i, c in enumerate(expected)}


def test_request_bodies_held_at_once_stay_within_their_budget(tiny_model):
    """Room for one largest body: a stalled upload that announced it holds the room, the next request waits its
    turn (not refused) and is answered once the stalled one is given up (408)."""
    run, model = tiny_model
    limits = Limits(max_body_bytes=64 * 1024, body_timeout_s=BODY_TIMEOUT_S, bodies_in_flight=1)
    app = build_app(model, Settings(limits, max_wait_ms=2.0))
    with AppThread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
            stalled.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                            b"Content-Length: 65536\r\n\r\n" + b"\0" * 1000)
            time.sleep(0.2)
            began = time.monotonic()
            status, body = call(f"{url}/v1/predict", data=run.good[0].read_bytes(),
                                headers={"Content-Type": "image/png"})
            waited = time.monotonic() - began
            assert stalled.recv(65536).startswith(b"HTTP/1.1 408")
        assert status == 200 and body["results"][0]["topk"]
        assert waited > BODY_TIMEOUT_S - 0.5  # it waited for the stalled upload's room
        status, info = call(f"{url}/v1/model")
    assert info["server"]["body_bytes_in_flight"] == 64 * 1024
    assert info["server"]["body_bytes_in_flight_peak"] == 64 * 1024
    assert app[BODIES].held == 0


def test_the_loadgen_command_measures_each_server_and_names_an_empty_folder(tiny_model, tmp_path, capsys):
    run, model = tiny_model
    images = tmp_path / "images"
    images.mkdir()
    for p in run.good:
        (images / p.name).write_bytes(p.read_bytes())
    with AppThread(build_app(model, Settings(max_wait_ms=2.0))) as url:
        assert run_cli(loadgen.main, ["--url", url, "--images", str(images), "--clients", "1", "2",
                                      "--requests", "8", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"{url}: 2 clients, 8 requests: 0 failed") == 2 and "medians of 2 runs:" in out
    (tmp_path / "empty").mkdir()
    assert run_cli(loadgen.main, ["--images", str(tmp_path / "empty")]) == 2
    assert f"error: no image files under '{tmp_path / 'empty'}' (--images)" in capsys.readouterr().err
