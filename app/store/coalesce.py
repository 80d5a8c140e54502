"""Auto-pipelining: calls that concurrent requests make while others are on the way are sent
together, as ioredis' `enableAutoPipelining` and Lettuce do.

A call made while no other call is on the way is sent at once by its caller: under light load
nothing changes (waiting for the loop's next turn would cost an idle loop tens of µs). A call
made while one is on the way joins a batch; the batch's first call starts the task that sends
it, whose first step runs in the loop's next iteration (create_task schedules it with
call_soon), so every call made in this iteration joins the batch and none waits for a timer.
Each caller gets its own outcome; a caller that goes away while waiting (cancelled) leaves the
batch and the other callers as they were.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

C = TypeVar("C")  # a call as queued
R = TypeVar("R")  # its result

# Sends one call: its result, or its exception raised.
One = Callable[[C], Awaitable[R]]
# Sends a batch of several: each call's result or its own exception, in call order; raises for a
# failure of the whole batch (a connection error, a timeout), which every call of it gets.
Many = Callable[[list[C]], Awaitable[list[R | Exception]]]


class Coalescer(Generic[C, R]):
    def __init__(self, one: One[C, R], many: Many[C, R], most: int) -> None:
        self._one, self._many = one, many
        self._most = most  # calls per batch: more start the next one
        self._sending = 0  # calls and batches on the way
        self._open: list[tuple[C, asyncio.Future[R]]] | None = None  # the batch calls join
        # The batches' tasks: the loop keeps only a weak reference to a task.
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, call: C) -> R:
        if not self._sending and self._open is None:
            self._sending += 1
            try:
                return await self._one(call)
            finally:
                self._sending -= 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._open is None or len(self._open) == self._most:
            self._open = []
            task = loop.create_task(self._flush(self._open))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._open.append((call, future))
        return await future

    async def _flush(self, batch: list[tuple[C, asyncio.Future[R]]]) -> None:
        if self._open is batch:
            self._open = None
        # a caller cancelled before the batch is sent is not sent for
        batch = [(call, future) for call, future in batch if not future.cancelled()]
        if not batch:
            return
        calls = [call for call, _ in batch]
        outcomes: list[R | Exception]
        self._sending += 1
        try:
            outcomes = (await self._many(calls) if len(calls) > 1
                        else [await self._one(calls[0])])
        except Exception as exc:
            outcomes = [exc] * len(batch)
        except asyncio.CancelledError:
            # this task cancelled (a cancelled `drain`, the loop shutting down): so are its
            # callers
            for _, future in batch:
                future.cancel()
            raise
        finally:
            self._sending -= 1
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller went away
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def drain(self) -> None:
        """Wait until every batch queued so far, and any queued meanwhile, is answered."""
        while self._tasks:
            await asyncio.gather(*self._tasks)
