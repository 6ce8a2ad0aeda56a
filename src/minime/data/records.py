"""The prompt record every data step reads and writes (one JSON object per JSONL line)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from minime.errors import InputError
from minime.jsonl import read_jsonl

Category = Literal[
    "question",  # an ordinary question about the person
    "chained",  # several questions in one message
    "vague",  # too unspecific to answer without asking back
    "multilingual",  # a question in another language
    "out_of_scope",  # not about the person
    "private",  # what the profile does not or will not tell
    "injection",  # adversarial: tries to override the assistant's rules
    "unanswerable",  # about the person, but the profile does not say
    "greeting",  # hello, what can you do
    "thanks",  # thanks, goodbye
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]

Source = Literal["real", "augment", "profile", "edge", "bank"]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]


class PromptRecord(BaseModel):
    """One visitor prompt, real or synthetic, with where it came from."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Stable id: a hash of source and prompt text.")
    prompt: str = Field(min_length=1)
    category: Category = "question"
    source: Source = "real"
    origin: str = Field("", description="file:line of a real prompt, or the ids it came from.")
    generator: str | None = Field(None, description="Model spec that wrote it, if synthetic.")
    language: str | None = Field(None, description="ISO 639-1 code when not English.")
    fact: str | None = Field(None, description="The profile fact it asks about, if known.")

    @classmethod
    def create(cls, prompt: str, source: Source, **fields) -> PromptRecord:
        """A record whose id is derived from its source and text."""
        return cls(id=record_id(source, prompt), prompt=prompt, source=source, **fields)


def duplicate_group(category: str, fact: str | None) -> str:
    """What two prompts must share to count as near duplicates, however alike they read.

    Their category: "What is her e-mail address?" (answered) and "What is her home
    address?" (declined) are the near-miss pairs that teach a student where the line is.
    And the profile fact they ask about: "When did he open the bakery?" and "When did he
    open the workshop?" have different answers.
    """
    return f"{category}\0{fact or ''}"


def record_id(source: str, prompt: str) -> str:
    """A short stable id: the same prompt from the same source always gets the same id."""
    return hashlib.sha1(f"{source}\0{prompt}".encode()).hexdigest()[:16]


def read_records(src: Path) -> tuple[list[dict[str, Any]], list[PromptRecord]]:
    """The raw dicts of a PromptRecord JSONL file and their validated records.

    :raises InputError: if the file is missing, or a line is not a valid record (naming
        file, line and field).
    """
    if not src.is_file():
        raise InputError(f"{src}: no such prompts file")
    raw, records = [], []
    for number, record in read_jsonl(src):
        try:
            records.append(PromptRecord.model_validate(record))
        except ValidationError as exc:
            problems = "; ".join(
                f'field "{".".join(map(str, error["loc"])) or "(record)"}": {error["msg"]}'
                for error in exc.errors()
            )
            raise InputError(f"{src}:{number}: {problems}") from exc
        raw.append(record)
    return raw, records


def records_from_results(results: list[dict[str, Any]]) -> list[PromptRecord]:
    """The distinct records of generation results: each result's "prompts" with its fields."""
    records: dict[str, PromptRecord] = {}
    for result in results:
        fields = {k: v for k, v in result.items() if k not in ("id", "prompts", "source")}
        for prompt in result["prompts"]:
            record = PromptRecord.create(prompt, result["source"], **fields)
            records.setdefault(record.id, record)
    return list(records.values())
