"""The server's in-flight budget (vit_ms.serve.budget): never over its total, in order of arrival, a cancelled
waiter gives its place back."""
import asyncio

from vit_ms.serve.budget import Budget


def test_budget_never_holds_more_than_its_total_and_serves_in_order():
    async def scenario():
        budget, order = Budget(100), []

        async def job(name, pixels, seconds):
            async with budget.hold(pixels):
                assert budget.held <= budget.total
                order.append(name)
                await asyncio.sleep(seconds)

        first = asyncio.create_task(job("a 60", 60, 0.05))
        await asyncio.sleep(0)
        big = asyncio.create_task(job("b 90", 90, 0.01))  # waits for "a"
        await asyncio.sleep(0)
        small = asyncio.create_task(job("c 10", 10, 0.01))  # would fit beside "a", but "b" came first
        await asyncio.gather(first, big, small)
        huge = asyncio.create_task(job("d 500", 500, 0))  # more than the whole budget: takes all of it
        await huge
        return budget, order

    budget, order = asyncio.run(scenario())
    assert order == ["a 60", "b 90", "c 10", "d 500"]
    assert budget.held == 0 and budget.peak == 100


def test_a_cancelled_waiter_gives_its_place_back():
    async def scenario():
        budget = Budget(10)
        async with budget.hold(10):
            waiter = asyncio.create_task(budget.hold(5).__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        async with budget.hold(10):  # nobody is left in the queue or holding pixels
            held = budget.held
        return budget, held

    budget, held = asyncio.run(scenario())
    assert held == 10 and budget.held == 0
