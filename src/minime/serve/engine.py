"""One model, many visitors: generations run one at a time, the rest wait in a bounded queue.

llama.cpp in process serves one sequence at a time on a CPU (extra parallel slots do not
raise throughput there, llama.cpp#10860), so requests take turns in arrival order. A
request is admitted only if it can be answered in full before its time runs out: the
work ahead of it (the rest of the running answer, then each queued request's new prompt
tokens and whole answer budget) plus its own, at the speeds measured on this model,
must fit in the time it has left. A request past the queue (`QueueFull`, 429) or one
that would not finish in time (`NotInTime`, 503) is refused at once, before any answer
starts; a visitor who goes away leaves the queue, or stops the generation between two
tokens.
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
from minime.backends.base import common_prefix

MARGIN = 1.25
"""Estimates are multiplied by this before admission (speed varies with machine load)."""
SLACK = 1.0
"""Seconds added to every estimate (event loop, HTTP, the last token's delivery)."""
CHARS_PER_TOKEN = 3.0
"""For a backend that cannot count prompt tokens: a cautious guess from the characters."""


class QueueFull(Exception):
    """Every place in the queue is taken."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class NotInTime(Exception):
    """The request could not be answered in full before its time runs out."""

    def __init__(self, needed: float, left: float, retry_after: int) -> None:
        super().__init__(
            f"the server cannot answer in time: the answer would take about {needed:.0f} s, "
            f"work ahead included, and the request has {max(0.0, left):.0f} s left; "
            f"retry in {retry_after} s"
        )
        self.retry_after = retry_after


class QueueTimeout(Exception):
    """The request's time ran out while it waited for its turn."""


@dataclass
class Speed:
    """How fast the model works, for admission; updated from every generation."""

    prompt: float = 200.0  # prompt tokens evaluated per second
    decode: float = 20.0  # answer tokens per second
    overhead: float = 0.05  # seconds per generation besides those

    def seconds(self, new_prompt_tokens: int, answer_tokens: int) -> float:
        """Estimated duration of one generation, without margin."""
        return self.overhead + new_prompt_tokens / self.prompt + answer_tokens / self.decode

    def learn(self, new_prompt_tokens: int, prompt_s: float, tokens: int, decode_s: float) -> None:
        """Blend one generation's measured speeds in (short ones measure too little)."""
        if new_prompt_tokens >= 32 and prompt_s > 0:
            self.prompt = 0.7 * self.prompt + 0.3 * new_prompt_tokens / prompt_s
        if tokens >= 8 and decode_s > 0:
            self.decode = 0.7 * self.decode + 0.3 * (tokens - 1) / decode_s


_END = object()


@dataclass
class Job:
    """One generation: its input, its deadline, and the deltas it produced so far."""

    messages: list[Message]
    params: SamplingParams
    deadline: float  # time.monotonic() after which the answer is cut
    prompt: list[int] | None = None  # the prompt's token ids, where the backend gives them
    prompt_count: int = 0
    new_prompt: int = 0  # prompt tokens expected to need evaluating (not in the KV cache)
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    started_at: float | None = None
    generated: int = 0
    first_token_at: float | None = None
    _events: asyncio.Queue = field(default_factory=asyncio.Queue)
    _admitted: asyncio.Future | None = None
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

    async def wait_turn(self) -> None:
        """Return once the generation has started; raise `QueueTimeout` or `NotInTime` if
        it never will (a streamed answer sends its 200 only after this)."""
        assert self._admitted is not None
        await asyncio.shield(self._admitted)

    def abandon(self) -> None:
        """The visitor left: leave the queue, or stop generating after the current token."""
        self.cancel.set()
        if not self.started and self._task is not None:
            self._task.cancel()


class Engine:
    """Runs generations on one backend, one at a time, in arrival order.

    Must be created and used inside the event loop that serves the requests.
    """

    def __init__(self, backend: ChatBackend, queue_size: int, speed: Speed | None = None) -> None:
        self.backend = backend
        self.capacity = queue_size + 1
        self.speed = speed or Speed()
        self.running = 0
        self.waiting = 0
        self._jobs: list[Job] = []  # running and waiting, in arrival order
        self._last_prompt: list[int] | None = None  # what the KV cache holds, roughly
        self._turn = asyncio.Lock()  # asyncio.Lock wakes its waiters first in, first out
        # One worker thread: the model is never entered by two generations at once, even
        # while an abandoned one is still finishing its current token.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minime-model")
        self._seconds = 2.0  # running mean of a generation's duration, for Retry-After

    def submit(
        self,
        messages: list[Message],
        params: SamplingParams,
        timeout: float,
        prompt: list[int] | None = None,
    ) -> Job:
        """Queue a generation and start it when its turn comes.

        :param prompt: the prompt's token ids (for the estimate), where known.
        :raises QueueFull: if `capacity` requests are already running or waiting.
        :raises NotInTime: if the work ahead and this answer would not fit in `timeout`.
        """
        if self.running + self.waiting >= self.capacity:
            raise QueueFull(self.retry_after())
        now = time.monotonic()
        job = Job(messages, params, now + timeout, prompt)
        if prompt is not None:
            job.prompt_count = len(prompt)
            before = self._jobs[-1].prompt if self._jobs else self._last_prompt
            job.new_prompt = len(prompt) - (common_prefix(before, prompt) if before else 0)
        else:
            chars = sum(len(message["content"]) for message in messages)
            job.prompt_count = job.new_prompt = math.ceil(chars / CHARS_PER_TOKEN)
        ahead = sum(self._remaining(other, now) for other in self._jobs)
        needed = self._with_margin(ahead + self._cost(job))
        if needed > timeout:
            # The queue drains by `ahead` seconds at most; past that, waiting will not help.
            drain = min(needed - timeout, ahead * MARGIN)
            raise NotInTime(needed, timeout, max(1, math.ceil(drain)))
        self._jobs.append(job)
        self.waiting += 1
        loop = asyncio.get_running_loop()
        job._admitted = loop.create_future()
        job._task = loop.create_task(self._run(job))
        return job

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely to be free: one generation."""
        return max(1, math.ceil(self._seconds))

    def _cost(self, job: Job) -> float:
        """Seconds the whole generation of `job` is expected to take."""
        return self.speed.seconds(job.new_prompt, job.params.max_tokens)

    def _remaining(self, job: Job, now: float) -> float:
        """Seconds `job` is expected to take from now: all of it if it has not started."""
        if job.started_at is None:
            return self._cost(job)
        if job.first_token_at is None:
            return max(self.speed.overhead, self._cost(job) - (now - job.started_at))
        return max(0, job.params.max_tokens - job.generated) / self.speed.decode

    @staticmethod
    def _with_margin(seconds: float) -> float:
        return seconds * MARGIN + SLACK

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        assert job._admitted is not None
        queued = True
        try:
            try:
                async with asyncio.timeout(max(0.0, job.deadline - time.monotonic())):
                    await self._turn.acquire()
            except TimeoutError:
                _refuse(job, QueueTimeout("the request timed out waiting for its turn"))
                return
            try:
                job.started = True
                self.waiting -= 1
                self.running += 1
                queued = False
                if job.cancel.is_set():
                    return
                # The answers ahead may have run slower than estimated: check again, while
                # the visitor can still be told with a 503 rather than a cut answer.
                start = time.monotonic()
                if job.prompt is not None and self._last_prompt is not None:
                    job.new_prompt = len(job.prompt) - common_prefix(self._last_prompt, job.prompt)
                needed = self._with_margin(self._cost(job))
                if needed > job.deadline - start:
                    _refuse(job, NotInTime(needed, job.deadline - start, self.retry_after()))
                    return
                job.started_at = start
                job._admitted.set_result(None)
                await loop.run_in_executor(self._worker, self._generate, job, loop)
                self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - start)
                if job.prompt is not None:
                    self._last_prompt = job.prompt
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
            if not job._admitted.done():
                _refuse(job, QueueTimeout("the request was abandoned"), answer=False)
            self._jobs.remove(job)
            job._events.put_nowait(_END)

    def _generate(self, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        """Run in the worker thread: iterate the backend's stream, checking between tokens
        whether the visitor left or the time ran out; measure the model's speed."""

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(job._events.put_nowait, item)
            except RuntimeError:  # the event loop has closed: nobody is listening
                job.cancel.set()

        stream = None
        start = time.monotonic()
        last = start
        try:
            stream = self.backend.stream(job.messages, job.params)
            for delta in stream:
                put(delta)
                if delta.text:
                    last = time.monotonic()
                    job.first_token_at = job.first_token_at or last
                    job.generated += 1
                if delta.usage and job.first_token_at is not None:
                    new = delta.usage.prompt_tokens - delta.usage.cached_tokens
                    self.speed.learn(
                        new, job.first_token_at - start, job.generated, last - job.first_token_at
                    )
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


def _refuse(job: Job, error: Exception, *, answer: bool = True) -> None:
    """Tell the request it will not be answered: through `wait_turn` and `deltas`."""
    assert job._admitted is not None
    job._admitted.set_exception(error)
    job._admitted.exception()  # marked as seen: a whole (non-streamed) answer never waits on it
    if answer:
        job._events.put_nowait(error)


def measure_speed(backend: ChatBackend) -> Speed:
    """Time one short generation (which also pages the weights in before the first
    visitor): the starting speeds for admission, cautious since a short prompt runs
    slower per token than a long one."""
    question = "Count from one to forty in words, separated by commas: one, two, three,"
    messages: list[Message] = [{"role": "user", "content": question}]
    params = SamplingParams(temperature=0.0, max_tokens=12)
    speed = Speed()
    start = time.monotonic()
    first = last = None
    tokens = 0
    for delta in backend.stream(messages, params):
        if delta.text:
            last = time.monotonic()
            first = first or last
            tokens += 1
        if delta.usage and first is not None:
            prompt_s = first - start
            new = delta.usage.prompt_tokens - delta.usage.cached_tokens
            if new >= 16 and prompt_s > 0:  # not when the prompt was already cached
                speed.prompt = new / prompt_s
            if tokens >= 4 and last > first:
                speed.decode = (tokens - 1) / (last - first)
    return speed
