"""The student as a trainable Hugging Face folder, converted once from a GGUF when needed,
and its chat template's turn markers (distill trains through them, export checks them).

`minime distill` trains with transformers, which needs dense weights and a tokenizer with a
chat template. A Hugging Face folder is used as it is. A GGUF (a path, or a bundled name such
as "smollm2-135m-instruct") is dequantized to float32 once and cached under
`$MINIME_HOME/students/<stem>-<fingerprint>/`; the fingerprint changes with the file (its
pinned sha256 for bundled models, else its path, size and mtime) and with the chat template,
so a changed model or template gives a new folder instead of a stale one.

A conversion is written into a temporary folder beside its target and renamed into place only
once complete (`minime.json`, written last, is in every complete folder), so an interrupted
conversion is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from minime.errors import ConfigError
from minime.registry import BUNDLED, ResolvedModel, minime_home, resolve

#: Tokens that end an assistant turn in the chat formats minime's students use.
END_OF_TURN_MARKERS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")

#: Written last into a converted folder: its presence means the conversion finished.
METADATA = "minime.json"


def student_folder(spec: str, cache: Path | None = None) -> Path:
    """A Hugging Face folder holding the student of `spec`, ready to load and train.

    :param spec: a model spec (`minime.registry.resolve`): a Hugging Face folder, a GGUF file
        or a bundled GGUF name.
    :param cache: where converted GGUFs are kept; default `$MINIME_HOME/students`.
    :raises ConfigError: if the spec is not a local model, or its tokenizer has no chat
        template (and the registry gives none).
    :raises ModelNotFoundError: if the spec names nothing on this machine.
    """
    resolved = resolve(spec)
    if resolved.kind == "hf":
        from transformers import AutoTokenizer

        if not AutoTokenizer.from_pretrained(resolved.path).chat_template:
            raise ConfigError(
                f"{spec}: the student's tokenizer has no chat template; minime trains on chat "
                "turns, so add one (chat_template.jinja) to the folder"
            )
        return resolved.path
    if resolved.kind != "gguf":
        raise ConfigError(
            f"{spec}: the student must be a local model (GGUF file, bundled name or Hugging "
            "Face folder)"
        )
    fingerprint = _fingerprint(resolved)
    target = (cache or minime_home() / "students") / f"{resolved.path.stem}-{fingerprint[:12]}"
    if not (target / METADATA).is_file():
        _convert(resolved, fingerprint, target)
    return target


def _fingerprint(resolved: ResolvedModel) -> str:
    """A cheap identity of the GGUF and the chat template that go into the converted folder."""
    bundled = BUNDLED.get(resolved.spec)
    if bundled and bundled.sha256:
        source = bundled.sha256
    else:
        stat = resolved.path.stat()
        source = f"{resolved.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(f"{source}\n{resolved.chat_template or ''}".encode()).hexdigest()


def _convert(resolved: ResolvedModel, fingerprint: str, target: Path) -> None:
    """Dequantize the GGUF to float32 and save it with its tokenizer, atomically, at `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = resolved.path
    Console(stderr=True).print(
        f"converting {path.name} into a trainable model (once; cached in {target})"
    )
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # The registry's template wins: bundled base models have none of their own.
    tokenizer.chat_template = resolved.chat_template or tokenizer.chat_template
    if not tokenizer.chat_template:
        raise ConfigError(
            f"{resolved.spec}: the GGUF has no chat template (tokenizer.chat_template) and "
            "minime knows none for it; use an instruct model, or a Hugging Face folder with a "
            "chat_template.jinja"
        )
    # dequantize=True unpacks every weight into a plain nn.Linear and drops the GGUF
    # quantizer once loaded, so the model trains and saves like any other; without it,
    # transformers keeps packed GGUF layers whenever the `kernels` package is installed.
    model = AutoModelForCausalLM.from_pretrained(
        path.parent,
        gguf_file=path.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        metadata = {
            "source": str(path),
            "fingerprint": fingerprint,
            "end_of_turn_ids": end_of_turn_ids(tokenizer),
            "chat_template": tokenizer.chat_template,
        }
        (tmp / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished the same conversion first: keep its folder.
            if not (target / METADATA).is_file():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def end_of_turn_ids(tokenizer) -> list[int]:
    """The ids that end an assistant turn: EOS and the chat formats' end-of-turn tokens."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for marker in END_OF_TURN_MARKERS:
        token_id = tokenizer.convert_tokens_to_ids(marker)
        # An unknown token maps to the unk id, unless the marker is itself the unk token
        # (SmolLM2's unk is <|endoftext|>).
        if token_id is not None and (
            token_id != tokenizer.unk_token_id or marker == tokenizer.unk_token
        ):
            ids.add(token_id)
    return sorted(ids)


def end_of_turn_text(tokenizer) -> str:
    """The text the chat template writes after an assistant answer (end-of-turn marker)."""
    marker = "\x00ANSWER\x00"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return text.split(marker, 1)[1]


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` through the chat template, ready for the assistant's answer."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def load_student(folder: Path, dtype: torch.dtype = torch.float32):
    """The student's model and tokenizer from `folder`, with a pad token that ends no turn.

    The pad token is kept if the tokenizer has one that is not an end-of-turn id. Otherwise
    (none, or pad == EOS as in SmolLM2, where masking padding by id would also mask the EOS
    the student must learn) it becomes the lowest-id added token that is neither an
    end-of-turn id nor used by the chat template (BOS, turn markers); such a token never
    occurs in training text, and padding is masked by the attention mask and labels anyway.

    :raises ConfigError: if the tokenizer has no token that can pad.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    end_ids = end_of_turn_ids(tokenizer)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in end_ids:
        tokenizer.pad_token_id = _unused_token_id(tokenizer, end_ids, folder)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _unused_token_id(tokenizer, end_ids: list[int], folder: Path) -> int:
    sample = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    text = tokenizer.apply_chat_template(sample, tokenize=False)
    used = set(end_ids) | set(tokenizer(text)["input_ids"])
    for token_id in sorted(tokenizer.added_tokens_decoder):
        if token_id not in used:
            return token_id
    raise ConfigError(f"{folder}: the tokenizer has no pad token, nor a spare token to pad with")
