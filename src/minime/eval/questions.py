"""The evaluation's questions: the persona's own file, and questions written from the profile.

The persona's file (`questions.jsonl`, one JSON object a line) holds questions with what a
right answer must and must not contain. Questions written by a generator model from the
profile add ones nobody tuned the model on: any that lies within the dedup distance of a
prompt under `out/data/` is dropped, so the test is not in the training set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from minime.errors import InputError
from minime.generation import without_name
from minime.jsonl import read_jsonl
from minime.neardup import encode, is_near
from minime.tasks import task_key

Category = Literal[
    "fact",
    "chained",
    "private",
    "out_of_scope",
    "injection",
    "multilingual",
    "unanswerable",
    "greeting",  # hello, thanks: answered, never declined
    "followup",  # a question after earlier turns (`history`): answered from them
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]


class Turn(BaseModel):
    """One earlier message of a conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class Question(BaseModel):
    """One evaluation question and what a right answer must and must not contain.

    Patterns are regular expressions, matched case-insensitively anywhere in the answer.
    """

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    category: Category
    must_contain: list[str] = Field(default_factory=list)
    must_not_contain: list[str] = Field(default_factory=list)
    language: str | None = Field(None, pattern=r"^[a-z]{2}$")
    history: list[Turn] = Field(
        default_factory=list,
        description="Earlier turns of the conversation, user first, alternating.",
    )

    @model_validator(mode="after")
    def _turns_alternate(self) -> Question:
        for i, turn in enumerate(self.history):
            if turn.role != ("user" if i % 2 == 0 else "assistant"):
                raise ValueError(f"history[{i}].role: expected alternating user and assistant")
        if len(self.history) % 2:
            raise ValueError("history: must end with the assistant's turn")
        return self

    @property
    def id(self) -> str:
        """A stable id from the category, the text and the earlier turns."""
        return task_key(self.category, self.question, *(t.content for t in self.history))

    def messages(self) -> list[dict]:
        """The conversation a contender is sent: the earlier turns, then the question."""
        return [*(t.model_dump() for t in self.history), {"role": "user", "content": self.question}]


class EvalQuestion(Question):
    """A question as the evaluation uses it: with where it came from."""

    source: Literal["persona", "generated"]
    origin: str


class Rejected(BaseModel):
    """A generated question left out, and why."""

    question: str
    category: str
    reason: str


class QuestionSet(BaseModel):
    """The questions of one evaluation, and the generated ones that were left out."""

    questions: list[EvalQuestion]
    rejected: list[Rejected]
    #: Persona questions within the dedup distance of a training prompt (their scores may
    #: overstate what the model does with new phrasings).
    persona_near_training: list[str]
    training_prompts: int

    def digest(self) -> str:
        """A short hash of the questions asked, for caching answers."""
        return task_key(*(q.id for q in self.questions))


def load_questions(path: Path) -> list[EvalQuestion]:
    """Read and validate a persona's question file.

    :raises InputError: naming file, line and field, if a line is not a valid question or a
        pattern is not a valid regular expression.
    """
    questions = []
    for number, record in read_jsonl(path):
        try:
            question = Question.model_validate(record)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(map(str, error["loc"])) or "(line)"
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = f"unknown field (expected one of {', '.join(Question.model_fields)})"
            raise InputError(f'{path}:{number}: field "{field}": {message}') from exc
        for field in ("must_contain", "must_not_contain"):
            for i, pattern in enumerate(getattr(question, field)):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise InputError(
                        f'{path}:{number}: field "{field}[{i}]": invalid regular expression '
                        f"{pattern!r}: {exc}"
                    ) from exc
        questions.append(
            EvalQuestion(**question.model_dump(), source="persona", origin=f"{path.name}:{number}")
        )
    return questions


def training_prompts(data_dir: Path) -> list[str]:
    """Every prompt in the JSONL files of `data_dir`: `prompt`, `prompts` and user turns."""
    seen: dict[str, None] = {}
    for path in sorted(data_dir.glob("*.jsonl")) if data_dir.is_dir() else []:
        for _, record in read_jsonl(path):
            for text in _prompts_of(record):
                seen.setdefault(text.strip(), None)
    seen.pop("", None)
    return list(seen)


def _prompts_of(record: dict) -> Iterator[str]:
    if isinstance(record.get("prompt"), str):
        yield record["prompt"]
    for text in record.get("prompts") or ():
        if isinstance(text, str):
            yield text
    for message in record.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            yield str(message.get("content", ""))


class NoveltyFilter:
    """Admits questions that are new: not near duplicates (`minime.neardup`, at `threshold`)
    of any training prompt or question admitted before, compared as dedup compares the
    training prompts: with the person's name taken out (`generation.without_name`)."""

    def __init__(
        self, training: list[str], embedder: str, threshold: float, person: str, encode=None
    ):
        self.training = training
        self.embedder = embedder
        self.person = person
        self.threshold = threshold
        self._encode = encode
        self._trained: np.ndarray | None = None
        self._kept: list[np.ndarray] = []
        self._kept_texts: list[str] = []

    def _vectors(self, texts: list[str]) -> np.ndarray:
        if self._encode is None:
            self._encode = encode
        if self._trained is None:  # one encoder call for the training prompts and the first batch
            vectors = self._embed(texts + self.training)
            self._trained = vectors[len(texts) :]
            return vectors[: len(texts)]
        return self._embed(texts) if texts else np.zeros((0, 0))

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self._encode([without_name(text, self.person) for text in texts], self.embedder)

    def add_persona(self, questions: list[EvalQuestion]) -> list[str]:
        """Keep every persona question; return those within the distance of a training
        prompt (reported: their scores may overstate how the model does on new phrasings)."""
        near = []
        for question, vector in zip(
            questions, self._vectors([q.question for q in questions]), strict=True
        ):
            if self._closest_training(vector) is not None:
                near.append(question.question)
            self._keep(question.question, vector)
        return near

    def admit(
        self,
        questions: list[EvalQuestion],
        groups: list[object] | None = None,
        *,
        against_kept: bool = True,
    ) -> tuple[list[EvalQuestion], list[Rejected]]:
        """The new questions, in order; at most one per group (e.g. per profile fact).

        :param against_kept: also compare with the questions kept before (off for chained
            questions, which contain the kept questions they join).
        """
        groups = groups or [object() for _ in questions]
        taken = set()
        kept, rejected = [], []
        vectors = self._vectors([q.question for q in questions]) if questions else []
        for question, vector, group in zip(questions, vectors, groups, strict=True):
            if group in taken:
                reason = "another question about the same fact was kept"
            elif (prompt := self._closest_training(vector)) is not None:
                reason = f"near the training prompt {prompt!r}"
            elif against_kept and (twin := self._closest_kept(vector)) is not None:
                reason = f"near the evaluation question {twin!r}"
            else:
                kept.append(question)
                taken.add(group)
                self._keep(question.question, vector)
                continue
            rejected.append(
                Rejected(question=question.question, category=question.category, reason=reason)
            )
        return kept, rejected

    def _closest_training(self, vector: np.ndarray) -> str | None:
        if self._trained is None or not len(self._trained):
            return None
        similarity = self._trained @ vector
        best = int(similarity.argmax())
        return self.training[best] if is_near(similarity[best], self.threshold) else None

    def _closest_kept(self, vector: np.ndarray) -> str | None:
        if not self._kept:
            return None
        similarity = np.stack(self._kept) @ vector
        best = int(similarity.argmax())
        return self._kept_texts[best] if is_near(similarity[best], self.threshold) else None

    def _keep(self, text: str, vector: np.ndarray) -> None:
        self._kept.append(vector)
        self._kept_texts.append(text)
