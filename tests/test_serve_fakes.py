"""Helpers shared by the serve tests (no tests here): a scripted backend, a server on
loopback in a thread, and the real server (`run_app`, as `minime serve` runs it) in a
subprocess around the scripted backend.

Run as a script, this file is that subprocess: `python test_serve_fakes.py JSON`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import uvicorn

from minime.backends import ChatBackend, Delta, SamplingParams, Usage
from minime.backends.base import common_prefix
from minime.config import ServeConfig
from minime.serve import ServedModel, create_app
from minime.serve.engine import Speed

ANSWER = "Mara works at Verdant Loop, where she builds tiny models."


class ScriptedBackend(ChatBackend):
    """Answers with a fixed text (or `answer(messages)`), one word per token, sleeping
    `delay` seconds before each; records what it was asked and how generations ended."""

    name = "scripted"

    def __init__(
        self,
        answer: str | Callable[[list[dict]], str] = ANSWER,
        delay: float = 0.0,
        prompt_delay: float = 0.0,
    ) -> None:
        self.answer = answer
        self.delay = delay
        self.prompt_delay = prompt_delay  # seconds per new prompt token before the first one
        self._cached: list[int] = []
        self.asked: list[list[dict]] = []
        self.params: list[SamplingParams] = []
        self.active = 0
        self.most_active = 0
        self.stopped_early = threading.Event()
        self.completed = 0

    def prompt_tokens(self, messages) -> list[int]:
        """One token per 4 bytes of UTF-8, as a real tokenizer (which refuses what UTF-8
        cannot hold: a lone surrogate raises UnicodeEncodeError)."""
        data = "".join(f"{m['role']}\n{m['content']}\n" for m in messages).encode("utf-8")
        return [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4)]

    def stream(self, messages, params):
        self.asked.append(messages)
        self.params.append(params)
        prompt = self.prompt_tokens(messages)
        # As llama.cpp's KV cache: only what follows the last prompt's shared prefix costs.
        time.sleep(self.prompt_delay * (len(prompt) - common_prefix(self._cached, prompt)))
        self._cached = prompt
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
    backend: ChatBackend,
    system: str | None = None,
    title: str = "Mara Lind",
    speed: Speed | None = None,
) -> ServedModel:
    """A ServedModel around a fake backend, with the default sampling settings; its speed
    for admission is the scripted backend's own unless `speed` says otherwise."""
    params = SamplingParams(temperature=0.0, max_tokens=ServeConfig().max_tokens)
    if speed is None and isinstance(backend, ScriptedBackend):
        speed = Speed(
            prompt=1 / backend.prompt_delay if backend.prompt_delay else 1e6,
            decode=1 / backend.delay if backend.delay else 1e6,
            overhead=0.01,
        )
    return ServedModel("mara-test", backend, params, title=title, system=system, speed=speed)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """The real server (`minime.serve.run.run_app`, uvicorn with minime's settings) in a
    subprocess on loopback, around a ScriptedBackend.

    :param config: ServeConfig fields (port is chosen here; rate_limit 0 unless given).
    :param backend: ScriptedBackend arguments (answer, delay, prompt_delay).
    :param run: run_app keyword arguments (max_connections, head_timeout).
    :param speed: Speed fields the server assumes, instead of the backend's own.
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        backend: dict[str, Any] | None = None,
        run: dict[str, Any] | None = None,
        speed: dict[str, Any] | None = None,
        request_log: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        spec = {
            "config": {"rate_limit": 0, **(config or {}), "port": self.port},
            "backend": backend or {},
            "run": run or {},
            "speed": speed,
            "request_log": str(request_log) if request_log else None,
        }
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, json.dumps(spec)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log = ""
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stdout.read()}")
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the server did not start: {self.log}") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; returns the exit status (the output is in `log`)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.log = self.process.stdout.read()
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _main(spec: dict[str, Any]) -> None:
    from minime.serve.run import run_app

    config = ServeConfig(**spec["config"])
    backend = ScriptedBackend(**spec["backend"])
    speed = Speed(**spec["speed"]) if spec["speed"] else None
    log = Path(spec["request_log"]) if spec["request_log"] else None
    app = create_app(served(backend, speed=speed), config, request_log=log)
    run_app(app, config, **spec["run"])


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
