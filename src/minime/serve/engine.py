"""One model, many visitors: generations run one at a time, the rest wait in a bounded queue.

llama.cpp in process serves one sequence at a time on a CPU (extra parallel slots do not
raise throughput there, llama.cpp#10860), so requests take turns in arrival order. A
request past the queue is refused at once (the server answers 429 with Retry-After)
rather than left waiting; a visitor who goes away leaves the queue, or stops the
generation between two tokens.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from minime.backends import ChatBackend, Delta, Message, SamplingParams


class QueueFull(Exception):
    """Every place in the queue is taken."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class QueueTimeout(Exception):
    """The request's time ran out while it waited for its turn."""


_END = object()


@dataclass
class Job:
    """One generation: its input, its deadline, and the deltas it produced so far."""

    messages: list[Message]
    params: SamplingParams
    deadline: float  # time.monotonic() after which the answer is cut
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    _events: asyncio.Queue = field(default_factory=asyncio.Queue)
    _task: asyncio.Task | None = None

    async def deltas(self) -> AsyncIterator[Delta]:
        """The answer as it is generated; raises what the generation raised."""
        while True:
            item = await self._events.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def abandon(self) -> None:
        """The visitor left: leave the queue, or stop generating after the current token."""
        self.cancel.set()
        if not self.started and self._task is not None:
            self._task.cancel()


class Engine:
    """Runs generations on one backend, one at a time, in arrival order.

    Must be created and used inside the event loop that serves the requests.
    """

    def __init__(self, backend: ChatBackend, queue_size: int) -> None:
        self.backend = backend
        self.capacity = queue_size + 1
        self.running = 0
        self.waiting = 0
        self._turn = asyncio.Lock()  # asyncio.Lock wakes its waiters first in, first out
        # One worker thread: the model is never entered by two generations at once, even
        # while an abandoned one is still finishing its current token.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minime-model")
        self._seconds = 2.0  # running mean of a generation's duration, for Retry-After

    def submit(self, messages: list[Message], params: SamplingParams, timeout: float) -> Job:
        """Queue a generation and start it when its turn comes.

        :raises QueueFull: if `capacity` requests are already running or waiting.
        """
        if self.running + self.waiting >= self.capacity:
            raise QueueFull(self.retry_after())
        job = Job(messages, params, time.monotonic() + timeout)
        self.waiting += 1
        job._task = asyncio.get_running_loop().create_task(self._run(job))
        return job

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely to be free: one generation."""
        return max(1, math.ceil(self._seconds))

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        queued = True
        try:
            try:
                async with asyncio.timeout(max(0.0, job.deadline - time.monotonic())):
                    await self._turn.acquire()
            except TimeoutError:
                job._events.put_nowait(QueueTimeout("the request timed out waiting for its turn"))
                return
            try:
                job.started = True
                self.waiting -= 1
                self.running += 1
                queued = False
                if job.cancel.is_set():
                    return
                start = time.monotonic()
                await loop.run_in_executor(self._worker, self._generate, job, loop)
                self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - start)
            finally:
                self.running -= 1
                self._turn.release()
        except asyncio.CancelledError:
            pass  # abandoned while waiting: nothing ran
        except Exception as exc:  # the worker is gone (shutdown): tell the request
            job._events.put_nowait(exc)
        finally:
            if queued:
                self.waiting -= 1
            job._events.put_nowait(_END)

    def _generate(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        """Run in the worker thread: iterate the backend's stream, checking between tokens
        whether the visitor left or the time ran out."""

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(job._events.put_nowait, item)
            except RuntimeError:  # the event loop has closed: nobody is listening
                job.cancel.set()

        stream = None
        try:
            stream = self.backend.stream(job.messages, job.params)
            for delta in stream:
                put(delta)
                if job.cancel.is_set():
                    return
                if time.monotonic() > job.deadline and not delta.finish_reason:
                    put(Delta(text="", finish_reason="length"))
                    return
        except Exception as exc:  # shown to the visitor as an error, not a crash
            put(exc)
        finally:
            if stream is not None:
                stream.close()  # frees the model: the backend's generator ends here

    def close(self) -> None:
        """Stop the worker thread once the generation in progress ends."""
        self._worker.shutdown(wait=True, cancel_futures=True)
