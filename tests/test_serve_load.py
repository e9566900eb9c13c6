"""Load on loopback: 32 concurrent clients, a fixed number of requests, with batching and without (batch size 1).

Asserts that no request is lost or failed and that every answer is the model's; prints p50/p99 latency and
images/s side by side (numbers, not assertions: the machine is shared). The tiny model keeps it cheap.
"""
import asyncio
from dataclasses import replace

import mindspore as ms
import pytest

from serve_fixtures import AppThread
from tiny_run import CLASSES, reference_logits, write_tiny_run
from vit_ms.serve.app import BATCHER, Settings, build_app
from vit_ms.serve.loadgen import run_load
from vit_ms.serve.model import load_served_model

CLIENTS, REQUESTS = 32, 256


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
