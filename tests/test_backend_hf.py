"""The transformers backend, on a tiny random model built in the test (no download)."""

import numpy as np
import pytest
import torch

from minime.backends import SamplingParams, load_backend

from conftest import SPECIAL, WORDS

MESSAGES = [{"role": "system", "content": "mara works"}, {"role": "user", "content": "hello"}]


def test_full_logits_agree_with_logprobs(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir), keep_logits=True)
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=3)
    completion = backend.complete(MESSAGES, params)
    assert completion.logits.shape == (completion.usage.completion_tokens, len(SPECIAL + WORDS))
    for token, row in zip(completion.tokens, completion.logits, strict=True):
        logprobs = torch.log_softmax(torch.from_numpy(row), dim=-1)
        assert token.id == int(np.argmax(row))
        assert token.logprob == pytest.approx(float(logprobs[token.id]), abs=1e-5)
        assert [t.id for t in token.top] == torch.topk(logprobs, 3).indices.tolist()


def test_stream_matches_complete(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir))
    params = SamplingParams(temperature=0, max_tokens=5)
    whole = backend.complete(MESSAGES, params)
    deltas = list(backend.stream(MESSAGES, params))
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].usage.prompt_tokens == len(backend.prompt_tokens(MESSAGES))
    assert whole.usage.completion_tokens == 5 or whole.finish_reason == "stop"


def test_stops_on_eos(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir))
    with torch.no_grad():
        backend._model.lm_head.weight.zero_()  # every logit equal: greedy picks id 0, <eos>
    completion = backend.complete(MESSAGES, SamplingParams(temperature=0, max_tokens=5))
    assert completion.finish_reason == "stop"
    assert completion.text == ""


def test_sampling_with_a_seed_is_repeatable(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir))
    params = SamplingParams(temperature=1.0, top_k=5, top_p=0.9, max_tokens=8, seed=3)
    assert backend.complete(MESSAGES, params).text == backend.complete(MESSAGES, params).text


def test_shared_prefix_comes_from_the_kv_cache(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir), keep_logits=True)
    fresh = load_backend(str(tiny_model_dir), keep_logits=True)
    params = SamplingParams(temperature=0, max_tokens=4)
    first = backend.complete(MESSAGES, params)
    other = [MESSAGES[0], {"role": "user", "content": "world cat"}]
    second = backend.complete(other, params)
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == len(backend.prompt_tokens([MESSAGES[0]]))
    expected = fresh.complete(other, params)
    assert second.text == expected.text
    np.testing.assert_allclose(second.logits, expected.logits, rtol=1e-4, atol=1e-5)
    # The same prompt again: everything but its last token is reused.
    again = backend.complete(other, params)
    assert again.usage.cached_tokens == len(backend.prompt_tokens(other)) - 1
    np.testing.assert_allclose(again.logits, expected.logits, rtol=1e-4, atol=1e-5)
