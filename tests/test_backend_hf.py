"""The transformers backend, on a tiny random model built in the test (no download)."""

import numpy as np
import pytest
import torch

from minime.backends import SamplingParams, load_backend

WORDS = ["hello", "world", "mara", "works", "at", "verdant", "loop", "yes", "no", "cat"]
SPECIAL = ["<eos>", "<unk>", "<pad>", "<system>", "<user>", "<assistant>"]
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny")
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=0,
        pad_token_id=2,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


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
