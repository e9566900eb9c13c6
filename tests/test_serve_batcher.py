"""vit_ms.serve.batcher: concurrent images gathered into one call, padded to a compiled size, answers routed back;
and vit_ms.serve.model.batch_sizes."""
import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pytest

from vit_ms.serve.batcher import Batcher, pad_to, smallest_fit
from vit_ms.serve.model import batch_sizes


def test_batch_sizes():
    assert batch_sizes(16) == [1, 2, 4, 8, 16]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]
    assert batch_sizes(1) == [1]
    assert batch_sizes(16, fixed=4) == [4]


def test_pad_and_fit():
    x = np.ones((3, 3, 2, 2), np.float32)
    padded = pad_to(x, 4)
    assert padded.shape == (4, 3, 2, 2) and padded[:3].min() == 1 and padded[3].max() == 0
    assert smallest_fit([1, 2, 4, 8], 3) == 4 and smallest_fit([1, 2, 4, 8], 8) == 8


class Recorder:
    """A model stand-in: row i's output is its first pixel times [1, 2], and every call's batch size is kept."""

    def __init__(self, fail: bool = False):
        self.shapes, self.fail = [], fail

    def __call__(self, x):
        self.shapes.append(x.shape[0])
        if self.fail:
            raise RuntimeError("model failed")
        return x[:, 0, 0, :1] * np.array([1.0, 2.0])  # (B, 2)


def run_batcher(recorder, values, sizes, max_wait_s=0.05):
    """Submit one image per value at once; returns the answers and the batcher."""
    async def main():
        pool = ThreadPoolExecutor(1)
        batcher = Batcher(recorder, sizes, max_wait_s, partial(asyncio.get_running_loop().run_in_executor, pool))
        task = asyncio.create_task(batcher.serve_forever())
        images = [np.full((1, 1, 1), v, np.float32) for v in values]
        answers = await asyncio.gather(*(batcher.submit(x) for x in images), return_exceptions=True)
        task.cancel()
        pool.shutdown()
        return answers, batcher

    return asyncio.run(main())


def test_concurrent_images_share_one_padded_call_and_get_their_own_answers():
    recorder = Recorder()
    answers, batcher = run_batcher(recorder, [1, 2, 3, 4, 5], sizes=[1, 2, 4, 8])
    assert recorder.shapes == [8]  # 5 images, padded to the compiled size 8, one call
    for value, (out, stats) in zip([1, 2, 3, 4, 5], answers):
        np.testing.assert_allclose(out, [value, 2 * value])
        assert (stats.images, stats.padded_to) == (5, 8)
    assert (batcher.calls, batcher.images) == (1, 5)


def test_more_images_than_the_largest_batch_take_several_calls():
    recorder = Recorder()
    answers, _ = run_batcher(recorder, list(range(1, 11)), sizes=[1, 2, 4])
    assert recorder.shapes == [4, 4, 2]
    assert [float(out[0]) for out, _ in answers] == list(range(1, 11))


def test_batch_size_one_is_one_call_per_image():
    recorder = Recorder()
    answers, batcher = run_batcher(recorder, [1, 2, 3], sizes=[1])
    assert recorder.shapes == [1, 1, 1] and batcher.calls == 3
    assert [float(out[1]) for out, _ in answers] == [2.0, 4.0, 6.0]


def test_a_failed_call_reaches_every_waiting_image():
    answers, _ = run_batcher(Recorder(fail=True), [1, 2], sizes=[1, 2])
    assert all(isinstance(a, RuntimeError) and str(a) == "model failed" for a in answers)


@pytest.mark.parametrize("wait", [0.0, 0.002])
def test_a_lone_image_does_not_wait_for_company_beyond_max_wait(wait):
    recorder = Recorder()
    answers, _ = run_batcher(recorder, [7], sizes=[1, 2, 4], max_wait_s=wait)
    assert recorder.shapes == [1] and float(answers[0][0][0]) == 7.0


@pytest.mark.parametrize("arriving", [True, False])
def test_a_batch_waits_only_for_images_on_their_way(arriving):
    """An image queued 20 ms after the first joins its batch only while a request is being read or decoded."""
    recorder = Recorder()

    async def main():
        pool = ThreadPoolExecutor(1)
        batcher = Batcher(recorder, [1, 2], 0.5, partial(asyncio.get_running_loop().run_in_executor, pool))
        task = asyncio.create_task(batcher.serve_forever())
        with batcher.on_the_way() if arriving else contextlib.nullcontext():
            first = batcher.submit(np.ones((1, 1, 1), np.float32))
            await asyncio.sleep(0.02)
            second = batcher.submit(np.ones((1, 1, 1), np.float32))
        await asyncio.gather(first, second)
        task.cancel()
        pool.shutdown()

    asyncio.run(main())
    assert recorder.shapes == ([2] if arriving else [1, 1])
