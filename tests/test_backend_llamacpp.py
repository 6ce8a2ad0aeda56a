"""The in-process llama.cpp backend, on the real bundled SmolLM2 GGUF."""

import math

import pytest

from minime.backends import SamplingParams
from minime.errors import BackendError

pytestmark = pytest.mark.integration

SYSTEM = {"role": "system", "content": "You are a helpful assistant. " * 20}
GREEDY = SamplingParams(temperature=0, max_tokens=24)


def ask(text):
    return [SYSTEM, {"role": "user", "content": text}]


def test_complete_returns_text_usage_and_logprobs(smollm2_backend):
    params = GREEDY.model_copy(update={"logprobs": 5})
    completion = smollm2_backend.complete(ask("What is the capital of France?"), params)
    assert "Paris" in completion.text
    assert completion.finish_reason in {"stop", "length"}
    assert completion.usage.completion_tokens == len(completion.tokens) > 0
    for token in completion.tokens:
        assert len(token.top) == 5
        logprobs = [t.logprob for t in token.top]
        assert logprobs == sorted(logprobs, reverse=True)
        assert all(lp <= 0 for lp in logprobs)
        assert sum(math.exp(lp) for lp in logprobs) <= 1.0001
        # Greedy decoding picks the most likely token.
        assert token.id == token.top[0].id
        assert token.logprob == pytest.approx(token.top[0].logprob)


def test_stream_matches_complete(smollm2_backend):
    messages = ask("Name three colours.")
    whole = smollm2_backend.complete(messages, GREEDY)
    deltas = list(smollm2_backend.stream(messages, GREEDY))
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].finish_reason == whole.finish_reason
    assert sum(1 for d in deltas if d.text) > 1


def test_shared_prefix_is_not_evaluated_twice(smollm2_backend):
    first = smollm2_backend.complete(ask("Say hello."), GREEDY)
    second = smollm2_backend.complete(ask("Say goodbye."), GREEDY)
    system_tokens = len(smollm2_backend.prompt_tokens([SYSTEM]))
    assert second.usage.cached_tokens >= system_tokens - 2
    assert second.usage.prompt_tokens - second.usage.cached_tokens < 20
    assert first.usage.prompt_tokens > system_tokens


def test_stops_at_end_of_turn(smollm2_backend):
    params = SamplingParams(temperature=0, max_tokens=200)
    messages = [{"role": "user", "content": "Reply with just the word yes."}]
    completion = smollm2_backend.complete(messages, params)
    assert completion.finish_reason == "stop"
    assert completion.usage.completion_tokens < 200
    assert "<|im_end|>" not in completion.text


def test_max_tokens_gives_finish_reason_length(smollm2_backend):
    params = SamplingParams(temperature=0, max_tokens=3)
    completion = smollm2_backend.complete(ask("Write a long story about a dragon."), params)
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_stop_strings_cut_the_answer(smollm2_backend):
    params = SamplingParams(temperature=0, max_tokens=40, stop=["3"])
    completion = smollm2_backend.complete(ask("Count from 1 to 5, separated by commas."), params)
    assert completion.finish_reason == "stop"
    assert "3" not in completion.text and "2" in completion.text


def test_prompt_longer_than_context_is_an_error(smollm2_backend):
    with pytest.raises(BackendError, match="more than the context window"):
        smollm2_backend.complete(ask("word " * 5000), GREEDY)


def test_sampling_is_repeatable_with_a_seed(smollm2_backend):
    params = SamplingParams(temperature=1.0, max_tokens=12, seed=7)
    messages = ask("Invent a name for a cat.")
    assert smollm2_backend.complete(messages, params).text == (
        smollm2_backend.complete(messages, params).text
    )
