"""llama.cpp in process, through llama-cpp-python."""

from __future__ import annotations

import codecs
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

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


def all_cores(n_threads: int | None) -> int:
    """`n_threads`, or every core when None: llama-cpp-python's own default for None is half
    the cores (`cpu_count() // 2`), one of the two on a small machine."""
    return n_threads or os.cpu_count() or 1


class LlamaCppBackend(ChatBackend):
    """A GGUF model run by llama.cpp, with the KV cache of a shared prompt prefix reused.

    Consecutive requests that share a prefix (the system prompt with the profile) only
    evaluate the tokens after it: llama-cpp-python's `generate` keeps the KV cache of the
    longest common prefix with the previous call.
    """

    def __init__(
        self,
        path: Path,
        *,
        chat_template: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = name or str(path)
        threads = all_cores(n_threads)
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=seed,
                verbose=False,
            )
        except ValueError as exc:
            raise BackendError(f"{path}: llama.cpp could not load this GGUF: {exc}") from exc
        template = chat_template or self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(
                f"{path}: the GGUF has no chat template (tokenizer.chat_template); "
                "use an instruct model or one exported by minime"
            )
        vocab = self._llm._model
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(self._llm.token_eos()),
            bos_token=vocab.token_get_text(self._llm.token_bos()),
        )
        self._lock = threading.Lock()

    @property
    def n_ctx(self) -> int:
        """The context window in tokens."""
        return self._llm.n_ctx()

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        """Token ids of the chat prompt that ends where the assistant's answer begins.

        Only the template's own markers become control tokens: the messages' text is
        tokenized as plain text, so `<|im_start|>` typed by a visitor stays those
        characters and cannot open a turn of its own.
        """

        def render(conversation: list[Message]) -> str:
            return self._formatter(messages=conversation).prompt

        try:
            parts = prompt_parts(render, messages)
        except Exception as exc:  # jinja2 raises many types, all mean a bad conversation
            raise BackendError(f"{self.name}: chat template rejected the messages: {exc}") from exc
        pieces: list[tuple[str, bool]] = []
        for text, is_message in parts:
            pieces.extend([(text, False)] if is_message else self._split_control(text))
        ids: list[int] = []
        for text, is_marker in plain_runs(pieces):
            if is_marker:
                ids.extend(self._tokenize(text, special=True))
            else:
                ids.extend(self._tokenize(text, special=False))
        return ids

    def _tokenize(self, text: str, *, special: bool) -> list[int]:
        # The template writes any BOS itself, so the tokenizer must not add a second one.
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 text holds one
            raise BackendError(f"{self.name}: the messages are not valid Unicode: {exc}") from None
        return self._llm.tokenize(data, add_bos=False, special=special)

    def _split_control(self, text: str) -> list[tuple[str, bool]]:
        """The template's text as (piece, is_control_token) parts, split where llama.cpp
        would parse a control token in it."""
        import llama_cpp

        vocab = self._llm._model.vocab
        special = (
            llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
            | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
            | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        )
        markers = [
            self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")
            for token in self._tokenize(text, special=True)
            if llama_cpp.llama_vocab_get_attr(vocab, token) & special
        ]
        return split_markers(text, markers)

    def stream(self, messages: list[Message], params: SamplingParams) -> Iterator[Delta]:
        """Generate an answer token by token (see ChatBackend.stream)."""
        import llama_cpp

        prompt = self.prompt_tokens(messages)
        room = self.n_ctx - len(prompt)
        if room < 1:
            raise BackendError(
                f"{self.name}: the prompt has {len(prompt)} tokens, more than the context "
                f"window of {self.n_ctx}; raise chat.n_ctx or shorten the profile"
            )
        max_tokens = min(params.max_tokens, room)
        vocab = self._llm._model.vocab
        with self._lock:
            cached = self._cached_prefix(prompt)
            if params.seed is not None:
                self._llm.set_seed(params.seed)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            stops = StopStringFilter(params.stop)
            generated: list[int] = []
            finish_reason = "length"
            for token in self._llm.generate(
                prompt,
                temp=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                min_p=0.0,
                repeat_penalty=1.0,
            ):
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish_reason = "stop"
                    break
                piece = self._llm.detokenize([token])
                generated.append(token)
                info = self._token_logprobs(token, piece, params.logprobs)
                text = stops.feed(decoder.decode(piece))
                if stops.stopped:
                    finish_reason = "stop"
                    yield Delta(text=text, tokens=info)
                    break
                yield Delta(text=text, tokens=info)
                if len(generated) >= max_tokens:
                    break
            tail = ""
            if not stops.stopped:
                tail = stops.feed(decoder.decode(b"", final=True)) + stops.flush()
            usage = Usage(len(prompt), len(generated), cached)
            yield Delta(text=tail, finish_reason=finish_reason, usage=usage)

    def _cached_prefix(self, prompt: list[int]) -> int:
        """How many prompt tokens `generate` will take from the KV cache (as it computes it)."""
        common = common_prefix(self._llm._input_ids, prompt)
        # generate re-evaluates one token when the whole prompt is cached, to refresh logits.
        return common - 1 if common == len(prompt) and common > 0 else common

    def _token_logprobs(self, token: int, piece: bytes, k: int) -> tuple[TokenLogprobs, ...]:
        """Log-probability of the sampled token and the top k, from the raw logits.

        Read from the context's last logits row (temperature 1, before any sampler):
        llama-cpp-python only exposes log-probs with logits_all=True, which keeps a
        vocabulary-sized row for every prompt token, and gives no token ids.
        """
        text = piece.decode("utf-8", errors="replace")
        if k == 0:  # a softmax over the vocabulary costs about 5% of decode speed
            return (TokenLogprobs(text, None, token),)
        n_vocab = self._llm.n_vocab()
        logits = np.ctypeslib.as_array(self._llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        top_ids = np.argpartition(-logprobs, k)[:k]
        top_ids = top_ids[np.argsort(-logprobs[top_ids])]
        top = tuple(TopLogprob(self._piece(int(i)), float(logprobs[i]), int(i)) for i in top_ids)
        return (TokenLogprobs(text, float(logprobs[token]), token, top),)

    def _piece(self, token: int) -> str:
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def close(self) -> None:
        """Free the model."""
        self._llm.close()
