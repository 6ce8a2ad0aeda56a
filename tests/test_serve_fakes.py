"""Helpers shared by the serve tests (no tests here): a scripted backend and a server on
loopback in a thread."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn

from minime.backends import ChatBackend, Delta, SamplingParams, Usage
from minime.config import ServeConfig
from minime.serve import ServedModel, create_app

ANSWER = "Mara works at Verdant Loop, where she builds tiny models."


class ScriptedBackend(ChatBackend):
    """Answers with a fixed text (or `answer(messages)`), one word per token, sleeping
    `delay` seconds before each; records what it was asked and how generations ended."""

    name = "scripted"

    def __init__(
        self, answer: str | Callable[[list[dict]], str] = ANSWER, delay: float = 0.0
    ) -> None:
        self.answer = answer
        self.delay = delay
        self.asked: list[list[dict]] = []
        self.params: list[SamplingParams] = []
        self.active = 0
        self.most_active = 0
        self.stopped_early = threading.Event()
        self.completed = 0

    def stream(self, messages, params):
        self.asked.append(messages)
        self.params.append(params)
        text = self.answer(messages) if callable(self.answer) else self.answer
        pieces = re.findall(r"\s*\S+", text)
        finish_reason = "length" if len(pieces) > params.max_tokens else "stop"
        pieces = pieces[: params.max_tokens]
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        finished = False
        try:
            for piece in pieces:
                time.sleep(self.delay)
                yield Delta(text=piece)
            finished = True
            self.completed += 1
            yield Delta(text="", finish_reason=finish_reason, usage=Usage(7, len(pieces)))
        finally:
            self.active -= 1
            if not finished:
                self.stopped_early.set()


def served(
    backend: ChatBackend, system: str | None = None, title: str = "Mara Lind"
) -> ServedModel:
    """A ServedModel around a fake backend, with the default sampling settings."""
    params = SamplingParams(temperature=0.0, max_tokens=ServeConfig().max_tokens)
    return ServedModel("mara-test", backend, params, title=title, system=system)


@contextmanager
def running_server(app) -> Iterator[tuple[str, uvicorn.Server]]:
    """Serve `app` with uvicorn on a free loopback port; yields its base URL and server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@contextmanager
def fake_server(
    backend: ChatBackend, config: ServeConfig | None = None, **app_options
) -> Iterator[str]:
    """A running server around a fake backend; yields its base URL."""
    app = create_app(served(backend), config or ServeConfig(rate_limit=0), **app_options)
    with running_server(app) as (url, _):
        yield url
