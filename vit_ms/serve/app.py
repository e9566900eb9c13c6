"""The web application: the page, the JSON API, the token check and the error answers (aiohttp).

    app = build_app(model, Settings(max_wait_ms=5, token=None), story=RunStory.find(spec))
    web.run_app(app)                                       # vit_ms.serve.cli binds and runs it

Routes: GET / (the page; its files under /static/), GET /healthz, GET /v1/model, GET /v1/run (+ /v1/run/curves.png,
/v1/run/confusion.png), POST /v1/predict?topk=5&attention=0. With a token every /v1/ route needs
`Authorization: Bearer <token>`; the page and /healthz stay open (they tell nothing about the model).

Every refused request gets a 4xx and a JSON body {"error": "<what was wrong and what to do>"}; an unexpected error
in one request answers 500 and is logged, and the server goes on serving. A client that leaves mid-body is one INFO
line. A request holds its body's bytes of one Budget while it is read and answered, and its decoding holds its
pixels of another (vit_ms.serve.budget, .pixels), so memory stays bounded under any mix of uploads.
"""
import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import AsyncIterator, Optional

import numpy as np
from aiohttp import web

from ..data.images import BadImage
from ..inference.predict import top_k
from .batcher import Batcher
from .model import ServedModel, png_data_url
from .budget import Budget
from .pixels import DecodePlan, decode_planned, image_pixel_limit, plan_decode
from .run_info import RunStory
from .uploads import ClientGone, Limits, RequestError, read_images

log = logging.getLogger("vit_ms")
STATIC = Path(__file__).parent / "static"
# After a refusal before the body's end (413, 408, a malformed body), aiohttp reads and drops what is left for at
# most this long, so that the client sees the answer rather than a reset; then the connection closes.
LINGER_S = 2.0

MODEL, BATCHER, SETTINGS, STORY, POOLS, PIXELS, BODIES = (
    web.AppKey(n, object) for n in ("model", "batcher", "settings", "story", "pools", "pixels", "bodies"))


@dataclass(frozen=True)
class Settings:
    limits: Limits = Limits()
    max_wait_ms: float = 5.0  # how long the batcher waits for more images after the first
    token: Optional[str] = None  # bearer token for /v1/ routes; None: open
    decode_threads: int = 2  # threads decoding and preprocessing uploads
    max_image_pixels: Optional[int] = None  # most pixels one upload decodes to; None: from the model (pixels.py)

    def image_pixels(self, model: ServedModel) -> int:
        """The most pixels one upload decodes to (data.max_image_pixels refuses what is over it, too)."""
        limit = self.max_image_pixels or image_pixel_limit(model.predictor.image_size)
        return min(limit, model.predictor.data.max_image_pixels)


@dataclass
class Pools:
    model: ThreadPoolExecutor  # one thread: every MindSpore call
    decode: ThreadPoolExecutor


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def answers(request: web.Request, handler):
    """The token check, and RequestError -> its 4xx; anything unexpected -> 500 (logged), never a dead server."""
    token = request.app[SETTINGS].token
    if token and request.path.startswith("/v1/"):
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            response = error(401, "this server needs a token: send the header 'Authorization: Bearer <token>' "
                                  "(the --token it was started with)")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
    try:
        return await handler(request)
    except ClientGone as gone:
        log.info("client %s left during %s %s: %s", request.remote, request.method, request.path, gone)
        return error(gone.status, str(gone))  # nobody reads it; aiohttp drops it without a word
    except RequestError as err:
        response = error(err.status, str(err))
        if err.close:
            response.force_close()  # no keep-alive: the connection closes once the answer is out (LINGER_S)
        return response
    except web.HTTPException:
        raise
    except Exception:  # noqa: BLE001 - one bad request must not stop the server; logged with its traceback
        log.exception("request %s %s failed", request.method, request.path)
        return error(500, "internal error while answering this request (logged by the server); the server goes "
                          "on serving")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def model_info(request: web.Request) -> web.Response:
    model: ServedModel = request.app[MODEL]
    s: Settings = request.app[SETTINGS]
    server = {"batch_sizes": model.batch_sizes, "max_wait_ms": s.max_wait_ms, "max_images": s.limits.max_images,
              "max_body_bytes": s.limits.max_body_bytes, "max_image_pixels": s.image_pixels(model),
              "pixels_in_flight": request.app[PIXELS].total, "pixels_in_flight_peak": request.app[PIXELS].peak,
              "body_bytes_in_flight": request.app[BODIES].total,
              "body_bytes_in_flight_peak": request.app[BODIES].peak, "body_timeout_s": s.limits.body_timeout_s,
              "token_required": bool(s.token), "run_story": request.app[STORY] is not None}
    return web.json_response({**model.info, "server": server})


async def run_summary(request: web.Request) -> web.Response:
    story: Optional[RunStory] = request.app[STORY]
    if story is None:
        raise RequestError(404, "no run directory: the served weights are not a checkpoint inside a train.py run "
                                "folder (runs/<name>/), so there are no training curves or run plan to show")
    return web.json_response(story.summary())


async def run_picture(request: web.Request) -> web.FileResponse:
    story: Optional[RunStory] = request.app[STORY]
    path = story.picture(request.match_info["name"]) if story is not None else None
    if path is None:
        raise RequestError(404, f"no {request.match_info['name']}.png in the run directory")
    return web.FileResponse(path)


def query_int(request: web.Request, key: str, default: int, low: int) -> int:
    text = request.query.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise RequestError(400, f"query parameter {key}={text!r}: expected a whole number of at least {low}")
    return value


async def predict(request: web.Request) -> web.Response:
    """Top-k per image; with attention=1 also the attention rollout over each image (one model call per image)."""
    start = time.perf_counter()
    model: ServedModel = request.app[MODEL]
    pools: Pools = request.app[POOLS]
    k = min(query_int(request, "topk", 5, 1), len(model.class_names))
    attention = query_int(request, "attention", 0, 0) > 0
    batcher: Batcher = request.app[BATCHER]
    pixels: Budget = request.app[PIXELS]
    limits: Limits = request.app[SETTINGS].limits
    limit, side = request.app[SETTINGS].image_pixels(model), model.eval_resize
    data_limit = model.predictor.data.max_image_pixels
    loop = asyncio.get_running_loop()

    def preprocess(data: bytes, plan: DecodePlan) -> np.ndarray:
        return model.preprocess(decode_planned(data, plan, data_limit))  # (3, S, S)

    async def decode(i: int, name: str, data: bytes):
        began = time.perf_counter()
        try:
            plan = await loop.run_in_executor(pools.decode, plan_decode, data, limit, side, data_limit)
            async with pixels.hold(plan.pixels):
                x = await loop.run_in_executor(pools.decode, preprocess, data, plan)  # (3, S, S)
        except BadImage as err:
            raise RequestError(422, f"image {i + 1} ('{name}') is unusable: {err}. Send a complete JPEG, PNG, "
                                    f"BMP, GIF, TIFF or WebP image") from err
        return x, (time.perf_counter() - began) * 1000.0

    async with request.app[BODIES].hold(limits.body_reservation(request.content_length)):  # the bytes, until
        with batcher.on_the_way():  # decoded; a batch forming now waits for these images
            images = await read_images(request, limits)
            decoded = await asyncio.gather(*(decode(i, name, data) for i, (name, data) in enumerate(images)))
        names = [name for name, _ in images]
        del images  # the uploads' bytes: only the (3, S, S) arrays go on
    arrays, decode_ms = [x for x, _ in decoded], [ms for _, ms in decoded]
    if attention and model.network is not None:
        answers = []
        for x in arrays:  # one image a call: the attention graph is compiled for batch 1
            began = time.perf_counter()
            png, probs = await loop.run_in_executor(pools.model, model.attention, x)
            model_ms = round((time.perf_counter() - began) * 1000.0, 3)
            answers.append((probs, {"images": 1, "padded_to": 1, "model_ms": model_ms}, png_data_url(png)))
    else:
        batched = await asyncio.gather(*[batcher.submit(x) for x in arrays])
        answers = [(probs, {"images": b.images, "padded_to": b.padded_to, "model_ms": round(b.model_ms, 3)}, None)
                   for probs, b in batched]
    total_ms = round((time.perf_counter() - start) * 1000.0, 3)
    results = [{"name": name, "topk": top_k(probs, k, model.class_names), "batch": batch, "attention": overlay,
                "time_ms": {"decode": round(d, 3), "model": batch["model_ms"], "request": total_ms}}
               for name, (probs, batch, overlay), d in zip(names, answers, decode_ms)]
    return web.json_response({"results": results,
                              "attention_note": model.attention_note if attention else None})


async def start_batcher(app: web.Application) -> AsyncIterator[None]:
    """The batching coroutine for the life of the app; the threads shut down after it."""
    loop = asyncio.get_running_loop()
    in_model_thread = partial(loop.run_in_executor, app[POOLS].model)
    batcher = Batcher(app[MODEL].probabilities, app[MODEL].batch_sizes, app[SETTINGS].max_wait_ms / 1000.0,
                      in_model_thread)
    app[BATCHER] = batcher
    task = asyncio.create_task(batcher.serve_forever())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    app[POOLS].decode.shutdown(wait=False, cancel_futures=True)
    app[POOLS].model.shutdown(wait=True)


def build_app(model: ServedModel, settings: Settings, story: Optional[RunStory] = None) -> web.Application:
    app = web.Application(middlewares=[answers], client_max_size=settings.limits.max_body_bytes,
                          handler_args={"lingering_time": LINGER_S,  # a connection without a complete
                                        "keepalive_timeout": settings.limits.body_timeout_s})  # request: closed
    app[MODEL], app[SETTINGS], app[STORY] = model, settings, story
    app[PIXELS] = Budget(settings.decode_threads * settings.image_pixels(model))
    app[BODIES] = Budget(settings.limits.bodies_in_flight * settings.limits.max_body_bytes)
    app[POOLS] = Pools(ThreadPoolExecutor(1, thread_name_prefix="model"),
                       ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode"))
    app.cleanup_ctx.append(start_batcher)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, show_index=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/model", model_info)
    app.router.add_get("/v1/run", run_summary)
    app.router.add_get(r"/v1/run/{name:[a-z]+}.png", run_picture)
    app.router.add_post("/v1/predict", predict)
    return app
