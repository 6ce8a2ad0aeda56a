"""Step 6 of `minime data`: make sure every profile fact is asked about often enough.

Dedup merges near-identical questions and the answer checks drop some answers, so a fact
asked 12 ways in `augment` can end with 5 answered questions. A small student only learns
a fact it sees in many phrasings, so this step counts the answered questions per fact and,
for each fact short of `min_questions_per_fact`, asks the generators for new questions,
drops those within the dedup distance of any question already kept about the same fact
(dedup's rule: the person's name taken out, `duplicate_group`), has the teacher answer
the rest with the same checks as `respond`, and repeats for a few rounds.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import partial
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from minime.backends import ChatBackend
from minime.config import DataConfig
from minime.data.augment import fact_result
from minime.data.records import PromptRecord, duplicate_group, records_from_results
from minime.data.respond import respond
from minime.generation import (
    Fact,
    ask_list,
    fact_question_system,
    profile_facts,
    usable_fact_question,
    without_name,
)
from minime.jsonl import load_jsonl, write_jsonl
from minime.neardup import encode, is_near
from minime.project import Project
from minime.tasks import run_tasks, task_key, work_file, worker_count

#: Rounds of asking; facts still short after them are listed in the report.
COVER_ROUNDS = 2
#: Extra questions asked beyond the shortfall, for those dedup and the checks will drop.
MARGIN = 4
#: One asker per round: small generators write more, and more varied, questions when given
#: a point of view than when given a list of questions to avoid.
ASKERS = (
    "a recruiter who wants specifics",
    "a curious reader writing short, casual messages",
    "a conference organiser or a fellow engineer",
)


class CoverReport(BaseModel):
    """What cover added."""

    facts: int
    short_before: int
    asked: int
    near_duplicates: int
    answered: int
    rows: int
    short_after: dict[str, int]


def cover(
    project: Project,
    responses: Path,
    dst: Path,
    generators: list[ChatBackend],
    teacher: ChatBackend,
    embedder: str,
    config: DataConfig,
    judge: ChatBackend | None = None,
) -> CoverReport:
    """Write `dst`: the rows of `responses` plus answered questions for under-covered facts.

    Each round keeps its prompts in `<stem>.round<N>.prompts.jsonl` and its answers (with
    `respond`'s work files) in `<stem>.round<N>.jsonl`, so an interrupted run resumes.
    """
    rows = load_jsonl(responses)
    facts = profile_facts(project.profile)
    target = config.min_questions_per_fact
    system = fact_question_system(project)
    kept = KeptQuestions(rows, project.name, embedder)
    short_before = len(_short(facts, rows, target))
    asked = near = answered = 0
    workers = worker_count(config.concurrency, generators)
    for round_ in range(1, COVER_ROUNDS + 1):
        short = _short(facts, rows, target)
        if not short:
            break
        tasks = []
        for i, (fact, count) in enumerate(short):
            backend = generators[(i + round_) % len(generators)]
            missing = target - count + MARGIN
            asker = ASKERS[(round_ - 1) % len(ASKERS)]
            seed = 9000 + 100 * round_ + i
            job = partial(_ask, backend, system, project.name, fact, missing, asker, seed)
            key = task_key("cover", round_, fact.text, missing, asker, backend.name, system)
            tasks.append((key, job))
        results = run_tasks(
            work_file(dst, f"round{round_}.questions"), tasks, f"cover: {len(short)} facts", workers
        )
        candidates = records_from_results(list(results.values()))
        asked += len(candidates)
        distinct = kept.add_distinct(candidates, config.dedup_threshold)
        fresh = [r for r, new in zip(candidates, distinct, strict=True) if new]
        near += len(candidates) - len(fresh)
        if not fresh:
            continue
        prompts = work_file(dst, f"round{round_}.prompts")
        write_jsonl(prompts, (r.model_dump() for r in fresh))
        answers = work_file(dst, f"round{round_}")
        respond(project, prompts, answers, teacher, config, judge=judge, embedder=embedder)
        new_rows = load_jsonl(answers)
        answered += len(new_rows)
        rows += new_rows
    write_jsonl(dst, rows)
    return CoverReport(
        facts=len(facts),
        short_before=short_before,
        asked=asked,
        near_duplicates=near,
        answered=answered,
        rows=len(rows),
        short_after={fact.text: n for fact, n in _short(facts, rows, target)},
    )


def _ask(
    backend: ChatBackend, system: str, name: str, fact: Fact, count: int, asker: str, seed: int
) -> dict:
    instruction = (
        f"You are {asker}. Write {count} different questions you could type into {name}'s "
        f'website chat whose answer is this statement from the profile:\n"{fact.text}"\n'
        f"Call {name} by name or she/he/they, never 'you'. Vary the wording and the length."
    )
    lines = ask_list(backend, system, instruction, count, seed=seed, temperature=0.9)
    return fact_result(backend, fact, [q for q in lines if usable_fact_question(q, name, None)])


def _short(facts, rows: list[dict], target: int):
    """(fact, answered questions) for each fact with fewer than `target`."""
    counts = Counter(row.get("fact") for row in rows)
    return [(f, counts[f.text]) for f in facts if counts[f.text] < target]


class KeptQuestions:
    """The questions kept so far, embedded by dedup's rule, by `duplicate_group`."""

    def __init__(self, rows: list[dict], person: str, embedder: str):
        self.person, self.embedder = person, embedder
        self.by_group: dict[str, list[np.ndarray]] = defaultdict(list)
        texts = [row["messages"][0]["content"] for row in rows]
        # Any fact's: a visitor's text has one answer, and the fact check after may retag a
        # question to the fact an earlier copy has (the same row twice, even across splits).
        self.texts = {_same_text(text) for text in texts}
        for row, vector in zip(rows, self._encode(texts), strict=True):
            self.by_group[duplicate_group(row["category"], row.get("fact"))].append(vector)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), np.float32)
        return encode([without_name(t, self.person) for t in texts], self.embedder)

    def add_distinct(self, candidates: list[PromptRecord], threshold: float) -> list[bool]:
        """For each candidate, whether it is neither a kept question's text (of any group)
        nor a near duplicate (`neardup.is_near`) of a kept question of its group or of an
        earlier candidate; those that are count as kept from now on."""
        distinct = []
        vectors = self._encode([r.prompt for r in candidates])
        for record, vector in zip(candidates, vectors, strict=True):
            group = self.by_group[duplicate_group(record.category, record.fact)]
            similarity = float((np.stack(group) @ vector).max()) if group else -1.0
            text = _same_text(record.prompt)
            distinct.append(text not in self.texts and not is_near(similarity, threshold))
            if distinct[-1]:
                group.append(vector)
                self.texts.add(text)
        return distinct


def _same_text(prompt: str) -> str:
    """A prompt as two copies of it read alike: case and surrounding space aside."""
    return " ".join(prompt.split()).casefold()
