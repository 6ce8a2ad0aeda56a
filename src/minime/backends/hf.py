"""Hugging Face transformers in process, with the full logits of every generated token."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

from minime.backends._stops import StopStringFilter
from minime.backends._template import plain_runs, prompt_parts, split_markers
from minime.backends.base import (
    ChatBackend,
    Delta,
    Message,
    SamplingParams,
    TokenLogprobs,
    TopLogprob,
    Usage,
    common_prefix,
)
from minime.errors import BackendError


class HFBackend(ChatBackend):
    """A transformers causal LM; `keep_logits` adds each step's full logits to the deltas.

    The decode loop is written here rather than calling `generate()`: `generate` hands out
    raw logits only once it has finished, while streaming and full-logit distillation need
    each step's logits as it is produced.
    """

    def __init__(
        self,
        path: Path,
        *,
        chat_template: str | None = None,
        keep_logits: bool = False,
        dtype: str = "float32",
        name: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name or str(path)
        self.keep_logits = keep_logits
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        if chat_template:
            self._tokenizer.chat_template = chat_template
        if not self._tokenizer.chat_template:
            raise BackendError(f"{path}: the tokenizer has no chat template")
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        self._model.eval()
        self._stop_ids = _end_of_turn_ids(self._model, self._tokenizer)
        self._lock = threading.Lock()
        # The KV cache of the last call and the tokens in it: a prompt that starts the same
        # way (the system prompt with the profile) only runs the model on the rest.
        self._cache = None
        self._cached_tokens: list[int] = []

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        """Token ids of the chat prompt that ends where the assistant's answer begins.

        Only the template's own markers become special tokens: the messages' text is
        tokenized with special tokens split (as plain text), so `<|im_start|>` typed by a
        visitor cannot open a turn of its own.
        """
        tokenizer = self._tokenizer

        def render(conversation: list[Message]) -> str:
            return tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=False
            )

        pattern = self._marker_pattern()
        pieces: list[tuple[str, bool]] = []
        for text, is_message in prompt_parts(render, messages):
            if is_message or pattern is None:
                pieces.append((text, False))
            else:
                pieces.extend(split_markers(text, pattern.findall(text)))
        ids: list[int] = []
        for text, is_marker in plain_runs(pieces):
            if is_marker:
                ids.append(tokenizer.convert_tokens_to_ids(text))
            else:
                encoded = tokenizer(text, add_special_tokens=False, split_special_tokens=True)
                ids.extend(encoded["input_ids"])
        return ids

    def _marker_pattern(self) -> re.Pattern[str] | None:
        """The tokenizer's added tokens (which it parses out of any text), longest first,
        as one pattern; built once (Gemma's tokenizer has thousands)."""
        if not hasattr(self, "_markers"):
            added = sorted(self._tokenizer.added_tokens_encoder, key=len, reverse=True)
            self._markers = re.compile("|".join(map(re.escape, added))) if added else None
        return self._markers

    def stream(self, messages: list[Message], params: SamplingParams) -> Iterator[Delta]:
        """Generate an answer token by token (see ChatBackend.stream)."""
        torch = self._torch
        from transformers import DynamicCache

        prompt = self.prompt_tokens(messages)
        generator = torch.Generator().manual_seed(params.seed or 0)
        stops = StopStringFilter(params.stop)
        generated: list[int] = []
        emitted = ""
        finish_reason = "length"
        with self._lock, torch.inference_mode():
            # Feed at least one prompt token: its logits give the first answer token.
            cached = min(common_prefix(self._cached_tokens, prompt), len(prompt) - 1)
            if self._cache is not None and cached > 0:
                cache = self._cache
                cache.crop(cached - len(self._cached_tokens))  # a negative count drops the tail
            else:
                cache, cached = DynamicCache(), 0
            self._cache, self._cached_tokens = None, []  # until the cache matches again
            fed = prompt[:cached]
            inputs = torch.tensor([prompt[cached:]])
            for _ in range(params.max_tokens):
                logits = self._model(input_ids=inputs, past_key_values=cache, use_cache=True)
                fed += inputs[0].tolist()
                self._cache, self._cached_tokens = cache, fed
                step_logits = logits.logits[0, -1].float()
                token = _sample(step_logits, params, generator)
                if token in self._stop_ids:
                    finish_reason = "stop"
                    break
                generated.append(token)
                # Decode the whole answer each step so multi-token characters come out whole.
                full = self._tokenizer.decode(generated, skip_special_tokens=True)
                new_text = full[len(emitted) :] if not full.endswith("\ufffd") else ""
                emitted += new_text
                logprobs = torch.log_softmax(step_logits, dim=-1)
                text = stops.feed(new_text)
                yield Delta(
                    text=text,
                    tokens=(self._token_info(token, logprobs, params.logprobs),),
                    logits=step_logits.numpy().copy() if self.keep_logits else None,
                )
                if stops.stopped:
                    finish_reason = "stop"
                    break
                inputs = torch.tensor([[token]])
        tail = "" if stops.stopped else stops.flush()
        yield Delta(
            text=tail,
            finish_reason=finish_reason,
            usage=Usage(len(prompt), len(generated), cached),
        )

    def _token_info(self, token: int, logprobs, k: int) -> TokenLogprobs:
        top: tuple[TopLogprob, ...] = ()
        if k:
            values, ids = self._torch.topk(logprobs, k)
            top = tuple(
                TopLogprob(self._tokenizer.decode([int(i)]), float(v), int(i))
                for v, i in zip(values, ids, strict=True)
            )
        return TokenLogprobs(self._tokenizer.decode([token]), float(logprobs[token]), token, top)


def _sample(logits, params: SamplingParams, generator) -> int:
    """Pick the next token with transformers' own temperature/top-k/top-p warpers."""
    import torch
    from transformers import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    if params.temperature == 0:
        return int(torch.argmax(logits))
    warpers = LogitsProcessorList([TemperatureLogitsWarper(params.temperature)])
    if params.top_k:
        warpers.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1:
        warpers.append(TopPLogitsWarper(params.top_p))
    scores = warpers(None, logits[None, :])
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs[0], 1, generator=generator))


def _end_of_turn_ids(model, tokenizer) -> set[int]:
    """Every id that ends an assistant turn: the EOS ids of the generation config and tokenizer."""
    ids: set[int] = set()
    for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    for marker in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>"):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    if not ids:
        raise BackendError(f"{tokenizer.name_or_path}: no EOS token id: the model could not stop")
    return ids
