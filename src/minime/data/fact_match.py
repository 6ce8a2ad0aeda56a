"""Which profile fact a generated question asks about, checked by meaning.

A 1.5B generator asked for questions about one fact drifts to other facts of the profile it
is shown ("What award did he win in 2021?" written for his 2014 certificate) or to what the
profile does not say ("Is he married?" written for his business partner). On the second
persona, 30 of 60 sampled fact questions were tagged with a fact other than the one nearest
in meaning. Each would be answered with its tag's restatement, and the student learns the
wrong answer to the question. So every English question tagged with a fact is compared with
all the facts (the person's name removed from both, since the name alone makes every
question look like the fact that only states the name): kept where its own fact is the
nearest, moved to the nearest fact where that one is clearly nearest, dropped otherwise.
Other languages are left as tagged: the bundled encoder is English-only.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from minime.data.records import PromptRecord
from minime.generation import without_name
from minime.neardup import encode

#: Cosine similarity a question needs to its own fact, when that fact is the nearest.
KEEP_SIMILARITY = 0.25
#: ... and to another fact to be moved to it, with this lead over the runner-up.
MOVE_SIMILARITY = 0.40
MOVE_MARGIN = 0.05


class FactMatchReport(BaseModel):
    """What the check did to the fact questions."""

    checked: int = 0
    kept: int = 0
    moved: int = 0
    dropped: int = 0


def match_facts(
    records: list[PromptRecord], facts: list[str], name: str, embedder: str
) -> tuple[list[PromptRecord], FactMatchReport]:
    """`records` with each checked fact question kept, moved to its nearest fact, or dropped."""
    index = {fact: i for i, fact in enumerate(facts)}
    checked = [r for r in records if _checkable(r, index)]
    if not checked or len(facts) < 2:
        return records, FactMatchReport()
    texts = [without_name(t, name) for t in facts + [r.prompt for r in checked]]
    vectors = encode(texts, embedder)
    similarity = vectors[len(facts) :] @ vectors[: len(facts)].T
    decided: dict[str, PromptRecord | None] = {}
    report = FactMatchReport(checked=len(checked))
    for record, row in zip(checked, similarity, strict=True):
        best, runner_up = np.argsort(-row)[:2]
        if best == index[record.fact] and row[best] >= KEEP_SIMILARITY:
            decided[record.id] = record
            report.kept += 1
        elif row[best] >= MOVE_SIMILARITY and row[best] - row[runner_up] >= MOVE_MARGIN:
            decided[record.id] = record.model_copy(update={"fact": facts[best]})
            report.moved += 1
        else:
            decided[record.id] = None
            report.dropped += 1
    kept = [decided.get(r.id, r) for r in records]
    return [r for r in kept if r is not None], report


def _checkable(record: PromptRecord, index: dict[str, int]) -> bool:
    return record.category == "question" and record.fact in index and not record.language
