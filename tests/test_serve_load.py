"""The server under load on loopback: concurrent streams, a full queue, visitors who leave,
and shutdown with answers in flight. A scripted backend stands in for the model, with a
delay per token so that requests overlap; every loop here is bounded in count and time."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx2 as httpx
import pytest
from test_serve_fakes import ANSWER, ScriptedBackend, fake_server, running_server, served

from minime.config import ServeConfig
from minime.serve import create_app

QUESTION = {"messages": [{"role": "user", "content": "Where does Mara work?"}], "stream": True}


async def _stream_once(client: httpx.AsyncClient, url: str) -> dict:
    """One streamed request: its status, Retry-After, text, finish reason and [DONE]."""
    async with client.stream("POST", f"{url}/v1/chat/completions", json=QUESTION) as response:
        result = {"status": response.status_code, "retry_after": None, "text": "", "done": False}
        result["finish_reason"] = None
        if response.status_code != 200:
            result["retry_after"] = response.headers.get("retry-after")
            result["error"] = json.loads(await response.aread())["error"]
            return result
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                result["done"] = True
                continue
            choice = json.loads(data)["choices"][0]
            result["text"] += choice["delta"].get("content", "")
            result["finish_reason"] = choice["finish_reason"] or result["finish_reason"]
        return result


async def _burst(url: str, n: int) -> list[dict]:
    limits = httpx.Limits(max_connections=n + 4)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(*(_stream_once(client, url) for _ in range(n)))


def test_8_then_32_concurrent_streams_complete_or_get_429():
    backend = ScriptedBackend(delay=0.05)  # about 0.5 s per answer
    # Admission counts each answer at its whole budget: 16 tokens (0.8 s) lets 9 fit in 60 s.
    config = ServeConfig(rate_limit=0, queue_size=8, max_tokens=16)
    with fake_server(backend, config) as url:
        start = time.monotonic()
        eight = asyncio.run(_burst(url, 8))
        thirty_two = asyncio.run(_burst(url, 32))
        elapsed = time.monotonic() - start
        health = httpx.get(f"{url}/healthz").json()

    assert [r["status"] for r in eight] == [200] * 8
    accepted = [r for r in eight + thirty_two if r["status"] == 200]
    refused = [r for r in thirty_two if r["status"] != 200]
    for result in accepted:  # every accepted stream got its whole answer, then [DONE]
        assert (result["text"], result["finish_reason"], result["done"]) == (ANSWER, "stop", True)
    assert 9 <= len(accepted) - 8 < 32
    for result in refused:
        assert result["status"] == 429
        assert result["error"]["code"] == "server_busy"
        assert int(result["retry_after"]) >= 1
    assert backend.most_active == 1  # one generation at a time on the one model
    assert backend.completed == len(accepted)
    assert health["status"] == "ok" and health["running"] == health["waiting"] == 0
    assert elapsed < 30


def test_a_visitor_who_leaves_frees_the_model_at_once():
    backend = ScriptedBackend(ANSWER * 40, delay=0.05)  # 400 tokens: 20 s if left running
    with fake_server(backend) as url, httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{url}/v1/chat/completions", json=QUESTION) as response:
            lines = response.iter_lines()
            while '"content": " works"' not in next(lines):
                pass
        left = time.monotonic()
        assert backend.stopped_early.wait(timeout=2)
        freed = time.monotonic() - left
        backend.answer = ANSWER
        answer = client.post(
            f"{url}/v1/chat/completions", json={**QUESTION, "stream": False}
        ).json()
    assert freed < 1.0
    assert answer["choices"][0]["message"]["content"] == ANSWER
    assert backend.completed == 1


def test_a_visitor_who_leaves_the_queue_frees_their_place():
    backend = ScriptedBackend(ANSWER * 6, delay=0.05)  # 3 s
    config = ServeConfig(rate_limit=0, queue_size=1)
    with fake_server(backend, config) as url, httpx.Client(timeout=30) as client:
        first = threading.Thread(
            target=client.post, args=(f"{url}/v1/chat/completions",), kwargs={"json": QUESTION}
        )
        first.start()
        while backend.active == 0:
            time.sleep(0.01)
        # A queued stream gets no status line until its turn: send it on a bare socket.
        body = json.dumps(QUESTION).encode()
        host, port = url.removeprefix("http://").split(":")
        queued = socket.create_connection((host, int(port)))
        queued.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        deadline = time.monotonic() + 2
        while client.get(f"{url}/healthz").json()["waiting"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        busy = client.post(f"{url}/v1/chat/completions", json=QUESTION)
        queued.close()
        deadline = time.monotonic() + 2
        while client.get(f"{url}/healthz").json()["waiting"] and time.monotonic() < deadline:
            time.sleep(0.02)
        health = client.get(f"{url}/healthz").json()
        first.join()
    assert busy.status_code == 429
    assert (health["running"], health["waiting"]) == (1, 0)
    assert len(backend.asked) == 1  # the visitor who left was never generated for


def test_shutdown_finishes_the_streams_in_flight():
    backend = ScriptedBackend(delay=0.1)  # 1 s
    app = create_app(served(backend), ServeConfig(rate_limit=0))
    with running_server(app) as (url, server), httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{url}/v1/chat/completions", json=QUESTION) as response:
            lines = response.iter_lines()
            next(lines)
            server.should_exit = True  # what uvicorn's SIGTERM handler does
            rest = list(lines)
        time.sleep(0.2)
        with pytest.raises(httpx.ConnectError):
            client.get(f"{url}/healthz")
    events = [line.removeprefix("data: ") for line in rest if line]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
    assert backend.completed == 1


def test_a_body_that_never_finishes_arriving_times_out():
    config = ServeConfig(rate_limit=0, request_timeout=0.5)

    def trickle():
        yield b'{"messages": ['
        time.sleep(2)
        yield b"]}"

    with fake_server(ScriptedBackend(), config) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions",
            content=trickle(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
    # Had the server waited for the whole body, it would have refused the empty list (400).
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "timeout"


def test_an_oversized_body_gets_413_on_a_real_connection():
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 2_000_000}]})
    headers = {"Content-Type": "application/json"}
    with fake_server(ScriptedBackend()) as url:
        response = httpx.post(f"{url}/v1/chat/completions", content=body, headers=headers)
        health = httpx.get(f"{url}/healthz")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert health.status_code == 200
