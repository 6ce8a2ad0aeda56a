"""Step 7 of `minime data`: more phrasings of the answered fact questions, with their answers.

A small student answers a fact only in the phrasings it was trained on (train fact recall
near 90%, held-out phrasings near 50%): facts reach a model's weights in a form that
answers new questions only after many varied exposures (Allen-Zhu & Li 2023). Asking the
teacher more questions costs an answer and its checks each, and the checks drop many; a
rephrasing of a question already answered keeps that checked answer. So for each fact
with fewer than `rephrase_to` answered English questions, the generators rephrase its
questions, and each rephrasing that passes the deterministic checks becomes a row with its
source's answer. Questions in other languages get `TRANSLATED_REPHRASINGS` each.

A rephrasing row carries `rephrase_of` (its source's id), so `split` puts it where its
source goes; it has no teacher distribution (the teacher answered another wording), so the
student learns it by cross-entropy.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import partial
from pathlib import Path

from pydantic import BaseModel

from minime.backends import ChatBackend
from minime.config import DataConfig
from minime.data.cover import KeptQuestions
from minime.data.records import PromptRecord, record_id
from minime.generation import ask_list, generator_system, usable_fact_question
from minime.jsonl import load_jsonl, write_jsonl
from minime.language import (
    LANGUAGE_NAMES,
    candidate_languages,
    is_english,
    names_in,
    proper_names,
    reads_as,
)
from minime.project import Project
from minime.tasks import run_tasks, task_key, work_file, worker_count

#: Rephrasings asked for each answered fact question in another language than English.
TRANSLATED_REPHRASINGS = 3
#: Most rephrasings asked of one question in one call.
MAX_PER_QUESTION = 12
#: Asked beyond the shortfall, for those the checks and the near-duplicate rule drop.
MARGIN = 1.5


class RephraseReport(BaseModel):
    """What rephrase added."""

    sources: int
    asked: int
    rejected: int
    near_duplicates: int
    added: int
    rows: int
    english_questions_per_fact: dict[str, int]


def rephrase(
    project: Project,
    covered: Path,
    dst: Path,
    generators: list[ChatBackend],
    embedder: str,
    config: DataConfig,
) -> RephraseReport:
    """Write `dst`: the rows of `covered` plus rephrasings of their fact questions.

    The generation tasks are kept in `<stem>.tasks.jsonl`, so an interrupted run resumes.
    """
    rows = load_jsonl(covered)
    plan = _plan(rows, _asking(rows), config.rephrase_to)
    system = generator_system(project)
    tasks = []
    for i, (row, count) in enumerate(plan):
        backend = generators[i % len(generators)]
        question = row["messages"][0]["content"]
        job = partial(_rephrase, backend, system, question, row.get("language"), count)
        key = task_key("rephrase", question, row.get("language"), count, backend.name, system)
        tasks.append((key, job))
    workers = worker_count(config.concurrency, generators)
    results = run_tasks(work_file(dst, "tasks"), tasks, "rephrase", workers)
    languages, names = candidate_languages(config.languages), names_in(project.profile)
    asked = rejected = 0
    candidates: list[tuple[dict, PromptRecord]] = []
    for (row, _), (key, _) in zip(plan, tasks, strict=True):
        written = results[key]["prompts"]
        asked += len(written)
        checked = [q for q in written if _keeps_question(q, row, project, languages, names)]
        rejected += len(written) - len(checked)
        candidates += [(row, _record(row, q)) for q in checked]
    # Near duplicates of each other are dropped; a rephrasing close to its source is kept,
    # since a new wording of the same question is what it is for.
    kept = KeptQuestions([], project.name, embedder) if candidates else None
    distinct = kept.add_distinct([r for _, r in candidates], config.dedup_threshold) if kept else []
    added = [
        _row(row, record.prompt)
        for (row, record), new in zip(candidates, distinct, strict=True)
        if new
    ]
    near = len(candidates) - len(added)
    write_jsonl(dst, rows + added)
    return RephraseReport(
        sources=len(plan),
        asked=asked,
        rejected=rejected,
        near_duplicates=near,
        added=len(added),
        rows=len(rows) + len(added),
        english_questions_per_fact=dict(sorted(_asking(rows + added).items())),
    )


def _asking(rows: list[dict]) -> Counter:
    """English single-turn questions per fact, rephrasings included."""
    return Counter(
        row["fact"]
        for row in rows
        if row.get("fact") and len(row["messages"]) == 2 and is_english(row.get("language"))
    )


def _is_source(row: dict) -> bool:
    """Whether a row is a single-turn fact question of the data stage, not a rephrasing."""
    return bool(row.get("fact")) and len(row["messages"]) == 2 and not row.get("rephrase_of")


def _plan(rows: list[dict], counts: Counter, target: int) -> list[tuple[dict, int]]:
    """(row, rephrasings to ask) for each fact question worth rephrasing: the English ones of
    a fact short of `target` share its shortfall (and a margin), each other one gets
    `TRANSLATED_REPHRASINGS`."""
    if target <= 0:
        return []
    plan = []
    for row in sorted((r for r in rows if _is_source(r)), key=lambda r: r["id"]):
        if not is_english(row.get("language")):
            plan.append((row, TRANSLATED_REPHRASINGS))
            continue
        have = counts[row["fact"]]
        if have < target:
            count = math.ceil(MARGIN * (target - have) / have)
            plan.append((row, min(MAX_PER_QUESTION, count)))
    return plan


def _rephrase(
    backend: ChatBackend, system: str, question: str, language: str | None, count: int
) -> dict:
    language_name = LANGUAGE_NAMES.get(language or "en", "English")
    instruction = (
        f"Rewrite this visitor question in {count} different ways, in {language_name}, each "
        "asking exactly the same thing so that the same answer answers it: change the words "
        "and the sentence structure; some short and casual, some longer or indirect. Keep "
        f"every name as it is, and keep the person in the third person.\nQuestion: {question}"
    )
    seed = int(task_key(question, count)[:8], 16)
    return {"prompts": ask_list(backend, system, instruction, count, seed=seed)}


def _keeps_question(
    candidate: str, row: dict, project: Project, languages: set[str], names: frozenset[str]
) -> bool:
    """Whether a rephrasing is a usable question about the person, in its source's language,
    naming nothing that neither the source question nor the profile names."""
    language = row.get("language")
    source = row["messages"][0]["content"]
    return (
        usable_fact_question(candidate, project.name, language)
        and candidate.strip().lower() != source.strip().lower()
        and reads_as(candidate, language, languages, names)
        and all(
            name in source or name in project.profile
            for name in proper_names(candidate, person=project.name)
        )
    )


def _record(source: dict, question: str) -> PromptRecord:
    """A rephrasing of `source`'s question as a prompt, for the near-duplicate rule."""
    return PromptRecord.create(
        question,
        source["source"],
        category=source["category"],
        fact=source["fact"],
        language=source.get("language"),
    )


def _row(source: dict, question: str) -> dict:
    """A training row: `question`, answered by `source`'s checked answer."""
    return {
        **source,
        "id": record_id("rephrase", f"{source['id']}\0{question}"),
        "messages": [{"role": "user", "content": question}, source["messages"][1]],
        "teacher_logprobs": None,
        "rephrase_of": source["id"],
    }
