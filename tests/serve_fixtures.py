"""Serving tests' helpers: an app on a loopback port in a background thread, and a plain HTTP call.

    with AppThread(build_app(model, Settings())) as url:
        status, body = call(url + "/v1/predict", data=png_bytes, headers={"Content-Type": "image/png"})

`call` returns the status and the JSON body (or the raw bytes for anything else), for 4xx/5xx too.
"""
import asyncio
import json
import threading
import urllib.error
import urllib.request
import uuid
from typing import Dict, Optional, Sequence, Tuple

from aiohttp import web


class AppThread:
    """Run an aiohttp application on 127.0.0.1:<free port> in its own thread and event loop."""

    def __init__(self, app: web.Application):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: Optional[web.AppRunner] = None

    def __enter__(self) -> str:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=60)

    async def _start(self) -> str:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def call(url: str, data: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
         method: Optional[str] = None) -> Tuple[int, object]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, kind, raw = response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as err:
        status, kind, raw = err.code, err.headers.get_content_type(), err.read()
    return status, json.loads(raw) if kind == "application/json" else raw


def multipart(files: Sequence[Tuple[str, bytes]], field: str = "image") -> Tuple[bytes, Dict[str, str]]:
    """A multipart/form-data body with one part per (file name, bytes), and its Content-Type header."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def write_run_story(run_dir, ckpt_stem: str, cfg) -> None:
    """What train.py and eval.py leave beside a checkpoint: plan.json, metrics.jsonl, curves.png and
    eval/<ckpt_stem>/per_class.csv (the curves picture is a small stand-in PNG: the server only sends it)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from vit_ms.inference.per_class import per_class_results, write_per_class_csv
    from vit_ms.plan import resolve_plan
    from vit_ms.runtime import Runtime

    run_dir = Path(run_dir)
    (run_dir / "plan.json").write_text(json.dumps(resolve_plan(cfg, Runtime("CPU")).to_dict()), encoding="utf-8")
    records = [{"epoch": 1, "train_loss": 1.1, "val_loss": 1.0, "val_top1": 0.5},
               {"epoch": 2, "train_loss": 0.9, "val_loss": 0.8, "val_top1": 0.75}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(run_dir / "curves.png")
    (run_dir / "eval" / ckpt_stem).mkdir(parents=True)
    confusion = np.array([[4, 0, 0], [1, 3, 0], [0, 2, 2]])  # rows: true cat, dog, bird
    write_per_class_csv(run_dir / "eval" / ckpt_stem / "per_class.csv",
                        per_class_results(confusion, ["cat", "dog", "bird"]))
