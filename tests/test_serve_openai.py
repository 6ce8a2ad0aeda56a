"""The official `openai` client against the server: streamed and whole answers, errors;
with a scripted backend, then with the real bundled SmolLM2 GGUF."""

from __future__ import annotations

import json

import openai
import pytest
from test_serve_fakes import ANSWER, ScriptedBackend, fake_server, running_server

from minime.config import ServeConfig
from minime.serve import create_app, open_served_model

from conftest import bundled_model_path

MESSAGES = [{"role": "user", "content": "Where does Mara work?"}]


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_openai_client_whole_and_streamed():
    with fake_server(ScriptedBackend()) as url:
        client = openai_client(url)
        models = client.models.list()
        whole = client.chat.completions.create(model="mara", messages=MESSAGES)
        chunks = list(
            client.chat.completions.create(
                model="mara",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert [model.id for model in models.data] == ["mara-test"]
    assert whole.choices[0].message.content == ANSWER
    assert whole.choices[0].finish_reason == "stop"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (7, 10)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 10


def test_openai_client_sees_errors_as_its_exceptions():
    config = ServeConfig(rate_limit=1, rate_burst=1)
    with fake_server(ScriptedBackend(), config) as url:
        client = openai_client(url)
        with pytest.raises(openai.BadRequestError, match="Unrecognized request argument"):
            client.chat.completions.create(
                model="mara", messages=MESSAGES, extra_body={"frequency_boost": 1}
            )
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="mara", messages=MESSAGES)
    assert refused.value.response.headers["retry-after"]
    assert json.loads(refused.value.response.text)["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.integration
def test_openai_client_with_the_real_smollm2_gguf():
    path = bundled_model_path("smollm2-135m-instruct")
    config = ServeConfig(rate_limit=0, threads=1, n_ctx=512, max_tokens=24)
    served = open_served_model(path, config)
    try:
        with running_server(create_app(served, config)) as (url, _):
            client = openai_client(url)
            question = [{"role": "user", "content": "What is the capital of France?"}]
            whole = client.chat.completions.create(model="x", messages=question, temperature=0)
            stream = client.chat.completions.create(
                model="x",
                messages=question,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(stream)
            with pytest.raises(openai.BadRequestError) as too_long:
                client.chat.completions.create(
                    model="x", messages=[{"role": "user", "content": "word " * 400}] * 3
                )
    finally:
        served.backend.close()
    answer = whole.choices[0].message.content
    assert answer.strip()
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 5 and 0 < whole.usage.completion_tokens <= 24
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer  # greedy: the same answer, token by token
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert json.loads(too_long.value.response.text)["error"]["code"] == "context_length_exceeded"
