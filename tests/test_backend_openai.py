"""The OpenAI-compatible backend against a scripted faulty server and a real llama.cpp server."""

import json
import socket
import subprocess
import sys
import time

import pytest

from minime.backends import SamplingParams, load_backend
from minime.backends.openai_http import OpenAIBackend
from minime.errors import BackendError

from conftest import Scripted, bundled_model_path, chat_completion_body

MESSAGES = [{"role": "user", "content": "Hi"}]
PARAMS = SamplingParams(temperature=0, max_tokens=8)


def test_retries_on_5xx_and_429_then_succeeds(scripted_server):
    scripted_server.replies = [
        Scripted(503, '{"error": "overloaded"}'),
        Scripted(429, '{"error": "slow down"}', headers={"Retry-After": "0"}),
        Scripted(200, chat_completion_body("Hello there")),
    ]
    backend = OpenAIBackend(scripted_server.url, "fake", max_retries=3)
    completion = backend.complete(MESSAGES, PARAMS)
    assert completion.text == "Hello there"
    assert completion.usage.prompt_tokens == 7
    assert len(scripted_server.requests) == 3
    assert scripted_server.requests[-1]["messages"] == MESSAGES
    assert scripted_server.requests[-1]["max_tokens"] == 8


def test_retries_after_a_dropped_connection(scripted_server):
    scripted_server.replies = [Scripted(drop=True), Scripted(200, chat_completion_body("ok"))]
    backend = OpenAIBackend(scripted_server.url, "fake", max_retries=2)
    assert backend.complete(MESSAGES, PARAMS).text == "ok"
    assert len(scripted_server.requests) == 2


def test_gives_up_with_the_status_and_body(scripted_server):
    scripted_server.replies = [Scripted(500, '{"error": "boom"}')] * 3
    backend = OpenAIBackend(scripted_server.url, "fake", max_retries=2)
    with pytest.raises(BackendError, match=r"HTTP 500: \{\"error\": \"boom\"\}"):
        backend.complete(MESSAGES, PARAMS)
    assert len(scripted_server.requests) == 3


def test_client_errors_are_not_retried(scripted_server):
    scripted_server.replies = [Scripted(400, '{"error": "bad model"}')]
    backend = OpenAIBackend(scripted_server.url, "fake", max_retries=3)
    with pytest.raises(BackendError, match="HTTP 400"):
        backend.complete(MESSAGES, PARAMS)
    assert len(scripted_server.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        '{"id": "x", "object": "chat.completion", "choices": []}',
        "not json at all",
        '{"choices": [{}]}',
    ],
)
def test_invalid_response_is_a_clear_error(scripted_server, body):
    scripted_server.replies = [Scripted(200, body)]
    backend = OpenAIBackend(scripted_server.url, "fake", max_retries=0)
    with pytest.raises(BackendError, match="invalid response"):
        backend.complete(MESSAGES, PARAMS)


def test_timeout(scripted_server):
    scripted_server.replies = [Scripted(200, chat_completion_body("late"), delay=2)]
    backend = OpenAIBackend(scripted_server.url, "fake", timeout=0.3, max_retries=0)
    with pytest.raises(BackendError, match="timed out"):
        backend.complete(MESSAGES, PARAMS)


def test_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "fake", max_retries=1)
    with pytest.raises(BackendError, match="cannot connect"):
        backend.complete(MESSAGES, PARAMS)


def test_streaming_and_logprobs(scripted_server):
    def chunk(content, finish=None, logprobs=None):
        choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
        if logprobs:
            choice["logprobs"] = {"content": logprobs}
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [choice],
        }

    top = [
        {
            "token": "Hel",
            "logprob": -0.1,
            "bytes": None,
            "top_logprobs": [
                {"token": "Hel", "logprob": -0.1, "bytes": None},
                {"token": "Hi", "logprob": -2.5, "bytes": None},
            ],
        }
    ]
    events = [
        chunk("Hel", logprobs=top),
        chunk("lo"),
        chunk("", "stop"),
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        },
    ]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    scripted_server.replies = [Scripted(200, body, headers={"Content-Type": "text/event-stream"})]
    backend = OpenAIBackend(scripted_server.url, "fake", max_retries=0)
    deltas = list(backend.stream(MESSAGES, PARAMS.model_copy(update={"logprobs": 2})))
    assert "".join(d.text for d in deltas) == "Hello"
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage.completion_tokens == 2
    first = deltas[0].tokens[0]
    assert first.token == "Hel" and [t.token for t in first.top] == ["Hel", "Hi"]
    request = scripted_server.requests[0]
    assert request["stream"] is True and request["top_logprobs"] == 2


def test_stream_without_finish_reason_is_an_error(scripted_server):
    body = (
        'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m",'
        '"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
    )
    scripted_server.replies = [Scripted(200, body, headers={"Content-Type": "text/event-stream"})]
    backend = OpenAIBackend(scripted_server.url, "fake", max_retries=0)
    with pytest.raises(BackendError, match="without a finish reason"):
        list(backend.stream(MESSAGES, PARAMS))


@pytest.fixture(scope="module")
def llama_server():
    """A real llama.cpp OpenAI-compatible server (llama_cpp.server) on loopback."""
    model = bundled_model_path("smollm2-135m-instruct")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--model_alias",
            "smollm2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("llama_cpp.server did not start")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.integration
def test_against_a_real_llama_cpp_server(llama_server):
    backend = load_backend(f"openai:smollm2@{llama_server}/v1")
    params = SamplingParams(temperature=0, max_tokens=16)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    completion = backend.complete(messages, params)
    assert completion.text.strip()
    assert completion.finish_reason in {"stop", "length"}
    assert completion.usage.completion_tokens > 0
    streamed = list(backend.stream(messages, params))
    assert "".join(d.text for d in streamed) == completion.text
    assert streamed[-1].finish_reason == completion.finish_reason
