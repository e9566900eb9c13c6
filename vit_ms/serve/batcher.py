"""Dynamic batching: images from concurrent requests gathered into one model call.

    batcher = Batcher(model.probabilities, sizes=[1, 2, 4, 8, 16], max_wait_s=0.005, run_in_model_thread)
    task = asyncio.create_task(batcher.serve_forever())
    with batcher.on_the_way():                   # around reading and decoding a request's images
        x = ...
    probs, stats = await batcher.submit(x)        # x (3, S, S) -> (C,) probabilities, BatchStats of its batch

One coroutine takes the first waiting image, then keeps taking images for up to `max_wait_s` or until
`sizes[-1]` are there, as long as more are on their way (requests being read or decoded): a lone request runs at
once instead of waiting for company that is not coming. It pads the stack with zero images up to the smallest compiled size that holds it (graph
mode compiles each shape once, at start) and runs the model in the model thread. While that call runs, new
images queue up, so under load the next batch is ready at once and full. `sizes=[1]` turns batching off: every
image is its own call (the baseline the load test compares against).
"""
import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, List, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class BatchStats:
    images: int  # real images in the model call
    padded_to: int  # the compiled batch size it ran at
    model_ms: float  # wall time of the model call


def pad_to(x: np.ndarray, size: int) -> np.ndarray:
    """(n, 3, S, S) -> (size, 3, S, S): zero images appended (their outputs are dropped)."""
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype)])


def smallest_fit(sizes: Sequence[int], n: int) -> int:
    return next(size for size in sizes if size >= n)


class Batcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], sizes: Sequence[int], max_wait_s: float,
                 in_model_thread: Callable[..., Awaitable]):
        """`run`: (B, 3, S, S) -> (B, C) for B in `sizes` (ascending); `in_model_thread(f, *args)` awaits f(*args)
        in the one thread that owns the model."""
        self.run, self.sizes, self.max_wait_s = run, list(sizes), max_wait_s
        self.in_model_thread = in_model_thread
        self.queue: "asyncio.Queue[Tuple[np.ndarray, asyncio.Future]]" = asyncio.Queue()
        self.calls = 0  # model calls made (the tests read how many images shared them)
        self.images = 0
        self.arriving = 0  # requests being read or decoded: their images are worth waiting for

    @property
    def max_batch(self) -> int:
        return self.sizes[-1]

    @contextlib.contextmanager
    def on_the_way(self):
        """Around reading and decoding one request: while any is inside, a batch waits (up to max_wait_s) for more."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    def submit(self, x: np.ndarray) -> "asyncio.Future":
        """Queue one (3, S, S) image; the future gives its (C,) probabilities and BatchStats once its batch ran."""
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((x, future))
        return future

    async def _gather(self) -> List[Tuple[np.ndarray, asyncio.Future]]:
        items = [await self.queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(items) < self.max_batch:
            if not self.queue.empty():
                items.append(self.queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not self.arriving:
                break
            try:
                items.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [(x, f) for x, f in items if not f.cancelled()]  # a client that went away: nothing to compute

    async def serve_forever(self) -> None:
        while True:
            items = await self._gather()
            if not items:
                continue
            size = smallest_fit(self.sizes, len(items))
            x = pad_to(np.stack([x for x, _ in items]).astype(np.float32, copy=False), size)  # (size, 3, S, S)
            start = time.perf_counter()
            try:
                probs = await self.in_model_thread(self.run, x)  # (size, C)
            except Exception as err:  # noqa: BLE001 - handed to every waiting request, which answers 500
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            stats = BatchStats(len(items), size, (time.perf_counter() - start) * 1000.0)
            self.calls += 1
            self.images += len(items)
            for i, (_, future) in enumerate(items):
                if not future.done():
                    future.set_result((probs[i], stats))
