"""The server under hostile or careless traffic, run as `minime serve` runs it: uvicorn
with minime's settings in a subprocess on loopback (Starlette's test client skips
uvicorn, so it cannot see its header handling, framing or connection limits). A
scripted backend stands in for the model; the real one is in test_serve_real.py."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import httpx2 as httpx
import pytest
from test_serve_fakes import ANSWER, ServerProcess

QUESTION = {"role": "user", "content": "Where does Mara work?"}


def long_question(n: int) -> dict:
    """A 1,990-character question, each one different from its first words on."""
    return {"role": "user", "content": (f"{n}: tell me about Mara's work and life. " * 56)[:1990]}


def ask(url: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60, **kwargs)


async def _stream(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """One streamed request: status, Retry-After, text, finish reason, in-stream errors."""
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        result = {"status": response.status_code, "retry_after": None, "text": "", "done": False}
        result.update(finish_reason=None, errors=[], usage=None)
        if response.status_code != 200:
            result["retry_after"] = response.headers.get("retry-after")
            result["error"] = json.loads(await response.aread())["error"]
            return result
        async for line in response.aiter_lines():
            data = line.removeprefix("data: ")
            if not line.startswith("data: "):
                continue
            if data == "[DONE]":
                result["done"] = True
                continue
            event = json.loads(data)
            if "error" in event:
                result["errors"].append(event["error"])
                continue
            if event.get("usage"):
                result["usage"] = event["usage"]
                continue
            choice = event["choices"][0]
            result["text"] += choice["delta"].get("content", "")
            result["finish_reason"] = choice["finish_reason"] or result["finish_reason"]
        return result


def burst(url: str, bodies: list[dict]) -> list[dict]:
    async def run() -> list[dict]:
        limits = httpx.Limits(max_connections=len(bodies) + 4)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            return await asyncio.gather(*(_stream(client, url, body) for body in bodies))

    return asyncio.run(run())


def test_forwarded_for_cannot_dodge_the_rate_limit(tmp_path):
    log = tmp_path / "requests.jsonl"
    # The defaults: 30 a minute, 10 at once, forwarded_proxies 0.
    with ServerProcess(config={"rate_limit": 30}, request_log=log) as server:
        codes = [
            ask(
                server.url,
                {"messages": [QUESTION]},
                headers={"X-Forwarded-For": f"192.0.2.{i}"},
            ).status_code
            for i in range(20)
        ]
    # A burst of 10, then about one more per 2 s refilled while the 20 go out.
    assert 10 <= codes.count(200) <= 12 and codes.count(429) == 20 - codes.count(200)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == codes.count(200) and len({line["client"] for line in lines}) == 1


def test_only_requests_that_can_finish_in_time_are_admitted():
    # Scaled down from the field report: 9 long questions of about 500 prompt tokens at
    # 4 ms each (2 s) and 20-token answers at 50 ms (1 s), against 10 s: 3 fit.
    config = {"request_timeout": 10, "max_tokens": 20}
    backend = {"delay": 0.05, "prompt_delay": 0.004}
    with ServerProcess(config=config, backend=backend) as server:
        start = time.monotonic()
        bodies = [{"messages": [long_question(n)], "stream": True} for n in range(9)]
        results = burst(server.url, bodies)
        elapsed = time.monotonic() - start
        health = httpx.get(f"{server.url}/healthz").json()
    accepted = [r for r in results if r["status"] == 200]
    refused = [r for r in results if r["status"] != 200]
    assert 1 <= len(accepted) <= 4, results
    for result in accepted:  # each answered in full, no in-stream error, no empty 200
        assert (result["text"], result["finish_reason"], result["done"]) == (ANSWER, "stop", True)
        assert result["errors"] == []
    for result in refused:
        assert result["status"] == 503 and result["error"]["code"] == "timeout"
        assert int(result["retry_after"]) >= 1
        assert "cannot answer in time" in result["error"]["message"]
    assert elapsed < 15
    assert health["running"] == health["waiting"] == 0


def test_a_lone_surrogate_is_a_400():
    with ServerProcess() as server:
        # json.dumps escapes it as JSON allows: "Hi \\ud800"
        body = json.dumps({"messages": [{"role": "user", "content": "Hi \ud800"}]})
        response = httpx.post(
            f"{server.url}/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "messages.0.content" and "surrogate" in error["message"]


def test_an_answer_cut_by_the_time_limit_reports_its_prompt_tokens():
    # The server believes the model fast (so admits), but it is slow: the limit cuts it.
    config = {"request_timeout": 1.5}
    speed = {"prompt": 1e6, "decode": 1e4, "overhead": 0.0}
    with ServerProcess(config=config, backend={"delay": 0.4}, speed=speed) as server:
        whole = ask(server.url, {"messages": [QUESTION]}).json()
        streamed = burst(
            server.url,
            [{"messages": [QUESTION], "stream": True, "stream_options": {"include_usage": True}}],
        )
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["prompt_tokens"] > 0
    assert streamed[0]["finish_reason"] == "length"
    usage = streamed[0]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_idle_and_slow_connections_are_closed_and_bounded():
    run = {"max_connections": 8, "head_timeout": 1.0}
    with ServerProcess(run=run) as server:
        idle = [_connect(server.port) for _ in range(8)]
        slow = idle[0]
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")  # a head that never ends
        time.sleep(0.2)
        extra = _connect(server.port)
        refused = extra.recv(4096)
        assert _closed_within(extra, 2)
        assert all(_closed_within(sock, 3) for sock in idle)  # after the head timeout
        after = httpx.get(f"{server.url}/healthz")
        # Keep-alive: a second request whose head never ends is closed too.
        again = _connect(server.port)
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
        assert _closed_within(again, 3)
        for sock in [*idle, extra, again]:
            sock.close()
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert after.status_code == 200


def test_content_length_with_transfer_encoding_is_refused_and_closed():
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + hidden
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + body
    )
    with ServerProcess() as server:
        sock = _connect(server.port)
        sock.sendall(request)
        sock.settimeout(5)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
        sock.close()
    assert received.startswith(b"HTTP/1.1 400 ")
    assert received.count(b"HTTP/1.1 ") == 1  # the hidden request was not served
    assert b'"object":"list"' not in received


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": "16"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"temperature": "0.5"}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
    ],
)
def test_loosely_typed_fields_are_refused(extra, param, shared_server):
    response = ask(shared_server.url, {"messages": [QUESTION], **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.fixture(scope="module")
def shared_server():
    with ServerProcess() as server:
        yield server


def test_neutral_penalties_and_four_stops_are_accepted(shared_server):
    body = {
        "messages": [QUESTION],
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "stop": ["a1", "b2", "c3", "d4"],
    }
    response = ask(shared_server.url, body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == ANSWER


def test_only_json_bodies_are_read(shared_server):
    body = json.dumps({"messages": [QUESTION]})
    url = f"{shared_server.url}/v1/chat/completions"
    plain = httpx.post(url, content=body, headers={"Content-Type": "text/plain"})
    missing = httpx.post(url, content=body)
    charset = httpx.post(
        url, content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert plain.status_code == 415 and missing.status_code == 415
    assert plain.json()["error"]["code"] == "unsupported_media_type"
    assert charset.status_code == 200


def test_the_host_header_is_never_echoed(shared_server):
    response = httpx.get(f"{shared_server.url}/healthz/", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert "evil.example" not in response.text


def test_sigterm_exits_0_and_logs_the_streams_it_cut(tmp_path):
    log = tmp_path / "requests.jsonl"
    config = {"shutdown_timeout": 0.5}
    server = ServerProcess(
        config=config, backend={"answer": ANSWER * 20, "delay": 0.1}, request_log=log
    )
    try:
        with httpx.Client(timeout=30) as client:
            body = {"messages": [QUESTION], "stream": True}
            with client.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
                lines = response.iter_lines()
                while '"content": " works"' not in next(lines):
                    pass
                server.process.send_signal(signal.SIGTERM)
                try:
                    for _ in lines:
                        pass
                except httpx.TransportError:
                    pass  # the server closed the stream it cut
        code = server.process.wait(timeout=20)
    finally:
        server.stop()
    assert code == 0, server.log
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["finish_reason"] == "shutdown" and lines[0]["completion_tokens"] >= 2
