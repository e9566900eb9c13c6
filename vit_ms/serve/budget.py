"""What the server holds in memory at once, counted: decoded pixels (vit_ms.serve.pixels) and request bodies.

    budget = Budget(total=2 * 512 ** 2)
    async with budget.hold(n):        # waits, in order of arrival, until n more fit under total
        ...
    budget.peak                       # the most held at once (GET /v1/model shows it)
"""
import asyncio
import collections
import contextlib
from typing import AsyncIterator, Deque, Tuple


class Budget:
    """A counting semaphore in any unit: `hold(n)` waits until n more fit under `total`. Waiters are served in
    order of arrival, so a large upload is not starved by a stream of small ones."""

    def __init__(self, total: int):
        self.total, self.held, self.peak = total, 0, 0  # peak: the most held at once (GET /v1/model)
        self._waiting: Deque[Tuple[int, asyncio.Future]] = collections.deque()

    @contextlib.asynccontextmanager
    async def hold(self, amount: int) -> AsyncIterator[None]:
        amount = min(amount, self.total)  # one request never needs more than the whole budget
        if not self._waiting and self.held + amount <= self.total:
            self._take(amount)
        else:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append((amount, turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # given its turn just as it was cancelled
                    self._release(amount)
                else:
                    self._waiting.remove((amount, turn))
                raise
        try:
            yield
        finally:
            self._release(amount)

    def _release(self, amount: int) -> None:
        self.held -= amount
        while self._waiting and self.held + self._waiting[0][0] <= self.total:
            wanted, turn = self._waiting.popleft()
            self._take(wanted)
            turn.set_result(None)

    def _take(self, amount: int) -> None:
        self.held += amount
        self.peak = max(self.peak, self.held)
